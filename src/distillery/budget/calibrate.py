"""Per-architecture coefficients of the memory and time models, counted on the `meta` device at full size.

Each probe runs the library's own code (the unroll of distill/matching.py with its memory modes, a training
step, APM's frozen-network image graph) on tensors that have shapes but no values, and counts the peak bytes
saved for backward and the FLOPs of matmuls and convolutions (budget/saved.py). Every count is linear in its
sizes, so a few small probes give exact coefficients; for a matching iteration of N steps of B of n images in
chunks of k,

    count(N, B, k, n) = N·B·x₁ + N·x₂ + B·x₃ + k·x₄ + n·x₅ + x₆

solved from six probes (N, B, k, n) ∈ PROBES. `full` comes out with x₃ = x₄ = x₅ = 0 (every step's graph is
kept), `recompute` with x₁ = 0 (one step's graph at a time, N stored parameter vectors, and the images, which
its autograd node saves). Probes run without
augmentation; DSA's own saved tensors (per image, the largest group of the strategy: each step draws one) are
counted apart. Checks (tests/test_budget.py, benchmarks/memory.py --check-model): the model against real CPU
runs, and meta counts against CPU counts at widths 4, 8 and 12 extrapolated in width (exact: activations grow
linearly with the width, parameter vectors quadratically).

A probe takes 0.1–2 s on the meta device, so the counts the default and paper configs need are committed in
calibration.json (`python -m distillery.plan calibrate` rewrites it; a test checks it against fresh probes);
anything else is probed once per process.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from distillery.augment import dsa, parse_strategy
from distillery.budget.saved import measure, peak_saved
from distillery.data.registry import DatasetSpec
from distillery.distill.config import DistillConfig
from distillery.distill.matching import Batches, matching_loss, trajectory_loss, unroll_path
from distillery.experts.recipes import Recipe
from distillery.experts.smooth import gradient_penalty
from distillery.functional import FlatModel
from distillery.models import build_model
from distillery.seeds import generator, seeded

PROBES = ((1, 1, 1, 1), (1, 2, 1, 2), (1, 2, 2, 2), (2, 1, 1, 1), (2, 2, 2, 2), (1, 1, 1, 2))  # (N, B, k, n)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
TABLE_PATH = Path(__file__).with_name("calibration.json")


@dataclass(frozen=True)
class Linear:
    """x·(N·B, N, B, k, n, 1): a count of a matching iteration of N steps of B of n images in chunks of k."""

    x: tuple[float, ...]

    def __call__(self, steps: int, batch: int, chunk: int, images: int) -> float:
        return sum(c * v for c, v in zip(self.x, (steps * batch, steps, batch, chunk, images, 1)))


@dataclass(frozen=True)
class PerImage:
    """slope·B + intercept: a count of one pass over B images."""

    slope: float
    intercept: float

    def __call__(self, batch: int) -> float:
        return self.slope * batch + self.intercept


def _per_image(one: float, two: float) -> PerImage:
    return PerImage(two - one, 2 * one - two)


def student(model: str, channels: int, size: int, classes: int, device: str = "meta",
            dtype: torch.dtype = torch.float32) -> FlatModel:
    """A `model` as a FlatModel on `device` (on meta: parameters without values, nothing initialised)."""
    with torch.device(device):
        module = build_model(model, channels, classes, size)
    return FlatModel(module.to(dtype))


def unroll_iteration(student: FlatModel, images: Tensor, labels: Tensor, start: Tensor, target: Tensor,
                     steps: int, batch: int, memory: str, chunk: int | None, strategy: str) -> None:
    """One matching iteration as distill_trajectory runs it: unroll N steps from `start`, the matching loss
    against `target`, backward into the images and the lr (the probe of the memory model and benchmarks)."""
    images = images.detach().requires_grad_(True)
    lr = torch.tensor(0.01, device=images.device, dtype=images.dtype, requires_grad=True)
    batches = Batches(len(images), batch, generator(0, "bench-batches"), images.device)
    path = unroll_path(student, start.clone().requires_grad_(True), images, labels, lr, steps, batches,
                       generator(0, "bench-dsa"), strategy, (), 1.0, memory, chunk)
    matching_loss(path[-1], start, target).backward()


def engine_iteration(cfg: DistillConfig, spec: DatasetSpec, device: str = "cpu") -> Callable[[], None]:
    """One iteration of distill_trajectory's loop (trajectory_loss and its backward) for `cfg` on `device`, on
    random images and a random-walk expert held on the CPU as a loaded one is: what the model's estimates are
    checked against (tests/test_budget.py on the CPU, benchmarks/memory.py --check-model on CPU and CUDA)."""
    with seeded(0, "check-student"):
        net = FlatModel(build_model(cfg.model, spec.channels, spec.num_classes, spec.size).to(device))
    n = cfg.ipc * spec.num_classes
    images = torch.randn(n, spec.channels, spec.size, spec.size, generator=generator(0, "check-images"))
    images = images.to(device).requires_grad_(True)
    labels = torch.arange(spec.num_classes, device=device).repeat_interleave(cfg.ipc)
    walk = torch.randn(cfg.max_start_epoch + cfg.expert_epochs, net.num_params, generator=generator(0, "check-walk"))
    start = net.flatten().cpu()
    trajectory = torch.cat([start[None], start + 1e-3 * walk.cumsum(0)])
    lr = torch.tensor(cfg.lr_teacher, device=device, requires_grad=True)
    batches = Batches(n, cfg.batch_syn, generator(0, "check-batches"), torch.device(device))

    def iteration() -> None:
        loss, _ = trajectory_loss(cfg, net, trajectory, 0, images, labels, lr, batches, generator(0, "check-dsa"),
                                  generator(0, "check-noise"))
        loss.backward()

    return iteration


# ---- probes (meta device) ----

def probe_unroll(model: str, channels: int, size: int, classes: int, memory: str, dtype: str) -> dict:
    net = student(model, channels, size, classes, dtype=DTYPES[dtype])
    start = torch.zeros(net.num_params, device="meta", dtype=DTYPES[dtype])
    values = []
    for steps, batch, chunk, n in PROBES:
        images = torch.zeros(n, channels, size, size, device="meta", dtype=DTYPES[dtype])
        labels = torch.zeros(n, dtype=torch.long, device="meta")
        values.append(measure(lambda: unroll_iteration(net, images, labels, start, start, steps, batch, memory,
                                                       chunk, "none")))
    rows = torch.tensor([[s * b, s, b, k, n, 1] for s, b, k, n in PROBES], dtype=torch.float64)
    solved = torch.linalg.solve(rows, torch.tensor(values, dtype=torch.float64))
    return {"saved": [round(v, 3) for v in solved[:, 0].tolist()],
            "flops": [round(v, 3) for v in solved[:, 1].tolist()]}


def probe_dsa(channels: int, size: int, strategy: str, dtype: str) -> float:
    def saved(group: str, batch: int) -> int:
        x = torch.zeros(batch, channels, size, size, device="meta", dtype=DTYPES[dtype], requires_grad=True)
        return peak_saved(lambda: dsa(x, generator(0, "probe"), group))

    return max((saved(g, 2) - saved(g, 1) for g in parse_strategy(strategy)), default=0)


def probe_training(model: str, channels: int, size: int, classes: int, penalty: str | None, dtype: str) -> dict:
    with torch.device("meta"):
        module = build_model(model, channels, classes, size).to(DTYPES[dtype])

    def image(batch: int, grad: bool) -> torch.Tensor:  # not a leaf when it needs grad, for FlopCounterMode
        x = torch.zeros(batch, channels, size, size, device="meta", dtype=DTYPES[dtype], requires_grad=grad)
        return x.clone() if grad else x

    def step(batch: int) -> None:  # as experts/smooth.py expert_loss: CE, and the penalty on the training pass
        x = image(batch, penalty == "augmented")  # ("augmented") or on a second pass of the clean batch ("clean")
        logits = module(x)
        loss = F.cross_entropy(logits, torch.zeros(batch, dtype=torch.long, device="meta"))
        if penalty == "augmented":
            loss = loss + gradient_penalty(logits, x)
        elif penalty == "clean":
            clean = image(batch, True)
            loss = loss + gradient_penalty(module(clean), clean)
        loss.backward()

    def forward(batch: int) -> None:
        with torch.no_grad():
            module(torch.zeros(batch, channels, size, size, device="meta", dtype=DTYPES[dtype]))

    one, two = measure(lambda: step(1)), measure(lambda: step(2))
    fwd = [measure(lambda b=b: forward(b))[1] for b in (1, 2)]
    return {"saved": [two[0] - one[0], 2 * one[0] - two[0]], "flops": [two[1] - one[1], 2 * one[1] - two[1]],
            "forward": [fwd[1] - fwd[0], 2 * fwd[0] - fwd[1]]}


def probe_image_graph(model: str, channels: int, size: int, classes: int, dtype: str) -> dict:
    with torch.device("meta"):
        nets = [build_model(model, channels, classes, size).to(DTYPES[dtype]).eval().requires_grad_(False)
                for _ in range(3)]  # a teacher and two students

    def chunk(batch: int, images: int, students: int, leaf: bool = True) -> None:
        """distill/apm.py loss_and_gradient on the first chunk of `images`: a view of them, as there."""
        x = torch.zeros(images, channels, size, size, device="meta", dtype=DTYPES[dtype])[:batch]
        x = x.detach().requires_grad_(True)
        inputs = x if leaf else x.clone()  # FlopCounterMode's module hooks refuse autograd.grad into a leaf
        teacher = nets[0](inputs)
        terms = chain([F.cross_entropy(teacher, torch.zeros(batch, dtype=torch.long, device="meta"))],
                      (-(net(inputs) - teacher).abs().mean() for net in nets[1:students + 1]))
        for i, term in enumerate(terms):
            torch.autograd.grad(term, x, retain_graph=i < students)

    one, two, wide = (peak_saved(lambda b=b, n=n: chunk(b, n, 2)) for b, n in ((1, 2), (2, 2), (1, 4)))
    flops = [measure(lambda b=b: chunk(b, b, 0, leaf=False))[1] for b in (1, 2)]
    per_image = (wide - one) / 2
    return {"saved": [two - one, per_image, one - (two - one) - 2 * per_image],
            "flops": [flops[1] - flops[0], 2 * flops[0] - flops[1]]}


def probe_params(model: str, channels: int, size: int, classes: int) -> list[int]:
    net = student(model, channels, size, classes)
    return [net.num_params, int(getattr(net.module, "num_features", 0))]


# ---- the committed table, then fresh probes ----

_table: dict | None = None
_fresh: dict[str, object] = {}


def _entries() -> dict:
    global _table
    if _table is None:
        _table = json.loads(TABLE_PATH.read_text())["entries"] if TABLE_PATH.is_file() else {}
    return _table


def lookup(key: str, probe: Callable[[], object], table: bool = True) -> object:
    """The committed count for `key`, else a fresh probe (kept for this process)."""
    if table and key in _entries():
        return _entries()[key]
    if key not in _fresh:
        _fresh[key] = probe()
    return _fresh[key]


def unroll(model: str, channels: int, size: int, classes: int, memory: str,
           dtype: str = "float32") -> tuple[Linear, Linear]:
    """(saved bytes, FLOPs) of one matching iteration under `memory`, as Linear in (N, B, k, n), without DSA."""
    key = f"unroll|{model}|{channels}|{size}|{classes}|{memory}|{dtype}"
    entry = lookup(key, lambda: probe_unroll(model, channels, size, classes, memory, dtype))
    return Linear(tuple(entry["saved"])), Linear(tuple(entry["flops"]))


def dsa_bytes(channels: int, size: int, strategy: str, dtype: str = "float32") -> float:
    """Bytes per image that augmenting a batch saves for backward, for the strategy's largest group."""
    return lookup(f"dsa|{channels}|{size}|{strategy}|{dtype}", lambda: probe_dsa(channels, size, strategy, dtype))


