"""APM's time/memory tradeoff (Figure 3): seconds and peak memory of one image-gradient round per chunk size.

A CIFAR-like problem (10 classes x IPC random 3x32x32 images, ConvNet, a random teacher and K = 5 random
students) is built in a fresh 'spawn' process per chunk size, so each peak is measured on its own: GPU peak
allocation above the problem's baseline, or on CPU the rise of the peak RSS (resource.getrusage).

    python benchmarks/apm_chunks.py --device cpu --ipc 10 --sizes 10 50 100 all --repeat 3
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time

import torch

from distillery.distill.apm import image_gradient
from distillery.functional import frozen
from distillery.distill.config import DistillConfig
from distillery.models import build_model
from distillery.seeds import generator, seeded


def measure(device: str, ipc: int, chunk: int | None, repeat: int) -> tuple[float, float]:
    """(median seconds per round, peak memory rise in MiB) for one chunk size; run in a child process."""
    nets = []
    for k in range(6):  # the teacher, then K = 5 students
        with seeded(k, "bench-net"):
            nets.append(frozen(build_model("ConvNet", 3, 10, 32).to(device)))
    images = torch.randn(10 * ipc, 3, 32, 32, generator=generator(0, "bench-images")).to(device)
    labels = torch.arange(10).repeat_interleave(ipc).to(device)
    cfg = DistillConfig(method="bench", kind="adversarial", ipc=ipc, update_syn=chunk)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    seconds = []
    for _ in range(repeat):
        sync()
        tic = time.perf_counter()
        image_gradient(images, labels, nets[0], nets[1:], cfg)
        sync()
        seconds.append(time.perf_counter() - tic)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return statistics.median(seconds), peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--sizes", nargs="+", default=["10", "50", "100", "all"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [None if s == "all" else int(s) for s in args.sizes]
    if None not in sizes:
        sizes.append(None)  # the unchunked reference of the ratios
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        rows = {s: pool.apply(measure, (args.device, args.ipc, s, args.repeat)) for s in sizes}
    ref_time, ref_mem = rows[None]
    print(f"APM image gradient, {args.device}, {10 * args.ipc} images, ConvNet, K=5, median of {args.repeat}")
    print(f"{'chunk':>6} {'s/round':>9} {'x time':>7} {'peak MiB':>9} {'x memory':>9}")
    for s, (sec, mem) in rows.items():
        print(f"{s or 'all':>6} {sec:9.3f} {sec / ref_time:7.2f} {mem:9.1f} {mem / ref_mem:9.2f}")


if __name__ == "__main__":
    main()
