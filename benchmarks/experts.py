"""Expert training: images per second of K experts trained one after another (train_expert, one per job as
the workflow does) or together in one process (experts.batched.train_experts_batched, vmap over K).

The training set is random tensors of a dataset's shape (channels, size, classes), resident on the device;
every timed call trains K fresh experts (seeds 0..K-1) for `epochs` epochs. images/s = K·epochs·images / s.

    PYTHONPATH=src python benchmarks/experts.py --shape digits --experts 1 4 8 --compare mode=batched
"""
from __future__ import annotations

import functools
import sys
from dataclasses import asdict, dataclass

import torch
import yaml

import harness
from distillery.data import get_spec
from distillery.experts import get_recipe, train_expert, train_experts_batched
from distillery.runtime import channels_last, set_tf32
from distillery.seeds import generator

MODES = ("serial", "batched")


@dataclass(frozen=True)
class Case:
    mode: str = "serial"           # serial: K train_expert calls | batched: one train_experts_batched call
    experts: int = 1               # K
    shape: str = "digits"          # a dataset name: its (channels, size, classes)
    images: int = 512              # training images
    model: str = "ConvNet"
    recipe: str = "sgd"
    epochs: int = 1
    batch: int = 256
    tf32: bool = False             # TF32 for convolutions and matmuls (CUDA only; runtime.tf32 all vs none)
    channels_last: bool = False    # runtime.channels_last on the training images (CUDA only)


class Problem:
    def __init__(self, case: Case, device: str):
        if case.mode not in MODES:
            raise SystemExit(f"mode={case.mode!r}: choose one of {', '.join(MODES)}")
        self.case, self.device = case, device
        spec = get_spec(case.shape)
        images = torch.randn(case.images, spec.channels, spec.size, spec.size, generator=generator(0, "bench"))
        self.images = channels_last(images.to(device)) if case.channels_last else images.to(device)
        self.labels = (torch.arange(case.images) % spec.num_classes).to(device)
        self.num_classes = spec.num_classes
        self.recipe = get_recipe(case.recipe, epochs=case.epochs, batch=case.batch)

    def train(self) -> None:
        """Train K fresh experts."""
        set_tf32(self.device, "all" if self.case.tf32 else "none")
        c, seeds = self.case, list(range(self.case.experts))
        if c.mode == "batched":
            train_experts_batched(self.images, self.labels, c.model, self.num_classes, self.recipe, seeds)
        else:
            for seed in seeds:
                train_expert(self.images, self.labels, c.model, self.num_classes, self.recipe, seed)


def estimate(case: Case):
    """The memory model's estimate of the case's experts: K at once when batched, one at a time in turn."""
    from distillery.budget.memory import expert_group_estimate

    recipe = get_recipe(case.recipe, epochs=case.epochs, batch=case.batch)
    together = case.experts if case.mode == "batched" else 1
    return expert_group_estimate(recipe, case.model, get_spec(case.shape), False, together)


def measure(args, pairs: list[tuple[Case, Case | None]], device: str) -> list[dict]:
    rows = []
    for a, b in pairs:
        problems = {"a": Problem(a, device)} | ({"b": Problem(b, device)} if b else {})
        times = harness.interleaved({k: p.train for k, p in problems.items()}, device, args.repeat, args.warmup)
        row: dict = {"case": asdict(a)}
        for key, p in problems.items():
            c = p.case
            row[key] = {"seconds": times[key], "images_per_second": c.experts * c.epochs * c.images / times[key]}
            if device == "cuda":
                row[key].update(harness.cuda_peaks(p.train), memory_model=harness.memory_model(lambda: estimate(c)))
        rows.append(row)
        print(f"{device} {a}: {row['a']['images_per_second']:.0f} images/s"
              + (f"; b {row['b']['images_per_second']:.0f} images/s" if b else ""), file=sys.stderr)
    return rows


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--mode", nargs="+", default=["serial"], choices=MODES)
    p.add_argument("--experts", nargs="+", type=int, default=[1, 4, 8])
    p.add_argument("--shape", nargs="+", default=["digits"])
    p.add_argument("--images", nargs="+", type=int, default=[512])
    p.add_argument("--model", nargs="+", default=["ConvNet"])
    p.add_argument("--recipe", nargs="+", default=["sgd"])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", nargs="+", type=int, default=[256])
    p.add_argument("--tf32", nargs="+", type=yaml.safe_load, default=[False], help="false and/or true (CUDA only)")
    args = p.parse_args()
    cases = harness.grid(Case, {"mode": args.mode, "experts": args.experts, "shape": args.shape,
                                "images": args.images, "model": args.model, "recipe": args.recipe,
                                "epochs": [args.epochs], "batch": args.batch, "tf32": args.tf32})
    harness.run("experts", args, cases, functools.partial(measure, args))


if __name__ == "__main__":
    main()
