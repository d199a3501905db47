"""One distillation job: load the data and experts, distil, write synset.pt and the per-iteration CSV."""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Sequence

import torch

from distillery.data import load_meta, load_split, load_zca
from distillery.distill.config import DistillConfig
from distillery.distill.init import init_synthetic
from distillery.distill.matching import distill_trajectory
from distillery.experts import ExpertSampler
from distillery.functional import FlatModel
from distillery.io import atomic_path, save_torch
from distillery.models import build_model
from distillery.seeds import generator

LOG_COLUMNS = ("iteration", "loss", "lr", "seconds")


def run_distillation(method: dict, prepared_dir: str | Path, synset_path: str | Path, log_path: str | Path,
                     expert_paths: Sequence[str | Path] = (), zca_path: str | Path | None = None,
                     device: str = "cpu") -> dict:
    """Distil with the resolved `method` settings; returns the synset metadata."""
    cfg = DistillConfig.from_dict(method)
    meta = load_meta(prepared_dir)
    zca = load_zca(zca_path) if cfg.zca else None
    images, labels = load_split(prepared_dir, "train", zca=zca, device=device)
    tic = time.perf_counter()
    if cfg.kind == "coreset":
        syn_images, syn_labels = init_synthetic(images, labels, meta["num_classes"], cfg.ipc, "real",
                                                generator(cfg.seed, "init"))
        lr, history = None, []
    else:
        skeleton = build_model(cfg.model, meta["channels"], meta["num_classes"], meta["size"]).to(device)
        expect = {"model": cfg.model, "zca": cfg.zca, "dataset_sha256": meta["sha256"]["train.pt"]}
        experts = ExpertSampler(expert_paths, generator(cfg.seed, "experts"), expect)
        result = distill_trajectory(cfg, images, labels, meta["num_classes"], FlatModel(skeleton), experts)
        syn_images, syn_labels, lr, history = result.images, result.labels, result.lr, result.history
    synset_meta = {**cfg.to_dict(), "dataset": meta["name"], "dataset_sha256": meta["sha256"]["train.pt"],
                   "num_classes": meta["num_classes"], "experts": len(expert_paths),
                   "seconds": time.perf_counter() - tic}
    with atomic_path(log_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(history)
    save_torch({"images": syn_images.detach().cpu(), "labels": syn_labels.cpu(), "lr": lr, "meta": synset_meta},
               synset_path)
    return synset_meta


def load_synset(path: str | Path) -> dict:
    """A synthetic set written by run_distillation: images, labels, learned lr (None for coresets), meta."""
    try:
        synset = torch.load(path, weights_only=True, map_location="cpu")
        synset["images"], synset["labels"], synset["meta"]
    except Exception as err:
        raise ValueError(f"synthetic set {path} is unreadable ({err}); delete it and rerun its distill job") from err
    return synset