def penalty_pass(recipe: Recipe) -> str | None:
    """The recipe's gradient-penalty pass (its gp_input), None without a penalty: what a training probe counts."""
    return recipe.gp_input if recipe.gp_weight > 0 else None


def training(model: str, channels: int, size: int, classes: int, penalty: str | None = None,
             dtype: str = "float32") -> tuple[PerImage, PerImage, PerImage]:
    """(saved bytes, FLOPs, forward-only FLOPs) of one training step on B images: cross-entropy backward into
    the parameters, as experts, evaluation, NAS and APM's students train; `penalty` (a recipe's gp_input,
    None without one) adds AST's gradient penalty, a backward through the input gradient on the training pass
    ("augmented") or on a second pass ("clean", recipes smooth and smooth_gp as AST's code)."""
    key = f"training|{model}|{channels}|{size}|{classes}|{penalty or 'none'}|{dtype}"
    entry = lookup(key, lambda: probe_training(model, channels, size, classes, penalty, dtype))
    return PerImage(*entry["saved"]), PerImage(*entry["flops"]), PerImage(*entry["forward"])


@dataclass(frozen=True)
class Chunked:
    """per_chunk·k + per_image·n + intercept: a count of a pass over a chunk of k of n images."""

    per_chunk: float
    per_image: float
    intercept: float

    def __call__(self, chunk: int, images: int) -> float:
        return self.per_chunk * chunk + self.per_image * images + self.intercept


