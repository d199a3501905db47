"""One distillation job: load the data and experts, distil, write synset.pt and the per-iteration CSV. The job sits
above the memory model (budget/), whose estimate it records beside the measured GPU peak, so the package face
(distill/__init__.py) does not import it: `from distillery.distill.run import run_distillation`."""
from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from distillery.budget.memory import GB, distill_estimate, prepared_spec
from distillery.checkpoint import Checkpoint, checkpoint_path
from distillery.data import load_meta, load_split, load_zca
from distillery.distill.config import DistillConfig, fit_batch_syn
from distillery.distill.coreset import check_ipc, embed, forgetting_counts, select_coreset
from distillery.distill.apm import distill_adversarial
from distillery.distill.components import Classifier, expert_logits
from distillery.distill.matching import distill_trajectory
from distillery.distill.snapshots import Snapshots
from distillery.experts import ExpertSampler, get_recipe, load_expert
from distillery.functional import FlatModel, snapshot_model
from distillery.io import atomic_path, beside
from distillery.models import build_model
from distillery.needs import expert_epochs_needed
from distillery.progress import log
from distillery.seeds import SEED_ROLES, generator, role_seeds
from distillery.synset import DistillResult, load_synset, save_synset

log = logging.getLogger("distillery")
LOG_COLUMNS = ("iteration", "loss", "lr", "start_epoch", "match_step", "skipped", "over_threshold", "seconds")


def expected_expert(cfg: DistillConfig, meta: dict, num_params: int | None = None) -> dict:
    """What an expert (or teacher) file must record to serve this distillation: its model, domain, dataset and
    recipe (as the recipe is now), and (when given) the student's parameter count."""
    expect = {"model": cfg.model, "zca": cfg.zca, "dataset_sha256": meta["sha256"]["train.pt"],
              "recipe": cfg.recipe}
    return expect if num_params is None else {**expect, "num_params": num_params}


def expert_features(cfg: DistillConfig, meta: dict, images: Tensor, expert_path: str | Path) -> Tensor:
    """`embed` features of `images` from a `cfg.model` at the final snapshot of the expert at `expert_path`."""
    trajectory, _ = load_expert(expert_path, expected_expert(cfg, meta))
    return embed(snapshot_model(trajectory, cfg.model, meta["num_classes"], images), images)


def first_expert_features(cfg: DistillConfig, meta: dict, images: Tensor, expert_paths: Sequence[str | Path],
                          purpose: str) -> Tensor:
    """`expert_features` from the first of `expert_paths`; `purpose` names who needs them in the error."""
    if not expert_paths:
        raise ValueError(f"method '{cfg.method}': {purpose} needs one expert trajectory for its features; "
                         f"train it first (rule train_expert)")
    return expert_features(cfg, meta, images, expert_paths[0])


def representative_features(cfg: DistillConfig, meta: dict, images: Tensor, expert_paths: Sequence[str | Path],
                            student: FlatModel, expect: dict) -> Tensor:
    """What representative init clusters: `features`, the embedding of expert 0's final network (the paper's
    reading); `logits`, the final logits of a random expert (AST's distill.py:112-160: the files and the experts in
    a file shuffled, `buffer[0][-1]`), drawn with role init-expert."""
    if cfg.representative == "features" or not expert_paths:
        return first_expert_features(cfg, meta, images, expert_paths, "init 'representative'")
    k = int(torch.randint(len(expert_paths), (1,), generator=generator(cfg.seed, "init-expert")))
    return expert_logits(student, load_expert(expert_paths[k], expect, False)[0][-1], images)


def expert_classifiers(student: FlatModel, expert_paths: Sequence[str | Path], expect: dict) -> list[Classifier]:
    """Each expert's final network as images -> logits, its file read (memory-mapped) only when called."""
    def classifier(path: str | Path) -> Classifier:
        return lambda images: expert_logits(student, load_expert(path, expect, False)[0][-1], images)

    return [classifier(path) for path in expert_paths]


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


