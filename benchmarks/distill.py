"""Trajectory-matching distillation: seconds per iteration, peak memory, and the iteration's cost over its floor.

One iteration is what distill_trajectory does per iteration, through the real engine (matching.trajectory_loss,
backward, both SGD steps, the per-iteration loss/lr read-back): a method preset from config/methods.yaml with
its hyperparameters for the dataset `shape` (whose channels, size and classes the random tensors take), the
IPC, N (syn_steps) and batch_syn overridden. Experts are a synthetic random-walk trajectory held on the CPU
(as a loaded expert is), so expert file loading is not timed; init is 'real' (init costs nothing per iteration).

The floor is N+1 plain forward/backward passes (gradients w.r.t. the parameters, no graph kept) of the same
batch, with the same augmentation, on the same student: the least an unroll of N steps plus its backward can cost.
`iteration_over_floor` = seconds_per_iteration / floor_seconds.

    PYTHONPATH=src python benchmarks/distill.py --shape digits cifar10 --ipc 1 10 --syn-steps 10 20 \
        --compare method=ast
"""
from __future__ import annotations

import functools
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import harness
from distillery.augment import dsa
from distillery.data import get_spec
from distillery.distill.config import DistillConfig
from distillery.distill.matching import Batches, trajectory_loss
from distillery.functional import FlatModel
from distillery.models import build_model
from distillery.plan import load_config, resolve_method
from distillery.runtime import channels_last, set_tf32
from distillery.seeds import generator, seeded

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    method: str = "mtt"            # a trajectory preset of config/methods.yaml
    shape: str = "cifar10"         # a dataset name: its (channels, size, classes) and its hparams table row
    ipc: int = 10
    syn_steps: int = 20            # N
    batch_syn: int | None = None   # None: all synthetic images per inner step
    model: str = "ConvNet"
    memory: str = "full"           # the unroll's memory mode: full | recompute | constant
    tf32: bool = False             # TF32 for convolutions and matmuls (CUDA only; runtime.tf32 all vs none)
    channels_last: bool = False    # runtime.channels_last on the synthetic images (CUDA only)


def distill_config(case: Case) -> DistillConfig:
    """The preset's settings for (shape, ipc), with the case's N, batch_syn, model and memory mode, and real init."""
    settings = resolve_method(load_config(ROOT), case.method, case.shape, case.ipc)
    if settings["kind"] != "trajectory":
        raise SystemExit(f"method '{case.method}' is of kind {settings['kind']}; this benchmark times trajectory "
                         f"matching (APM: benchmarks/apm_chunks.py)")
    settings.update(syn_steps=case.syn_steps, batch_syn=case.batch_syn, model=case.model, memory=case.memory,
                    init="real")
    return DistillConfig.from_dict(settings)


class Problem:
    """One distillation state on `device`: synthetic images, learnable lr, optimizers, student, an expert."""

    def __init__(self, case: Case, device: str):
        self.case, self.device = case, device
        self.cfg = cfg = distill_config(case)
        spec = get_spec(case.shape)
        c, s, n = spec.channels, spec.size, spec.num_classes
        with seeded(0, "bench-student"):
            self.student = FlatModel(build_model(cfg.model, c, n, s).to(device))
        images = torch.randn(n * case.ipc, c, s, s, generator=generator(0, "bench-images"))
        self.images = channels_last(images.to(device)) if case.channels_last else images.to(device)
        self.images.requires_grad_(True)
        self.labels = torch.arange(n).repeat_interleave(case.ipc).to(device)
        self.lr = torch.tensor(cfg.lr_teacher, device=device, requires_grad=True)
        self.opt_img = torch.optim.SGD([self.images], lr=cfg.lr_img, momentum=cfg.momentum)
        self.opt_lr = torch.optim.SGD([self.lr], lr=cfg.lr_lr, momentum=cfg.momentum)
        self.ema = self.images.detach().clone() if cfg.ema_decay is not None else None
        epochs = cfg.max_start_epoch + cfg.expert_epochs
        walk = torch.randn(epochs, self.student.num_params, generator=generator(0, "bench-walk")) * 1e-3
        start = self.student.flatten().cpu()
        self.trajectory = torch.cat([start[None], start + walk.cumsum(0)])  # [epochs+1, P] on the CPU
        self.starts, self.aug = generator(0, "start-epoch"), generator(0, "dsa")
        self.noise, self.floor_aug = generator(0, "perturb"), generator(0, "floor-dsa")
        self.batches = Batches(len(self.images), cfg.batch_syn, generator(0, "batches"), torch.device(device))
        self.batch = cfg.batch_syn or len(self.images)

    def persistent(self) -> list[torch.Tensor]:
        """The tensors that outlive an iteration (not counted as its memory)."""
        return [self.trajectory, self.images, self.lr, *self.student.module.parameters()]

    def step(self) -> None:
        """One distillation iteration, as distill_trajectory's loop body."""
        set_tf32(self.device, "all" if self.case.tf32 else "none")
        cfg = self.cfg
        t = int(torch.randint(cfg.max_start_epoch, (1,), generator=self.starts))
        loss, _ = trajectory_loss(cfg, self.student, self.trajectory, t, self.images, self.labels, self.lr,
                                  self.batches, self.aug, self.noise)
        self.opt_img.zero_grad(set_to_none=True)
        self.opt_lr.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_img.step()
        self.opt_lr.step()
        if self.ema is not None:
            self.ema.mul_(cfg.ema_decay).add_(self.images.detach(), alpha=1 - cfg.ema_decay)
        torch.stack([loss.detach(), self.lr.detach()]).tolist()  # the engine's one read-back per iteration

    def floor(self) -> None:
        """N+1 plain forward/backward passes of one batch (same size, augmentation and student)."""
        set_tf32(self.device, "all" if self.case.tf32 else "none")
        theta = self.trajectory[0].to(self.device).requires_grad_(True)
        x, y = self.images.detach()[:self.batch], self.labels[:self.batch]
        for _ in range(self.cfg.syn_steps + 1):
            loss = F.cross_entropy(self.student(theta, dsa(x, self.floor_aug, self.cfg.dsa)), y)
            torch.autograd.grad(loss, theta)


