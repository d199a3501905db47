"""One distillation job: load the data and experts, distil, write synset.pt and the per-iteration CSV."""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from distillery.data import load_meta, load_split, load_zca
from distillery.distill.config import DistillConfig
from distillery.distill.coreset import check_ipc, embed, forgetting_counts, select_coreset
from distillery.distill.apm import distill_adversarial
from distillery.distill.matching import DistillResult, distill_trajectory
from distillery.experts import ExpertSampler, get_recipe, load_expert
from distillery.functional import FlatModel
from distillery.io import atomic_path, save_torch
from distillery.models import build_model
from distillery.seeds import generator

LOG_COLUMNS = ("iteration", "loss", "lr", "start_epoch", "match_step", "seconds")


def expected_expert(cfg: DistillConfig, meta: dict) -> dict:
    """What an expert (or teacher) file must record to serve this distillation: its model, domain and dataset."""
    return {"model": cfg.model, "zca": cfg.zca, "dataset_sha256": meta["sha256"]["train.pt"]}


def expert_features(cfg: DistillConfig, meta: dict, images: Tensor, expert_path: str | Path) -> Tensor:
    """`embed` features of `images` from a `cfg.model` at the final snapshot of the expert at `expert_path`."""
    trajectory, _ = load_expert(expert_path, expected_expert(cfg, meta))
    module = build_model(cfg.model, meta["channels"], meta["num_classes"], meta["size"]).to(images.device)
    num_params = FlatModel(module).num_params  # the flat layout of expert trajectories
    if trajectory.shape[1] != num_params:
        raise ValueError(f"expert file {expert_path} has {trajectory.shape[1]} parameters but {cfg.model} has "
                         f"{num_params}; retrain it")
    torch.nn.utils.vector_to_parameters(trajectory[-1].to(images.device).clone(), module.parameters())
    return embed(module, images)


def first_expert_features(cfg: DistillConfig, meta: dict, images: Tensor, expert_paths: Sequence[str | Path],
                          purpose: str) -> Tensor:
    """`expert_features` from the first of `expert_paths`; `purpose` names who needs them in the error."""
    if not expert_paths:
        raise ValueError(f"method '{cfg.method}': {purpose} needs one expert trajectory for its features; "
                         f"train it first (rule train_expert)")
    return expert_features(cfg, meta, images, expert_paths[0])


def coreset(cfg: DistillConfig, meta: dict, images: Tensor, labels: Tensor,
            expert_paths: Sequence[str | Path]) -> tuple[Tensor, Tensor]:
    """The real images `cfg.select` picks: random, herding or k-means on the first expert's features, or
    forgetting counts."""
    check_ipc(labels, meta["num_classes"], cfg.ipc)  # before any training or embedding
    features = counts = None
    if cfg.select in ("herding", "kmeans"):
        features = first_expert_features(cfg, meta, images, expert_paths, cfg.select)
    elif cfg.select == "forgetting":
        counts = forgetting_counts(images, labels, cfg.model, meta["num_classes"], get_recipe(cfg.recipe), cfg.seed)
    return select_coreset(cfg.select, images, labels, meta["num_classes"], cfg.ipc, generator(cfg.seed, "init"),
                          features=features, counts=counts, clusters=cfg.init_clusters, seed=cfg.seed)


def load_training(cfg: DistillConfig, prepared_dir: str | Path, zca_path: str | Path | None,
                  device: str) -> tuple[dict, Tensor, Tensor]:
    """The dataset's meta and training split on `device`, ZCA-whitened when `cfg.zca`."""
    meta = load_meta(prepared_dir)
    zca = load_zca(zca_path) if cfg.zca else None
    return (meta, *load_split(prepared_dir, "train", zca=zca, device=device))


def match_trajectories(cfg: DistillConfig, meta: dict, images: Tensor, labels: Tensor,
                       expert_paths: Sequence[str | Path]) -> DistillResult:
    """distill_trajectory with a student `cfg.model` and the experts at `expert_paths` (checked against the
    dataset, model and normalisation); representative init takes expert 0's features."""
    skeleton = build_model(cfg.model, meta["channels"], meta["num_classes"], meta["size"]).to(images.device)
    experts = ExpertSampler(expert_paths, generator(cfg.seed, "experts"), expected_expert(cfg, meta))
    features = None
    if cfg.init == "representative":  # AST: k-means on the features of expert 0's final snapshot
        check_ipc(labels, meta["num_classes"], cfg.ipc)
        features = first_expert_features(cfg, meta, images, expert_paths, "init 'representative'")
    return distill_trajectory(cfg, images, labels, meta["num_classes"], FlatModel(skeleton), experts,
                              features=features)