def load_training(cfg: DistillConfig, prepared_dir: str | Path, zca_path: str | Path | None, device: str,
                  gpu_memory_gb: float | None = None) -> tuple[dict, Tensor, Tensor]:
    """The dataset's meta and training split on `device`, ZCA-whitened when `cfg.zca`; on the host when too large for
    a GPU of `gpu_memory_gb` (data.load_split: a HostSplit)."""
    meta = load_meta(prepared_dir)
    zca = load_zca(zca_path) if cfg.zca else None
    return (meta, *load_split(prepared_dir, "train", zca=zca, device=device, gpu_memory_gb=gpu_memory_gb))


def match_trajectories(cfg: DistillConfig, meta: dict, images: Tensor, labels: Tensor,
                       expert_paths: Sequence[str | Path], checkpoint: Checkpoint | None = None,
                       max_bad: int = 10, snapshots: Snapshots | None = None) -> DistillResult:
    """distill_trajectory with a student `cfg.model` and the experts at `expert_paths` (checked before any compute
    against the dataset, model, normalisation, parameter count and length); representative init clusters
    representative_features."""
    skeleton = build_model(cfg.model, meta["channels"], meta["num_classes"], meta["size"]).to(images.device)
    student = FlatModel(skeleton)
    experts = ExpertSampler(expert_paths, generator(cfg.seed, "experts"),
                            expected_expert(cfg, meta, student.num_params),
                            min_epochs=expert_epochs_needed(cfg.max_start_epoch, cfg.expert_epochs))
    features = None
    if cfg.init == "representative":  # AST: k-means on expert 0's features (paper) or a random expert's logits (code)
        check_ipc(labels, meta["num_classes"], cfg.ipc)
        features = representative_features(cfg, meta, images, expert_paths, student, experts.expect)
    classifiers = expert_classifiers(student, expert_paths, experts.expect)  # DATM: init correct, learn_labels
    return distill_trajectory(cfg, images, labels, meta["num_classes"], student, experts, features=features,
                              checkpoint=checkpoint, max_bad=max_bad, classifiers=classifiers, snapshots=snapshots)