def estimate(cfg: DistillConfig, shape: str):
    """The memory model's estimate of a distillation job of `cfg` on `shape`."""
    from distillery.budget.memory import distill_estimate

    return distill_estimate(cfg, get_spec(shape))


def build_step(case: Case, device: str):
    """A fresh problem's iteration (for the CPU peak-RSS child process)."""
    return Problem(case, device).step


def measure(args, pairs: list[tuple[Case, Case | None]], device: str) -> list[dict]:
    rows = []
    for a, b in pairs:
        problems = {"a": Problem(a, device)} | ({"b": Problem(b, device)} if b else {})
        fns = {}
        for key, p in problems.items():
            fns[f"{key} step"], fns[f"{key} floor"] = p.step, p.floor
        times = harness.interleaved(fns, device, args.repeat, args.warmup)
        row: dict = {"case": asdict(a)}
        for key, p in problems.items():
            case = a if key == "a" else b
            metrics = {"seconds_per_iteration": times[f"{key} step"], "floor_seconds": times[f"{key} floor"],
                       "iteration_over_floor": times[f"{key} step"] / times[f"{key} floor"],
                       "saved_mib": harness.saved_mib(p.step, p.persistent()), "num_params": p.student.num_params,
                       "batch": p.batch, "syn_steps": p.cfg.syn_steps}
            if device == "cuda":
                metrics.update(harness.cuda_peaks(p.step),
                               memory_model=harness.memory_model(lambda: estimate(p.cfg, case.shape)))
            elif not args.no_rss:
                metrics["peak_mib"] = harness.cpu_peak_mib(build_step, case, args.threads)
            metrics["images_finite"] = bool(torch.isfinite(p.images.detach()).all())
            row[key] = metrics
        rows.append(row)
        print(f"{device} {a}: {row['a']['seconds_per_iteration']:.3f} s/it, "
              f"x{row['a']['iteration_over_floor']:.2f} floor"
              + (f"; b {row['b']['seconds_per_iteration']:.3f} s/it" if b else ""), file=sys.stderr)
    return rows


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--method", nargs="+", default=["mtt"])
    p.add_argument("--shape", nargs="+", default=["digits", "cifar10"])
    p.add_argument("--ipc", nargs="+", type=int, default=[1, 10])
    p.add_argument("--syn-steps", nargs="+", type=int, default=[10, 20])
    p.add_argument("--batch-syn", nargs="+", type=lambda v: None if v == "all" else int(v), default=[None],
                   help="images per inner step ('all': every synthetic image)")
    p.add_argument("--model", nargs="+", default=["ConvNet"])
    p.add_argument("--memory", nargs="+", default=["full"], choices=["full", "recompute", "constant"])
    args = p.parse_args()
    cases = harness.grid(Case, {"method": args.method, "shape": args.shape, "ipc": args.ipc,
                                "syn_steps": args.syn_steps, "batch_syn": args.batch_syn, "model": args.model,
                                "memory": args.memory})
    harness.run("distill", args, cases, functools.partial(measure, args))


if __name__ == "__main__":
    main()
