"""Peak memory and seconds of one trajectory-matching iteration vs the unroll length N, per memory mode.

One iteration = unroll N student steps (DSA on, batch_syn < IPC·classes) + matching loss + backward to the images
and lr. Memory is measured deterministically as the peak of the bytes held by autograd's saved tensors (one
count per storage, tracked with torch.autograd.graph.saved_tensors_hooks; covers every graph, the θ_i that
`recompute` stores through save_for_backward, and the graphs rebuilt inside the replaying backward), and on CUDA
also as torch.cuda.max_memory_allocated above the baseline. Seconds: the fastest of
--repeat iterations per variant, run round robin in this one process (the CPU may be shared), reported as ratios
to `full` at the same N.

    python benchmarks/memory.py --device cpu --steps 2 5 10 20 40 --repeat 3
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import weakref
from math import inf
from pathlib import Path

import torch

from distillery.distill.matching import Batches, matching_loss, unroll_path
from distillery.functional import FlatModel
from distillery.models import ConvNet
from distillery.seeds import generator, seeded

RESULTS = Path(__file__).resolve().parent / "results"
DSA = "color_crop_cutout_flip_scale_rotate"


class SavedBytes:
    """Live bytes of the storages autograd has saved for backward, and their peak."""

    def __init__(self):
        self.live: dict[int, list[int]] = {}  # storage pointer -> [saved references, bytes]
        self.current = self.peak = 0

    def pack(self, tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self.live:
            self.live[key][0] += 1
        else:
            self.live[key] = [1, storage.nbytes()]
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        held = _Held(tensor)
        weakref.finalize(held, self._release, key)
        return held

    @staticmethod
    def unpack(held: "_Held") -> torch.Tensor:
        return held.tensor

    def _release(self, key: int) -> None:
        entry = self.live[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self.live[key]


class _Held:
    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


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
    images = images.detach().requires_grad_(True)
    lr = torch.tensor(0.01, device=images.device, requires_grad=True)
    batches = Batches(len(images), batch, generator(0, "bench-batches"), images.device)
    path = unroll_path(student, start.clone().requires_grad_(True), images, labels, lr, steps, batches,
                       generator(0, "bench-dsa"), DSA, (), 1.0, memory, chunk)
    matching_loss(path[-1], start, target).backward()


def peak_saved(prob, steps, batch, memory, chunk) -> int:
    tracker = SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(tracker.pack, tracker.unpack):
        iteration(prob, steps, batch, memory, chunk)
    return tracker.peak


def peak_cuda(prob, steps, batch, memory, chunk) -> int:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    iteration(prob, steps, batch, memory, chunk)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


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
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    torch.set_num_threads(args.threads)
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
                   "saved_mib": peak_saved(prob, steps, args.batch_syn, memory, chunk) / 2**20, "seconds": inf}
            if args.device == "cuda":
                row["cuda_peak_mib"] = peak_cuda(prob, steps, args.batch_syn, memory, chunk) / 2**20
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