def adversarial(cfg: DistillConfig, meta: dict, images: Tensor, labels: Tensor,
                expert_paths: Sequence[str | Path], checkpoint: Checkpoint | None = None,
                max_bad: int = 10, snapshots: Snapshots | None = None) -> DistillResult:
    """APM against the teachers at `expert_paths` (their final weights), checked like experts."""
    teachers = ExpertSampler(expert_paths, generator(cfg.seed, "experts"), expected_expert(cfg, meta))
    return distill_adversarial(cfg, images, labels, meta["num_classes"], teachers, checkpoint=checkpoint,
                               max_bad=max_bad, snapshots=snapshots)


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
                     zca_path: str | Path | None = None, device: str = "cpu", checkpoint_every: int = 50,
                     max_bad: int = 10, gpu_memory_gb: float | None = None, snapshot_every: int | None = None,
                     snapshot_paths: Sequence[str | Path] = ()) -> dict:
    """Distil with the resolved `method` settings (or merge its `group_paths`); returns the synset metadata.
    `gpu_memory_gb` (runtime.gpu_memory_gb) keeps a training split too large for the GPU on the host.
    `snapshot_every`: a trajectory or adversarial run also writes the set at iterations 0, every, 2·every, … to
    `snapshot_paths` (distill/snapshots.py), for the selection rules.

    Trajectory and adversarial runs checkpoint every `checkpoint_every` iterations and on SIGTERM beside
    `synset_path` and resume from there when rerun with the same settings and inputs; `max_bad` non-finite
    iterations in a row are skipped before the run stops (distill_trajectory).
    """
    cfg = DistillConfig.from_dict(method)
    if cfg.kind == "trajectory":  # planned by memory: auto, or the user's choice checked (budget/memory.py)
        log.info("%s: memory %s%s", cfg.method, cfg.memory, f", chunk {cfg.chunk}" if cfg.chunk else "")
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda:  # the GPU check of the memory model: the measured peak beside the estimate
        torch.cuda.reset_peak_memory_stats()
    meta, images, labels = load_training(cfg, prepared_dir, zca_path, device, gpu_memory_gb)
    cfg = fit_batch_syn(cfg, meta["num_classes"])
    identity = {"settings": cfg.to_dict(), "dataset_sha256": meta["sha256"]["train.pt"],
                "experts": [load_expert(path, verify=False)[1].get("sha256") for path in expert_paths]}
    snapshots = None
    if snapshot_every is not None:
        if cfg.kind not in ("trajectory", "adversarial"):
            raise ValueError(f"method '{cfg.method}': a {cfg.kind} set has no iterations to keep snapshots of")
        identity["snapshot_every"] = snapshot_every  # a checkpoint of a run without them has none staged
        base = {**cfg.to_dict(), "dataset": meta["name"], "dataset_sha256": meta["sha256"]["train.pt"],
                "num_classes": meta["num_classes"], "seeds": role_seeds(cfg.seed, SEED_ROLES)}
        snapshots = Snapshots(snapshot_paths, snapshot_every, cfg.iterations, base, beside(synset_path, "snapshots"))
    tic = time.perf_counter()
    checkpoint = Checkpoint(checkpoint_path(synset_path), checkpoint_every, identity)
    if cfg.kind == "coreset":
        result = DistillResult(*coreset(cfg, meta, images, labels, expert_paths), lr=None)
    elif cfg.kind == "merged":
        result = merge_groups(cfg, group_paths)
    else:
        with checkpoint:  # SIGTERM checkpoints (only these loops poll it; elsewhere it keeps its default)
            run = adversarial if cfg.kind == "adversarial" else match_trajectories
            result = run(cfg, meta, images, labels, expert_paths, checkpoint, max_bad, snapshots)
    seconds = time.perf_counter() - tic
    images_out, labels_out = result.images.detach().cpu(), result.labels.cpu()
    soft = None if result.soft_labels is None else result.soft_labels.detach().cpu()
    skipped = sum(row.get("skipped", 0) for row in result.history)
    over = sum(row.get("over_threshold", 0) for row in result.history)
    synset_meta = {**cfg.to_dict(), "dataset": meta["name"], "dataset_sha256": meta["sha256"]["train.pt"],
                   "num_classes": meta["num_classes"], "experts": len(expert_paths), "seconds": seconds,
                   "seeds": role_seeds(cfg.seed, SEED_ROLES), "skipped": skipped, "over_threshold": over}
    if snapshots is not None:  # the last of the series the selection rules choose from
        synset_meta.update(iteration=cfg.iterations, snapshot_every=snapshot_every)
    if cfg.threshold is not None:
        log.info("%s ipc%d: %d of %d iterations skipped for a matching loss above the threshold %s", cfg.method,
                 cfg.ipc, over, len(result.history), cfg.threshold)
    share = cfg.initial_share(cfg.iterations - skipped)  # skipped iterations do not update the EMA
    if share is not None:
        synset_meta["initial_share"] = share
        log.info("%s ipc%d: the EMA result keeps %.1f%% of the initial images (decay %s ^ %d updates)", cfg.method,
                 cfg.ipc, 100 * share, cfg.ema_decay, cfg.iterations - skipped)
    if on_cuda:
        estimate = distill_estimate(cfg, prepared_spec(meta), gpu_memory_gb).peak / GB
        measured = torch.cuda.max_memory_allocated() / GB
        synset_meta["gpu_memory_gb"] = {"estimate": round(estimate, 3), "measured": round(measured, 3)}
        log.info("GPU memory: measured peak %.2f GB (torch.cuda.max_memory_allocated), estimated %.2f GB before "
                 "the margin", measured, estimate)
    with atomic_path(log_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)  # columns a kind does not log stay empty
        writer.writeheader()
        writer.writerows(result.history)
    save_synset(synset_path, images_out, labels_out, result.lr, soft, synset_meta)
    if snapshots is not None:
        snapshots.publish()
    checkpoint.clear()
    return synset_meta
