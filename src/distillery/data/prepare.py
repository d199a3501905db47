"""Prepare a dataset once into uint8 tensors + meta.json, and load the splits back checked and normalised."""
from __future__ import annotations

import json
import logging
import os
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from distillery.io import regenerate, sha256_file, write_temp
from distillery.seeds import generator
from .folders import load_imagenet64_splits, load_imagenet_subset_splits, load_tiny_imagenet_splits
from .registry import IMAGENET_SUBSETS, DatasetSpec, get_spec
from .sources import RawSplits, load_digits_splits, load_fashion_mnist_splits, load_torchvision_splits
from .host import DEVICE_SHARE, HostSplit, split_on_device
from .transform import to_float

log = logging.getLogger("distillery")
SPLIT_FILES = {"train": "train.pt", "test": "test.pt", "validation": "val.pt"}

LOADERS: dict[str, Callable[[Path], RawSplits]] = {
    "digits": load_digits_splits,
    "fashion-mnist": load_fashion_mnist_splits,
    "mnist": partial(load_torchvision_splits, "mnist"),
    "cifar10": partial(load_torchvision_splits, "cifar10"),
    "cifar100": partial(load_torchvision_splits, "cifar100"),
    "svhn": partial(load_torchvision_splits, "svhn"),
    "tiny-imagenet": load_tiny_imagenet_splits,
    "imagenet-64": load_imagenet64_splits,
    **{name: partial(load_imagenet_subset_splits, name) for name in IMAGENET_SUBSETS},
}

# Datasets whose raw files do not come from data_dir (scikit-learn ships digits): data_dir is no setting of theirs.
BUNDLED = ("digits",)


def reads_data_dir(name: str) -> bool:
    """Whether preparing dataset `name` reads data_dir (so that changing it is a reason to prepare it again)."""
    return name not in BUNDLED


