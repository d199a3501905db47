"""Evaluation: epochs per second of the one protocol (distillery.evaluate.train_network) on a synthetic set.

The set is num_classes·IPC random tensors of a dataset's shape (channels, size, classes), resident on the
device; every timed call trains a fresh network for `epochs` epochs (so the half-way lr decay is included).

    PYTHONPATH=src python benchmarks/evaluate.py --shape digits cifar10 --ipc 1 10 --compare dsa=none
"""
from __future__ import annotations

import functools
import sys
from dataclasses import asdict, dataclass

import torch

import harness
from distillery.augment import DEFAULT_STRATEGY
from distillery.data import get_spec
from distillery.evaluate import EvalConfig, train_network
from distillery.runtime import channels_last, set_tf32
from distillery.seeds import generator


@dataclass(frozen=True)
class Case:
    shape: str = "cifar10"         # a dataset name: its (channels, size, classes)
    ipc: int = 10
    arch: str = "ConvNet"
    epochs: int = 10
    batch: int = 256
    dsa: str = DEFAULT_STRATEGY    # 'none': no augmentation
    sam_rho: float = 0.0
    soft_labels: bool = False      # L1 regression on random logits instead of CE on hard labels
    tf32: bool = False             # TF32 for convolutions and matmuls (CUDA only; runtime.tf32 all vs none)
    channels_last: bool = False    # runtime.channels_last on the set (CUDA only)


class Problem:
    def __init__(self, case: Case, device: str):
        self.case, self.device = case, device
        spec = get_spec(case.shape)
        n = spec.num_classes * case.ipc
        images = torch.randn(n, spec.channels, spec.size, spec.size, generator=generator(0, "bench"))
        self.images = channels_last(images.to(device)) if case.channels_last else images.to(device)
        hard = torch.arange(spec.num_classes).repeat_interleave(case.ipc)
        soft = torch.randn(n, spec.num_classes, generator=generator(0, "bench-logits"))
        self.labels = (soft if case.soft_labels else hard).to(device)
        self.num_classes = spec.num_classes
        self.cfg = EvalConfig(epochs=case.epochs, batch=case.batch, dsa=case.dsa, sam_rho=case.sam_rho,
                              soft_labels=case.soft_labels)

    def train(self) -> None:
        """Train one fresh network on the set with the protocol."""
        set_tf32(self.device, "all" if self.case.tf32 else "none")
        train_network(self.images, self.labels, 0.01, self.case.arch, self.num_classes, 0, self.cfg)


def estimate(case: Case, images: int, cfg: EvalConfig):
    """The memory model's estimate of an evaluation of `images` synthetic images."""
    from distillery.budget.memory import evaluate_estimate

    return evaluate_estimate(case.arch, images, get_spec(case.shape), cfg, False)


def measure(args, pairs: list[tuple[Case, Case | None]], device: str) -> list[dict]:
    rows = []
    for a, b in pairs:
        problems = {"a": Problem(a, device)} | ({"b": Problem(b, device)} if b else {})
        times = harness.interleaved({k: p.train for k, p in problems.items()}, device, args.repeat, args.warmup)
        row: dict = {"case": asdict(a)}
        for key, p in problems.items():
            row[key] = {"seconds": times[key], "epochs_per_second": (p.case.epochs + 1) / times[key],  # 0 … epochs
                        "images": len(p.images)}
            if device == "cuda":
                row[key].update(harness.cuda_peaks(p.train), memory_model=harness.memory_model(
                    lambda: estimate(p.case, len(p.images), p.cfg)))
        rows.append(row)
        print(f"{device} {a}: {row['a']['epochs_per_second']:.2f} epochs/s"
              + (f"; b {row['b']['epochs_per_second']:.2f} epochs/s" if b else ""), file=sys.stderr)
    return rows


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--shape", nargs="+", default=["digits", "cifar10"])
    p.add_argument("--ipc", nargs="+", type=int, default=[1, 10])
    p.add_argument("--arch", nargs="+", default=["ConvNet"])
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args()
    cases = harness.grid(Case, {"shape": args.shape, "ipc": args.ipc, "arch": args.arch, "epochs": [args.epochs]})
    harness.run("evaluate", args, cases, functools.partial(measure, args))


if __name__ == "__main__":
    main()