def adversarial(cfg: DistillConfig, meta: dict, images: Tensor, labels: Tensor,
                expert_paths: Sequence[str | Path]) -> DistillResult:
    """APM against the teachers at `expert_paths` (their final weights), checked like experts."""
    teachers = ExpertSampler(expert_paths, generator(cfg.seed, "experts"), expected_expert(cfg, meta))
    return distill_adversarial(cfg, images, labels, meta["num_classes"], teachers)


def merge_groups(cfg: DistillConfig, group_paths: Sequence[str | Path]) -> DistillResult:
    """Concatenate independently distilled groups of `cfg.groups_of` (each `group_ipc` per class), class by class."""
    groups = [load_synset(path) for path in group_paths]
    if len(groups) != cfg.ipc // cfg.group_ipc:
        raise ValueError(f"method '{cfg.method}': IPC {cfg.ipc} needs {cfg.ipc // cfg.group_ipc} groups of "
                         f"{cfg.group_ipc}, got {len(groups)} files")
    for path, group in zip(group_paths, groups):
        if (group["meta"]["method"], group["meta"]["ipc"]) != (cfg.groups_of, cfg.group_ipc):
            raise ValueError(f"{path} is {group['meta']['method']} IPC {group['meta']['ipc']}, not a group of "
                             f"{cfg.groups_of} IPC {cfg.group_ipc}; rerun its distill_group job")
    if len({group["lr"] for group in groups}) > 1:
        raise ValueError(f"method '{cfg.method}': the groups learned different lrs; one evaluation lr is needed")
    labels = torch.cat([group["labels"] for group in groups])
    order = torch.sort(labels, stable=True).indices  # class by class, groups in order within a class
    soft = [group.get("soft_labels") for group in groups]
    return DistillResult(torch.cat([group["images"] for group in groups])[order], labels[order], groups[0]["lr"],
                         soft_labels=None if soft[0] is None else torch.cat(soft)[order])


def run_distillation(method: dict, prepared_dir: str | Path, synset_path: str | Path, log_path: str | Path,
                     expert_paths: Sequence[str | Path] = (), group_paths: Sequence[str | Path] = (),
                     zca_path: str | Path | None = None, device: str = "cpu") -> dict:
    """Distil with the resolved `method` settings (or merge its `group_paths`); returns the synset metadata."""
    cfg = DistillConfig.from_dict(method)
    meta, images, labels = load_training(cfg, prepared_dir, zca_path, device)
    tic = time.perf_counter()
    if cfg.kind == "coreset":
        result = DistillResult(*coreset(cfg, meta, images, labels, expert_paths), lr=None)
    elif cfg.kind == "merged":
        result = merge_groups(cfg, group_paths)
    elif cfg.kind == "adversarial":
        result = adversarial(cfg, meta, images, labels, expert_paths)
    else:
        result = match_trajectories(cfg, meta, images, labels, expert_paths)
    syn_images, syn_labels, lr, history = result.images, result.labels, result.lr, result.history
    synset_meta = {**cfg.to_dict(), "dataset": meta["name"], "dataset_sha256": meta["sha256"]["train.pt"],
                   "num_classes": meta["num_classes"], "experts": len(expert_paths),
                   "seconds": time.perf_counter() - tic}
    with atomic_path(log_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)  # columns a kind does not log stay empty
        writer.writeheader()
        writer.writerows(history)
    soft = None if result.soft_labels is None else result.soft_labels.detach().cpu()
    save_torch({"images": syn_images.detach().cpu(), "labels": syn_labels.cpu(), "lr": lr, "soft_labels": soft,
                "meta": synset_meta}, synset_path)
    return synset_meta


def load_synset(path: str | Path) -> dict:
    """A synthetic set written by run_distillation: images, labels, learned lr (None for coresets), soft labels
    (teacher logits, APM; None otherwise), meta."""
    try:
        synset = torch.load(path, weights_only=True, map_location="cpu")
        synset["images"], synset["labels"], synset["meta"]
    except Exception as err:
        raise ValueError(f"synthetic set {path} is unreadable ({err}); delete it and rerun its distill job") from err
    return synset
