"""The evaluation protocol: a freshly initialised network trained on the synthetic set as MTT's
utils.py:evaluate_synset (@50dccea, :352-389) runs it: SGD (momentum 0.9, wd 5e-4), DSA, batch 256, `range(Epoch+1)`
epochs, and after epoch Epoch//2+1 the lr ×0.1 in a new optimizer; accuracy after the final epoch. Variants: AST's
decay (×0.5, momentum 0.8 after the rebuild, wd 1e-3), APM's MultiStepLR decay (one optimizer), SAM (sam_rho > 0)
and soft labels: the set's logits as L1 regression targets (APM's teacher logits) or as the targets of a soft
cross-entropy (soft_loss soft_ce: DATM's learned logits)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillery.augment import DEFAULT_STRATEGY, dsa
from distillery.choices import EVAL_SCHEDULES, SOFT_LOSSES
from distillery.data import load_meta, load_split, load_zca
from distillery.metrics import accuracy, soft_cross_entropy
from distillery.models import build_model
from distillery.progress import Progress, log
from distillery.runtime import to_device
from distillery.sam import SharpnessAware
from distillery.seeds import generator, role_seeds, seeded
from distillery.synset import load_synset
from distillery.typecheck import check_types

EVAL_ROLES = ("eval-init", "eval-shuffle", "eval-dsa")


SOFT_CRITERIA = {"l1": F.l1_loss, "soft_ce": soft_cross_entropy}  # per SOFT_LOSSES: APM's L1, DATM's soft CE


@dataclass(frozen=True)
class EvalConfig:
    epochs: int = 1000            # the authors' Epoch: their `range(Epoch+1)` trains epochs + 1 epochs
    batch: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay: float = 0.1            # the lr multiplier of the second part (see schedule)
    decay_momentum: float | None = None  # momentum of the optimizer rebuilt at the decay (AST: 0.8); None: momentum
    schedule: str = "rebuild"     # rebuild: MTT's evaluate_synset, after epoch epochs//2+1 a new SGD at lr × decay
    #                               (momentum restarted) | multistep: APM's evaluate_synset_mc, MultiStepLR at
    #                               epochs//2+1: lr × decay from that epoch on, one optimizer (momentum kept)
    dsa: str = DEFAULT_STRATEGY
    default_lr: float = 0.01      # for sets without a learned lr (coresets): DC/DSA's lr_net
    sam_rho: float = 0.0          # > 0: plain SAM around the SGD (FTD's utils_eval_sam); 0: the standard protocol
    soft_labels: bool = False     # train on the set's soft labels (APM's teacher or DATM's learned logits)
    soft_loss: str = "l1"         # their loss: l1 (APM's) | soft_ce (−Σ softmax(y)·log_softmax(z), DATM's)

    def __post_init__(self) -> None:
        check_types(self, "evaluation")
        if self.epochs < 1 or self.batch < 1:
            raise ValueError(f"evaluation epochs and batch must be at least 1 (got {self.epochs}, {self.batch})")
        if self.sam_rho < 0:
            raise ValueError(f"evaluation sam_rho must be >= 0 (got {self.sam_rho}; 0 = plain SGD)")
        if self.soft_loss not in SOFT_LOSSES:
            raise ValueError(f"evaluation soft_loss={self.soft_loss!r} is not one of {', '.join(SOFT_LOSSES)}")
        if self.schedule not in EVAL_SCHEDULES:
            raise ValueError(f"evaluation schedule={self.schedule!r} is not one of {', '.join(EVAL_SCHEDULES)}")
        if self.decay_momentum is not None and (self.schedule != "rebuild" or not 0 <= self.decay_momentum < 1):
            raise ValueError(f"evaluation decay_momentum={self.decay_momentum!r} must be in [0, 1) and needs "
                             f"schedule 'rebuild' (the new optimizer at the decay; multistep keeps one), or null "
                             f"for `momentum`")


def epoch_schedule(cfg: EvalConfig, lr: float) -> list[tuple[float, float, bool]]:
    """(lr, momentum, new optimizer) of each of the cfg.epochs + 1 epochs. rebuild (MTT's evaluate_synset and the
    protocols copied from it: FTD, ATT, DATM; AST's with its own decay and momentum): epochs 0 … E//2+1 at lr, then
    a new SGD (momentum buffer empty) at lr × decay; multistep (APM's evaluate_synset_mc): lr × decay from epoch
    E//2+1 on, the same optimizer and its momentum buffer."""
    first = cfg.epochs // 2 + (2 if cfg.schedule == "rebuild" else 1)  # the first epoch at the decayed lr
    after = cfg.momentum if cfg.decay_momentum is None else cfg.decay_momentum
    return [(lr, cfg.momentum, epoch == 0) if epoch < first else
            (lr * cfg.decay, after, epoch == first and cfg.schedule == "rebuild") for epoch in range(cfg.epochs + 1)]


def _optimizer(model: nn.Module, lr: float, momentum: float,
               cfg: EvalConfig) -> torch.optim.Optimizer | SharpnessAware:
    """The protocol's SGD, wrapped in plain SAM (alpha 0, not adaptive) when cfg.sam_rho > 0."""
    sgd = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=cfg.weight_decay)
    if cfg.sam_rho > 0:
        return SharpnessAware(model.parameters(), sgd, cfg.sam_rho, alpha=0.0, adaptive=False, model=model)
    return sgd


def train_network(images: Tensor, labels: Tensor, lr: float, arch: str, num_classes: int, seed: int,
                  cfg: EvalConfig) -> nn.Module:
    """Train a new `arch` (initialised from `seed`, never warm-started) on (images, labels).

    Hard labels train with cross-entropy; soft labels (float [N, C] logits) with cfg.soft_loss: the L1 distance of
    the logits (APM) or the soft cross-entropy against their softmax (DATM).

    The lr and momentum of each epoch are epoch_schedule's. With cfg.sam_rho > 0 each batch is one SAM step on the
    same augmented batch; the lr schedule stays the protocol's (FTD's SAM evaluation had no decay; we keep one
    protocol and change only the optimizer).
    """
    with seeded(seed, "eval-init"):
        model = build_model(arch, images.shape[1], num_classes, images.shape[-1])
    model.to(images.device, non_blocking=True).train()  # no host wait on CUDA: the loop reads nothing back
    shuffle, aug = generator(seed, "eval-shuffle"), generator(seed, "eval-dsa")
    criterion = SOFT_CRITERIA[cfg.soft_loss] if labels.is_floating_point() else F.cross_entropy
    schedule = epoch_schedule(cfg, lr)
    progress = Progress(len(schedule), f"evaluate {arch} seed {seed}")
    for epoch, (rate, momentum, new) in enumerate(schedule):
        if new:
            opt = _optimizer(model, rate, momentum, cfg)
        for group in (opt.base if isinstance(opt, SharpnessAware) else opt).param_groups:
            group["lr"] = rate  # multistep: the decay in the optimizer that keeps its momentum
        order = to_device(torch.randperm(len(images), generator=shuffle), images.device)
        batches = order.split(cfg.batch)
        for b, idx in enumerate(batches, 1):
            x = dsa(images[idx], aug, cfg.dsa)  # one draw, shared by both SAM passes

            def closure() -> Tensor:
                loss = criterion(model(x), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                return loss

            opt.step(closure)
            progress.update(epoch + b / len(batches))  # within an epoch too: a real training split is long
    progress.close()
    return model


def evaluate(images: Tensor, labels: Tensor, lr: float | None, arch: str, test_images: Tensor, test_labels: Tensor,
             num_classes: int, seed: int, cfg: EvalConfig = EvalConfig()) -> float:
    """Final-epoch test accuracy of a fresh `arch` trained on the set; `lr=None` uses cfg.default_lr."""
    model = train_network(images, labels, cfg.default_lr if lr is None else lr, arch, num_classes, seed, cfg)
    return accuracy(model, test_images, test_labels)


def evaluate_synset(synset_path: str | Path, prepared_dir: str | Path, arch: str, seed: int, cfg: EvalConfig,
                    zca_path: str | Path | None = None, device: str = "cpu", protocol: str = "default",
                    gpu_memory_gb: float | None = None, validation: bool = False) -> dict:
    """Evaluate a synset file on the test split (in the synset's domain: ZCA or normalised); JSON-ready.
    `gpu_memory_gb` (runtime.gpu_memory_gb) keeps a test split too large for the GPU on the host (data.load_split).
    With `validation` the same network is also scored on the dataset's held-out validation split
    (`validation_accuracy`), which a selection rule may read instead of the test accuracy (report/selection.py).
    A snapshot's `iteration` (distill/snapshots.py) is recorded."""
    synset = load_synset(synset_path, expect={"dataset_sha256": load_meta(prepared_dir)["sha256"]["train.pt"]})
    meta = synset["meta"]
    if meta["zca"] and zca_path is None:
        raise ValueError(f"{synset_path} was distilled in the ZCA domain: pass the dataset's zca.pt")
    zca = load_zca(zca_path) if meta["zca"] else None
    test_images, test_labels = load_split(prepared_dir, "test", zca=zca, device=device, gpu_memory_gb=gpu_memory_gb)
    images, labels = synset["images"].to(device), synset["labels"].to(device)
    if cfg.soft_labels:
        if synset.get("soft_labels") is None:
            raise ValueError(f"{synset_path} has no soft labels ({meta['method']} neither matches a teacher's "
                             f"predictions (APM) nor learns its labels (learn_labels)); evaluate it with a protocol "
                             f"without soft_labels")
        labels = synset["soft_labels"].to(device)
    lr = synset["lr"] if synset["lr"] is not None else cfg.default_lr
    model = train_network(images, labels, lr, arch, meta["num_classes"], seed, cfg)
    acc = accuracy(model, test_images, test_labels)
    log.info("%s %s ipc%d on %s, seed %d: test accuracy %.2f%%", meta["method"], meta["dataset"], meta["ipc"], arch,
             seed, 100 * acc)
    result = {"method": meta["method"], "dataset": meta["dataset"], "ipc": meta["ipc"], "arch": arch, "seed": seed,
              "accuracy": acc, "lr": lr, "protocol": protocol, "selection": "final-epoch", "eval": asdict(cfg),
              "seeds": role_seeds(seed, EVAL_ROLES)}
    if "iteration" in meta:
        result["iteration"] = meta["iteration"]
    if validation:
        result["validation_accuracy"] = validation_accuracy(model, prepared_dir, zca, device, gpu_memory_gb)
    return result


def validation_accuracy(model: nn.Module, prepared_dir: str | Path, zca: dict | None, device: str,
                        gpu_memory_gb: float | None = None) -> float:
    """A trained network's accuracy on the dataset's held-out validation split (data.prepare: val.pt)."""
    images, labels = load_split(prepared_dir, "validation", zca=zca, device=device, gpu_memory_gb=gpu_memory_gb)
    return accuracy(model, images, labels)


def evaluate_real(prepared_dir: str | Path, arch: str, seed: int, cfg: EvalConfig, zca_path: str | Path | None = None,
                  device: str = "cpu", protocol: str = "default", gpu_memory_gb: float | None = None,
                  validation: bool = False) -> dict:
    """The protocol run on the whole real training split with its hard labels at cfg.default_lr (DD-Ranking's
    "real-hard" accuracy, report/scores.py): a fresh `arch`, test accuracy after the final epoch; JSON-ready."""
    if cfg.soft_labels:
        raise ValueError(f"protocol '{protocol}' trains on soft labels; the real training split has only its hard "
                         f"labels")
    meta = load_meta(prepared_dir)
    zca = load_zca(zca_path) if zca_path is not None else None
    images, labels = load_split(prepared_dir, "train", zca=zca, device=device, gpu_memory_gb=gpu_memory_gb)
    test_images, test_labels = load_split(prepared_dir, "test", zca=zca, device=device, gpu_memory_gb=gpu_memory_gb)
    model = train_network(images, labels, cfg.default_lr, arch, meta["num_classes"], seed, cfg)
    acc = accuracy(model, test_images, test_labels)
    log.info("the real %s training split (%d images) on %s, seed %d: test accuracy %.2f%%", meta["name"], len(labels),
             arch, seed, 100 * acc)
    result = {"method": "real", "dataset": meta["name"], "images": len(labels), "arch": arch, "seed": seed,
              "accuracy": acc, "lr": cfg.default_lr, "protocol": protocol, "zca": zca is not None,
              "selection": "final-epoch", "eval": asdict(cfg), "seeds": role_seeds(seed, EVAL_ROLES)}
    if validation:
        result["validation_accuracy"] = validation_accuracy(model, prepared_dir, zca, device, gpu_memory_gb)
    return result
