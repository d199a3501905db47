"""How smooth an expert trajectory is (AST's Avg_Var, paper Table VII / Fig. 9) and how good each snapshot is."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from distillery.data import load_meta, load_split, load_zca
from distillery.experts.store import load_expert
from distillery.functional import FlatModel
from distillery.io import save_json
from distillery.models import build_model
from distillery.seeds import seeded


def epoch_changes(trajectory: Tensor) -> Tensor:
    """‖θ_{e+1} − θ_e‖² for each pair of consecutive snapshots: float64, [E] for an [E+1, P] trajectory."""
    if trajectory.dim() != 2 or len(trajectory) < 2:
        raise ValueError(f"a trajectory is [epochs+1, P] with at least 2 snapshots; got {tuple(trajectory.shape)}")
    return torch.stack([(trajectory[e + 1].double() - trajectory[e].double()).pow(2).sum()
                        for e in range(len(trajectory) - 1)])


def avg_var(trajectory: Tensor) -> float:
    """AST's Avg_Var: the mean of `epoch_changes`."""
    return float(epoch_changes(trajectory).mean())


@torch.no_grad()
def snapshot_accuracies(trajectory: Tensor, model_name: str, images: Tensor, labels: Tensor, num_classes: int,
                        batch: int = 1024) -> list[float]:
    """Accuracy (fraction, eval mode, no augmentation) of `model_name` at every snapshot of `trajectory`.

    Trajectories hold parameters only, so models with BatchNorm running statistics are refused.
    """
    with seeded(0, "snapshot-skeleton"):  # the initial weights are replaced; keep the global RNG untouched
        module = build_model(model_name, images.shape[1], num_classes, images.shape[-1])
    if any(isinstance(m, _BatchNorm) and m.track_running_stats for m in module.modules()):
        raise ValueError(f"{model_name} keeps BatchNorm running statistics, which expert trajectories do not "
                         "store; snapshot accuracies need a model without them (e.g. the instance-norm ConvNet)")
    module.to(images.device).eval()
    flat = FlatModel(module)
    if trajectory.shape[1] != flat.num_params:
        raise ValueError(f"the trajectory has {trajectory.shape[1]} parameters but {model_name} has "
                         f"{flat.num_params}")
    result = []
    for snapshot in trajectory:
        weights = snapshot.to(images.device, torch.float32)
        correct = sum(int((flat(weights, images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum())
                      for i in range(0, len(images), batch))
        result.append(correct / len(images))
    return result


def run_expert_stats(expert_paths: Sequence[str | Path], prepared_dir: str | Path, out_path: str | Path,
                     zca_path: str | Path | None = None, device: str = "cpu",
                     gpu_memory_gb: float | None = None) -> dict:
    """Smoothness and per-epoch test accuracy of experts of one recipe, model and dataset; written as JSON.
    `gpu_memory_gb` (runtime.gpu_memory_gb) keeps a test split too large for the GPU on the host (data.load_split)."""
    if not expert_paths:
        raise ValueError("no expert trajectories given: train experts first (rule train_expert)")
    meta = load_meta(prepared_dir)
    zca = load_zca(zca_path) if zca_path else None
    test_images, test_labels = load_split(prepared_dir, "test", zca=zca, device=device, gpu_memory_gb=gpu_memory_gb)
    expect = {"zca": zca is not None, "dataset_sha256": meta["sha256"]["train.pt"]}
    stats: dict = {"experts": len(expert_paths), "zca": zca is not None, "seeds": [], "avg_var": [],
                   "epoch_changes": [], "test_accuracy": [], "final_test_accuracy": []}
    first: tuple | None = None
    for path in expert_paths:
        trajectory, info = load_expert(path, expect)
        recipe = info["recipe"]
        key = (recipe, info["model"], info["dataset"])
        if first is None:
            first = key
            stats.update(recipe=recipe["name"], model=info["model"], dataset=info["dataset"])
        elif key != first:
            raise ValueError(f"experts disagree: {path} is recipe {recipe['name']!r} ({recipe}), model "
                             f"{info['model']!r}, dataset {info['dataset']!r}, but {expert_paths[0]} is recipe "
                             f"{first[0]['name']!r} ({first[0]}), model {first[1]!r}, dataset {first[2]!r}; "
                             "pass the experts of one recipe, model and dataset")
        changes = epoch_changes(trajectory)
        accuracies = snapshot_accuracies(trajectory, info["model"], test_images, test_labels, meta["num_classes"])
        stats["seeds"].append(info.get("seed"))
        stats["avg_var"].append(float(changes.mean()))
        stats["epoch_changes"].append(changes.tolist())
        stats["test_accuracy"].append(accuracies)
        stats["final_test_accuracy"].append(accuracies[-1])
    save_json(stats, out_path)
    return stats
