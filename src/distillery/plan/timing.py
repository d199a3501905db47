"""Seconds of one job before it runs: counted FLOPs (budget/calibrate.py) times a per-device rate, plus a
per-step overhead, both fitted to measured or reported times. Every rate names where it came from.

A rate is fitted (least squares on relative error) to runs of a known shape: for the CPU, the committed
benchmarks/results/*_cpu.json; for a GPU, benchmarks/results/*_cuda.json where a GPU has run the benchmarks,
else the authors' reported times — AST Table VI's seconds per distillation iteration (8 cells; the authors'
GPU, their code) for the unroll, MTT Sec. 5's seconds per expert epoch (CIFAR ~3 s, ImageNet subsets ~11 s;
their GPU) for training passes. Those are not our measurements: the source string says so.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from distillery.budget import calibrate
from distillery.choices import DEVICE_CLASSES, FEATURE_SELECTS
from distillery.data.registry import DatasetSpec, get_spec
from distillery.distill.config import DistillConfig
from distillery.evaluate import EvalConfig
from distillery.experts.recipes import Recipe, get_recipe
from distillery.plan.settings import load_config, resolve_method

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "benchmarks/results"
# MTT Sec. 5: "CIFAR experts took ~3 seconds per epoch ... each ImageNet (subset) expert ~11 seconds per epoch"
MTT_EPOCHS = (("ConvNet", "cifar10", 3.0), ("ConvNetD5", "imagenette", 11.0))


@dataclass(frozen=True)
class Rate:
    """seconds = steps · overhead + FLOPs · per_flop."""

    overhead: float
    per_flop: float
    source: str

    def __call__(self, steps: float, flops: float) -> float:
        return steps * self.overhead + flops * self.per_flop


def fit(runs: list[tuple[float, float, float]], source: str) -> Rate:
    """The Rate nearest (least squares on relative error) to runs of (steps, FLOPs, seconds), both terms
    non-negative: the two-term fit, or the better single term when a term comes out negative."""
    ss = sum((s / t) ** 2 for s, f, t in runs)
    sf = sum(s * f / t**2 for s, f, t in runs)
    ff = sum((f / t) ** 2 for s, f, t in runs)
    rs, rf = sum(s / t for s, f, t in runs), sum(f / t for s, f, t in runs)
    det = ss * ff - sf * sf
    candidates = [(rs / ss, 0.0), (0.0, rf / ff)]
    if det > 0 and (rs * ff - rf * sf) >= 0 and (rf * ss - rs * sf) >= 0:
        candidates.append(((rs * ff - rf * sf) / det, (rf * ss - rs * sf) / det))

    def worst(rate: Rate) -> float:
        return max(abs(rate(s, f) / t - 1) for s, f, t in runs)

    best = min((Rate(o, p, source) for o, p in candidates), key=worst)
    return Rate(best.overhead, best.per_flop, f"{source}; within {100 * worst(best):.0f}% of its {len(runs)} runs")


def unroll_flops(cfg: DistillConfig, spec: DatasetSpec, memory: str | None = None) -> float:
    """FLOPs of one matching iteration of `cfg` (under `memory`, default its own)."""
    n = cfg.ipc * spec.num_classes
    batch = min(cfg.batch_syn or n, n)
    _, flops = calibrate.unroll(cfg.model, spec.channels, spec.size, spec.num_classes, memory or cfg.memory)
    return flops(cfg.syn_steps, batch, batch, n)


def _training_flops(model: str, spec: DatasetSpec, penalty: str | None = None) -> tuple[float, float]:
    """(FLOPs per image of a training step, of a forward pass)."""
    _, step, forward = calibrate.training(model, spec.channels, spec.size, spec.num_classes, penalty)
    return step.slope, forward.slope


def _benchmark_runs(name: str, device: str) -> tuple[list[dict], str] | None:
    """The rows of benchmarks/results/<name>_<device>.json (device cpu or cuda) and its device name."""
    path = RESULTS / f"{name}_{device}.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record["rows"], f"{path.relative_to(ROOT)} ({record['device_name']}, {record['threads']} thread(s))"


def _measured_unroll(device: str) -> Rate | None:
    runs, where = [], []
    for name in ("distill-after", "distill-cifar", "distill"):
        found = _benchmark_runs(name, device)
        if found is None or (name == "distill" and runs):  # distill_cpu.json predates distill-after_cpu.json
            continue
        where.append(found[1])
        for row in found[0]:
            case, a = row["case"], row["a"]
            spec = get_spec(case["shape"])
            cfg = DistillConfig("bench", "trajectory", case["ipc"], model=case["model"], syn_steps=a["syn_steps"],
                                batch_syn=a["batch"])
            runs.append((a["syn_steps"], unroll_flops(cfg, spec, "full"), a["seconds_per_iteration"]))
    return fit(runs, "measured: " + ", ".join(where)) if runs else None


def _measured_training(device: str) -> Rate | None:
    runs, where = [], []
    experts, evals = _benchmark_runs("experts", device), _benchmark_runs("evaluate", device)
    for row in experts[0] if experts else []:
        case = row["case"]
        if case["mode"] != "serial":
            continue
        flops, _ = _training_flops(case["model"], get_spec(case["shape"]))
        epochs, images = case["epochs"] * case["experts"], case["images"]
        runs.append((epochs * math.ceil(images / case["batch"]), epochs * images * flops, row["a"]["seconds"]))
    for row in evals[0] if evals else []:
        case = row["case"]
        flops, _ = _training_flops(case["arch"], get_spec(case["shape"]))
        images = row["a"]["images"]
        runs.append((case["epochs"] * math.ceil(images / case["batch"]), case["epochs"] * images * flops,
                     row["a"]["seconds"]))
    where = [found[1] for found in (experts, evals) if found]
    return fit(runs, "measured: " + ", ".join(where)) if runs else None


def _reported_unroll() -> Rate:
    config, runs = load_config(ROOT), []
    with open(ROOT / "config/paper/reported/ast.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["table"] != "table6":
                continue
            settings = resolve_method(config, row["method"], row["dataset"], int(row["ipc"]))
            cfg = DistillConfig.from_dict({**settings, "memory": "full", "chunk": None})
            runs.append((cfg.syn_steps, unroll_flops(cfg, get_spec(row["dataset"])), float(row["mean"])))
    return fit(runs, "not measured: AST Table VI's reported seconds per iteration (the authors' GPU, their code)")


def _reported_training() -> Rate:
    runs = []
    for model, dataset, seconds in MTT_EPOCHS:
        spec = get_spec(dataset)
        flops, _ = _training_flops(model, spec)
        runs.append((math.ceil(spec.train_size / 256), spec.train_size * flops, seconds))
    return fit(runs, "not measured: MTT Sec. 5's reported seconds per expert epoch (the authors' GPU)")


@lru_cache(maxsize=None)
def rates(device: str) -> dict[str, Rate]:
    """{'unroll': an inner step of trajectory matching, 'training': a minibatch of a training pass} on `device`
    (cpu, or gpu: measured CUDA benchmarks when committed, else the papers' reported times)."""
    if device not in DEVICE_CLASSES:
        raise ValueError(f"unknown device class '{device}'; choose one of: {', '.join(DEVICE_CLASSES)}")
    found = "cpu" if device == "cpu" else "cuda"
    unroll, training = _measured_unroll(found), _measured_training(found)
    if device == "cpu" and (unroll is None or training is None):
        raise ValueError(f"the CPU time model needs the committed benchmarks/results/*_cpu.json under {ROOT}")
    return {"unroll": unroll or _reported_unroll(), "training": training or _reported_training()}


def trajectory_seconds(cfg: DistillConfig, spec: DatasetSpec, device: str, iterations: int | None = None) -> float:
    """A trajectory-matching job: iterations × (N inner steps, each in its pieces and, under recompute and
    constant, run twice: forward and replay)."""
    n = cfg.ipc * spec.num_classes
    batch = min(cfg.batch_syn or n, n)
    pieces = math.ceil(batch / min(cfg.chunk or batch, batch)) * (1 if cfg.memory == "full" else 2)
    per_iteration = rates(device)["unroll"](cfg.syn_steps * pieces, unroll_flops(cfg, spec))
    return (iterations or cfg.iterations) * per_iteration


def adversarial_seconds(cfg: DistillConfig, spec: DatasetSpec, device: str) -> float:
    """An APM job: every iteration the image gradient through K + 1 networks in chunks; every mid_gap + 1
    iterations a fresh student trained E + 1 epochs on the selected images."""
    rate = rates(device)["training"]
    n = cfg.ipc * spec.num_classes
    chosen = min(cfg.batch_syn or n, n)
    _, graph = calibrate.image_graph(cfg.model, spec.channels, spec.size, spec.num_classes)
    step, forward = _training_flops(cfg.model, spec)
    gradient = rate(math.ceil(chosen / min(cfg.update_syn or chosen, chosen)) * (cfg.checkpoints + 1),
                    chosen * (cfg.checkpoints + 1) * graph.slope)
    batches = (cfg.student_epochs + 1) * math.ceil(chosen / cfg.student_batch)
    refresh = rate(batches, (cfg.student_epochs + 1) * chosen * step + chosen * forward)
    return cfg.iterations * gradient + math.ceil(cfg.iterations / (cfg.mid_gap + 1)) * refresh


def training_seconds(model: str, images: int, epochs: int, batch: int, spec: DatasetSpec, device: str,
                     passes: int = 1, penalty: str | None = None, tested: int = 0) -> float:
    """`epochs` of minibatch training on `images` (`passes` forward/backward per batch: 2 under SAM/GSAM),
    then forward passes over `tested` images."""
    step, forward = _training_flops(model, spec, penalty)
    steps = epochs * math.ceil(images / batch) * passes
    return rates(device)["training"](steps, epochs * images * passes * step + tested * forward)


def expert_seconds(recipe: Recipe, model: str, spec: DatasetSpec, device: str) -> float:
    """A train_expert job: the recipe's epochs over the training split, then its train and test accuracy."""
    return training_seconds(model, spec.train_size, recipe.epochs, recipe.batch, spec, device,
                            passes=2 if recipe.optimizer == "gsam" else 1, penalty=calibrate.penalty_pass(recipe),
                            tested=spec.train_size + spec.test_size)


def evaluate_seconds(arch: str, images: int, spec: DatasetSpec, cfg: EvalConfig, device: str) -> float:
    """An evaluate (or nas_train) job: the protocol's epochs + 1 epochs on `images`, then the test split."""
    return training_seconds(arch, images, cfg.epochs + 1, cfg.batch, spec, device, passes=2 if cfg.sam_rho > 0 else 1,
                            tested=spec.test_size)


def coreset_seconds(cfg: DistillConfig, spec: DatasetSpec, device: str) -> float:
    """A coreset job: nothing to train (random), features of the training split (herding, kmeans), or a
    training run counting forgetting events."""
    if cfg.select in FEATURE_SELECTS:
        return training_seconds(cfg.model, 0, 0, 1, spec, device, tested=spec.train_size)
    if cfg.select == "forgetting":
        recipe = get_recipe(cfg.recipe)
        return training_seconds(cfg.model, spec.train_size, recipe.epochs, recipe.batch, spec, device)
    return 0.0