def _check_raw(spec: DatasetSpec, raw: RawSplits) -> None:
    """Catch a reader that returned the wrong shape, dtype or label range before anything is written."""
    for split, images, labels in (("train", raw.train_images, raw.train_labels), ("test", raw.test_images, raw.test_labels)):
        want = (spec.channels, spec.size, spec.size)
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != want or len(images) != len(labels):
            raise ValueError(f"{spec.name} {split}: got images {images.dtype} {list(images.shape)} and "
                             f"{len(labels)} labels, expected uint8 [N,{','.join(map(str, want))}] and N labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(raw.classes)):
            raise ValueError(f"{spec.name} {split}: labels outside 0..{len(raw.classes) - 1}")


def channel_stats(images_uint8: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of uint8 images in the [0,1] domain, accumulated in float64."""
    x = images_uint8.transpose(0, 1).reshape(images_uint8.shape[1], -1).double() / 255.0
    return x.mean(dim=1).tolist(), x.std(dim=1, correction=0).tolist()


def holdout_indices(labels: Tensor, num_classes: int, per_class: int, seed: int = 0) -> Tensor:
    """The validation split held out of a training split: `per_class` images of every class, drawn by its own
    generator (seed `seed`, role 'validation'), never by a distillation's or an evaluation's seed, so every job and
    every seed sees the same split. Ascending indices into the training split."""
    if per_class < 1:
        raise ValueError(f"a validation split needs at least 1 image per class (got per_class={per_class})")
    draw, picked = generator(seed, "validation"), []
    for c, members in enumerate(class_indices(labels, num_classes)):
        if per_class >= len(members):
            raise ValueError(f"class {c} has {len(members)} training images: holding out {per_class} would leave none "
                             f"to train on; lower validation.<dataset>.per_class below {len(members)}")
        picked.append(members[torch.randperm(len(members), generator=draw)[:per_class]])
    return torch.sort(torch.cat(picked)).values


def prepare(name: str, data_dir: str | Path | None, out_dir: str | Path, validation: dict | None = None) -> dict:
    """Read a dataset's raw files and write out_dir/{train.pt,test.pt,meta.json}; returns the meta dict. `data_dir`
    may be None for a dataset that does not read it (`reads_data_dir`).

    With `validation` ({per_class, seed}) a class-stratified part of the training split is held out into val.pt
    (with its `indices` in the raw training split) and train.pt holds only the rest, so nothing that trains on the
    training split (experts, distillations, coresets, ZCA, the normalisation statistics) can see it.
    All files are staged as temp files and renamed into place only after all were written (meta.json last).
    """
    get_spec(name)  # an unknown name is refused, listing the known ones, before any file is read
    if data_dir is None and reads_data_dir(name):
        raise ValueError(f"dataset {name!r} reads its raw files from data_dir; none was given")
    return write_prepared(name, LOADERS[name](Path(data_dir if data_dir is not None else ".")), out_dir, validation)


def write_prepared(name: str, raw: RawSplits, out_dir: str | Path, validation: dict | None = None) -> dict:
    """Write `raw` (dataset `name`'s splits, or a subset of them) as out_dir/{train.pt,test.pt,meta.json}, and
    val.pt with `validation` (prepare), checked against the registry's shape; returns the meta dict. Statistics the
    registry lacks come from these images."""
    spec = get_spec(name)
    out_dir = Path(out_dir)
    _check_raw(spec, raw)
    train_images, train_labels = raw.train_images, raw.train_labels.to(torch.int64)
    splits = {}
    if validation:
        held = holdout_indices(train_labels, len(raw.classes), int(validation["per_class"]),
                               int(validation.get("seed", 0)))
        keep = torch.ones(len(train_labels), dtype=torch.bool)
        keep[held] = False
        splits["val.pt"] = {"images": train_images[held].contiguous(), "labels": train_labels[held].contiguous(),
                            "indices": held}
        train_images, train_labels = train_images[keep], train_labels[keep]
    if spec.mean is None:
        mean, std = channel_stats(train_images)
    else:
        mean, std = list(spec.mean), list(spec.std)
    splits = {
        "train.pt": {"images": train_images.contiguous(), "labels": train_labels.contiguous()},
        "test.pt": {"images": raw.test_images.contiguous(), "labels": raw.test_labels.to(torch.int64).contiguous()},
        **splits,
    }
    meta = {"name": name, "num_classes": len(raw.classes), "classes": list(raw.classes),
            "channels": spec.channels, "size": spec.size,
            "n_train": len(train_labels), "n_test": len(raw.test_labels),
            "mean": mean, "std": std, **raw.info}
    if validation:
        meta["validation"] = {"per_class": int(validation["per_class"]), "seed": int(validation.get("seed", 0)),
                              "n": len(splits["val.pt"]["labels"])}
    staged: dict[str, Path] = {}
    try:
        for filename, payload in splits.items():
            staged[filename] = write_temp(out_dir, filename, lambda f, obj=payload: torch.save(obj, f))
        meta["sha256"] = {filename: sha256_file(path) for filename, path in staged.items()}
        text = (json.dumps(meta, indent=2) + "\n").encode()
        staged["meta.json"] = write_temp(out_dir, "meta.json", lambda f: f.write(text))
        for filename, path in staged.items():
            os.replace(path, out_dir / filename)
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)
    return meta


def load_meta(prepared_dir: str | Path) -> dict:
    """The meta.json of a prepared dataset folder."""
    path = Path(prepared_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run prepare for this dataset first")
    return json.loads(path.read_text())


def _read_split(prepared_dir: Path, split: str, meta: dict) -> dict:
    """Load one split file after checking its sha256 against meta.json."""
    path = prepared_dir / SPLIT_FILES[split]
    advice = regenerate(prepared_dir / "meta.json", "prepare_data")
    if path.name not in meta["sha256"]:
        raise ValueError(f"{prepared_dir} has no {split} split: it was prepared without one; set "
                         f"validation.{meta['name']}.per_class in the config (then {advice})")
    if not path.is_file():
        raise ValueError(f"{path} is missing: {advice}")
    if sha256_file(path) != meta["sha256"][path.name]:
        raise ValueError(f"{path} does not match the sha256 in meta.json (truncated or modified): {advice}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        images, labels = data["images"], data["labels"]
    except Exception as err:
        raise ValueError(f"{path} cannot be read ({err}): {advice}") from err
    if images.dtype != torch.uint8 or labels.dtype != torch.int64 or len(images) != len(labels):
        raise ValueError(f"{path} holds {images.dtype} images and {labels.dtype} labels: {advice}")
    return data


def load_split(prepared_dir: str | Path, split: str, zca: dict | None = None, device: str | torch.device = "cpu",
               gpu_memory_gb: float | None = None) -> tuple[Tensor | HostSplit, Tensor]:
    """float32 images (data.transform.to_float: normalised, or ZCA-whitened) and int64 labels of a split on `device`.

    With `gpu_memory_gb` (runtime.gpu_memory_gb) a split too large to load whole (data.host.split_on_device) comes
    as a HostSplit instead: uint8 on the host, each indexed batch normalised on `device` to the same values.
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLIT_FILES)}")
    prepared_dir = Path(prepared_dir)
    meta = load_meta(prepared_dir)
    data = _read_split(prepared_dir, split, meta)
    images, labels = data["images"], data["labels"].to(device)
    if split_on_device(len(images), images.shape[1:].numel(), gpu_memory_gb):
        return to_float(images.to(device), meta, zca), labels
    log.info("%s %s split: %d images kept on the host as uint8 (%.1f GB) and moved to %s a batch at a time: loading "
             "them whole would take more than %d%% of runtime.gpu_memory_gb %g", meta["name"], split, len(images),
             images.numel() / 2**30, device, 100 * DEVICE_SHARE, gpu_memory_gb)
    return HostSplit(images, meta, zca, device), labels


def class_indices(labels: Tensor, num_classes: int) -> list[Tensor]:
    """For each class, the (ascending) indices of its samples: one stable sort, no loop over samples."""
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=num_classes)
    if len(counts) > num_classes:
        raise ValueError(f"labels go up to {len(counts) - 1}, but num_classes is {num_classes}")
    return list(torch.split(order, counts.tolist()))
