"""Peak memory and seconds of one trajectory-matching iteration vs the unroll length N, per memory mode.

One iteration = unroll N student steps (DSA on, batch_syn < IPC·classes) + matching loss + backward to the images
and lr. Memory is measured deterministically as the peak of the bytes held by autograd's saved tensors (one
count per storage, tracked with torch.autograd.graph.saved_tensors_hooks; covers every graph, the θ_i that
`recompute` stores through save_for_backward, and the graphs rebuilt inside the replaying backward), and on CUDA
also as torch.cuda.max_memory_allocated above the baseline. Seconds: the fastest of
--repeat iterations per variant, run round robin in this one process (the CPU may be shared), reported as ratios
to `full` at the same N.

    python benchmarks/memory.py --device cpu --steps 2 5 10 20 40 --repeat 3

`--check-model` checks the memory model (distillery.budget) at the papers' widths instead: per setting, the
estimated saved-for-backward bytes against those of one real engine iteration (budget.calibrate.engine_iteration)
and, on CUDA, the estimated rise of allocated memory over the iteration (saved tensors, working set, expert rows,
the images' gradient) against torch.cuda.max_memory_allocated; on CUDA it also runs paper cells at their
planned settings (CHECK_CELLS). Results: results/memory-model_<device>.json. On the CPU the expert rows are
views of the whole trajectory, whose storage the saved count includes (a GPU copies the rows): `full` measures up
to ~2% above the estimate for that reason.

    python benchmarks/memory.py --check-model --device cpu
    python benchmarks/memory.py --check-model --device cuda      # the GPU check, where a GPU is available
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from math import inf
from pathlib import Path

import torch

from distillery.budget import calibrate
from distillery.budget.memory import FLOAT, GB, trajectory_estimate, unroll_saved
from distillery.budget.saved import cuda_peak, peak_saved
from distillery.data import get_spec
from distillery.distill.config import DistillConfig
from distillery.plan import load_config, resolve_method
from distillery.functional import FlatModel
from distillery.models import ConvNet
from distillery.seeds import generator, seeded

RESULTS = Path(__file__).resolve().parent / "results"
DSA = "color_crop_cutout_flip_scale_rotate"


def problem(device: str, ipc: int, size: int, width: int):
    """A CIFAR-like shape at `size` px: 10 classes x IPC random 3-channel images, a depth-3 ConvNet, its start
    and a target one small random step away."""
    with seeded(0, "bench-net"):
        student = FlatModel(ConvNet(3, 10, size, width=width, depth=3).to(device))
    images = torch.randn(10 * ipc, 3, size, size, generator=generator(0, "bench-images")).to(device)
    labels = torch.arange(10).repeat_interleave(ipc).to(device)
    start = student.flatten()
    target = start + 0.01 * torch.randn(start.shape, generator=generator(0, "bench-target")).to(device)
    return student, images, labels, start, target


def iteration(prob, steps: int, batch: int, memory: str, chunk: int | None) -> None:
    """One matching iteration: unroll, loss, backward into images and lr."""
    student, images, labels, start, target = prob
    calibrate.unroll_iteration(student, images, labels, start, target, steps, batch, memory, chunk, DSA)


def seconds(prob, steps, batch, memory, chunk, device: str) -> float:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    tic = time.perf_counter()
    iteration(prob, steps, batch, memory, chunk)
    sync()
    return time.perf_counter() - tic


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else the platform's machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        ax.plot([r["steps"] for r in mine], [r["saved_mib"] for r in mine], marker="o", label=variant,
                linestyle="--" if mine[0]["chunk"] else "-")
    ax.set_xlabel("unrolled steps N")
    ax.set_ylabel("peak saved-for-backward MiB")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# (model, dataset, ipc, N, memory, batch_syn, chunk): the papers' widths, 28-128 px, full and recompute, chunked
CHECK_SETTINGS = [
    ("ConvNet", "mnist", 1, 10, "full", None, None),
    ("ConvNet", "cifar10", 10, 10, "full", 20, None),
    ("ConvNet", "cifar10", 1, 80, "recompute", 5, None),
    ("ConvNet", "cifar100", 1, 10, "recompute", 20, 5),
    ("ConvNet", "cifar10", 50, 10, "recompute", 25, None),
    ("ConvNetD4", "tiny-imagenet", 1, 10, "full", 10, None),
    ("ConvNetD4", "tiny-imagenet", 1, 10, "recompute", 10, 5),
    ("ConvNetD5", "imagenette", 1, 10, "full", 5, None),
    ("ConvNetD5", "imagenette", 1, 10, "recompute", 4, 2),
]
# (paper config, method, dataset, ipc): whole cells at the settings they plan on an 80 GB GPU (CUDA only)
CHECK_CELLS = [("ftd", "ftd", "cifar100", 50), ("att", "att", "cifar10", 50), ("mtt", "mtt", "cifar100", 10),
               ("ftd", "ftd", "tiny-imagenet", 10), ("mtt", "mtt", "imagenette", 10)]


def iteration_rise(cfg: DistillConfig, spec) -> float:
    """The model's bytes allocated during one iteration above what a job holds between iterations: the saved
    tensors and working set, the expert rows moved in, the images' gradient."""
    parts = trajectory_estimate(cfg, spec).parts
    vector = calibrate.num_params(cfg.model, spec.channels, spec.size, spec.num_classes) * FLOAT
    images = cfg.ipc * spec.num_classes * spec.channels * spec.size * spec.size * FLOAT
    return parts["saved for backward"] + parts["working set"] + parts["parameters and expert rows"] - vector + images