def image_graph(model: str, channels: int, size: int, classes: int,
                dtype: str = "float32") -> tuple[Chunked, PerImage]:
    """(saved bytes of a chunk of k of the n selected images, FLOPs per image) of APM's image gradient (distill/
    apm.py loss_and_gradient): the frozen teacher's graph is kept while the students' are built and back-propagated
    into the images, each student's forward running while the previous term is still bound, so two students'
    graphs live at the peak (K >= 2); a chunk is a view of the selected images, whose storage is saved whole. The
    FLOPs are one network's forward and input backward."""
    key = f"image|{model}|{channels}|{size}|{classes}|{dtype}"
    entry = lookup(key, lambda: probe_image_graph(model, channels, size, classes, dtype))
    return Chunked(*entry["saved"]), PerImage(*entry["flops"])


def _sizes(model: str, channels: int, size: int, classes: int) -> list[int]:
    return lookup(f"params|{model}|{channels}|{size}|{classes}", lambda: probe_params(model, channels, size, classes))


def num_params(model: str, channels: int, size: int, classes: int) -> int:
    return _sizes(model, channels, size, classes)[0]


def num_features(model: str, channels: int, size: int, classes: int) -> int:
    """The width of the model's `embed` features (coreset herding and k-means)."""
    return _sizes(model, channels, size, classes)[1]


def write_table(probe_all: Callable[[], object], command: str) -> None:
    """Run `probe_all` (the planner costing its configs) with every probe fresh, and write what it probed as
    calibration.json, naming `command` as the way to regenerate it."""
    global _table
    _table = {}
    _fresh.clear()
    probe_all()
    head = {"command": command, "torch": torch.__version__,
            "note": "counted on the meta device (budget/calibrate.py); regenerate after changing the probed code"}
    lines = [f"{json.dumps(key)}: {json.dumps(value)}" for key, value in sorted(_fresh.items())]  # one a line
    TABLE_PATH.write_text(json.dumps(head)[:-1] + ', "entries": {\n' + ",\n".join(lines) + "\n}}\n")
    print(f"wrote {TABLE_PATH} ({len(_fresh)} entries)")