def check_one(cfg: DistillConfig, dataset: str, device: str, saved: bool = True) -> dict:
    spec = get_spec(dataset)
    step = calibrate.engine_iteration(cfg, spec, device)
    row = {"model": cfg.model, "dataset": dataset, "ipc": cfg.ipc, "syn_steps": cfg.syn_steps, "memory": cfg.memory,
           "batch_syn": cfg.batch_syn, "chunk": cfg.chunk}
    if saved:
        row["estimate_saved_mib"] = unroll_saved(cfg, spec) / 2**20
        row["measured_saved_mib"] = peak_saved(step) / 2**20
        row["saved_ratio"] = row["estimate_saved_mib"] / row["measured_saved_mib"]
    if device == "cuda":
        step()  # allocator warm-up
        row["estimate_rise_mib"] = iteration_rise(cfg, spec) / 2**20
        row["measured_cuda_mib"] = cuda_peak(step) / 2**20
        row["cuda_ratio"] = row["estimate_rise_mib"] / row["measured_cuda_mib"]
        row["job_estimate_gb"] = trajectory_estimate(cfg, spec).peak / GB
    print(json.dumps(row), flush=True)
    return row


def check_model(device: str) -> dict:
    """The memory model against measurements (the module notes); returns the JSON record."""
    rows = [check_one(DistillConfig("check", "trajectory", ipc, model=model, syn_steps=steps, memory=mode,
                                    batch_syn=batch, chunk=chunk, max_start_epoch=1), dataset, device)
            for model, dataset, ipc, steps, mode, batch, chunk in CHECK_SETTINGS]
    cells = []
    if device == "cuda":
        root = Path(__file__).resolve().parents[1]
        for paper, method, dataset, ipc in CHECK_CELLS:
            settings = resolve_method(load_config(root, root / f"config/paper/{paper}.yaml"), method, dataset, ipc)
            cfg = DistillConfig.from_dict({**settings, "max_start_epoch": 1})
            cells.append({"paper": paper, **check_one(cfg, dataset, device, saved=False)})
    per_image_step = {f"{name} {size} px": calibrate.unroll(name, 3, size, classes, "full")[0].x[0] / 1e6
                      for name, size, classes in (("ConvNet", 32, 10), ("ConvNetD4", 64, 200), ("ConvNetD5", 128, 10))}
    return {"command": "python benchmarks/memory.py " + " ".join(sys.argv[1:]), "torch": torch.__version__,
            "device": device, "device_name": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
            "threads": torch.get_num_threads(), "saved_mb_per_image_step_full": per_image_step, "rows": rows,
            "cells": cells}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--steps", type=int, nargs="+", default=[2, 5, 10, 20, 40])
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--batch-syn", type=int, default=50)
    parser.add_argument("--size", type=int, default=16, help="image side in pixels")
    parser.add_argument("--width", type=int, default=16, help="ConvNet width")
    parser.add_argument("--chunk", type=int, default=10, help="chunk of the chunked variants")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared CPU)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default results/memory_<device>.json)")
    parser.add_argument("--check-model", action="store_true", help="check the memory model instead (see above)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    torch.set_num_threads(args.threads)
    if args.check_model:
        out = args.out or RESULTS / f"memory-model_{args.device}.json"
        out.write_text(json.dumps(check_model(args.device), indent=1) + "\n")
        print(f"wrote {out}")
        return
    prob = problem(args.device, args.ipc, args.size, args.width)
    variants = [("full", "full", None), ("recompute", "recompute", None), ("constant", "constant", None),
                (f"full chunk {args.chunk}", "full", args.chunk),
                (f"recompute chunk {args.chunk}", "recompute", args.chunk),
                (f"constant chunk {args.chunk}", "constant", args.chunk)]
    rows = []
    iteration(prob, 2, args.batch_syn, "full", None)  # warm-up
    for steps in args.steps:
        mine = []
        for name, memory, chunk in variants:
            row = {"variant": name, "memory": memory, "chunk": chunk, "steps": steps,
                   "saved_mib": peak_saved(lambda: iteration(prob, steps, args.batch_syn, memory, chunk)) / 2**20,
                   "seconds": inf}
            if args.device == "cuda":
                row["cuda_peak_mib"] = cuda_peak(lambda: iteration(prob, steps, args.batch_syn, memory, chunk)) / 2**20
            mine.append(row)
        for _ in range(args.repeat):  # round robin, so a busy moment slows every variant alike
            for row in mine:
                row["seconds"] = min(row["seconds"], seconds(prob, steps, args.batch_syn, row["memory"],
                                                             row["chunk"], args.device))
        rows += mine
        full = next(r for r in rows if r["steps"] == steps and r["variant"] == "full")
        for r in rows:
            if r["steps"] == steps:
                r["memory_vs_full"] = r["saved_mib"] / full["saved_mib"]
                r["seconds_vs_full"] = r["seconds"] / full["seconds"]
                if args.device == "cuda":
                    r["cuda_memory_vs_full"] = r["cuda_peak_mib"] / full["cuda_peak_mib"]
                print(f"N={steps:3d} {r['variant']:>20}: saved {r['saved_mib']:8.2f} MiB "
                      f"(x{r['memory_vs_full']:.3f}), {r['seconds']:.3f} s (x{r['seconds_vs_full']:.2f})", flush=True)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else cpu_name()
    problem_text = (f"ConvNet depth 3 width {args.width}, {10 * args.ipc} images 3x{args.size}x{args.size}, "
                    f"batch_syn {args.batch_syn}, DSA {DSA}")
    report = {"command": "python benchmarks/memory.py " + " ".join(sys.argv[1:]), "torch": torch.__version__,
              "device": args.device, "device_name": device_name, "threads": torch.get_num_threads(),
              "problem": problem_text, "repeat": args.repeat, "rows": rows}
    out = args.out or RESULTS / f"memory_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    short = (f"ConvNet D3 W{args.width}, {10 * args.ipc} images 3x{args.size}x{args.size}, batch_syn "
             f"{args.batch_syn}, DSA on")
    plot(rows, out.with_suffix(".png"), f"{short}\n{args.device} ({device_name}), torch {torch.__version__}")
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
