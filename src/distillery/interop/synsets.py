"""A distilled set made elsewhere (the authors' released `images_*.pt`, `labels_*.pt`, learned lr) as one of our
synset files, at the path a table cell `external:<name>` reads: evaluated under our protocol (fresh networks,
final epoch, no test-set selection) on any architecture, beside our own runs."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from distillery.data import get_spec, load_meta, load_zca, zca_invert
from distillery.io import sha256_file
from distillery.models import is_model_name
from distillery.plan import EXTERNAL, PATHS, default_model
from distillery.synset import save_synset

FORMAT = "reference-synset"
NAME = re.compile(r"[A-Za-z0-9_]+")
# --zca-images: |our inverse ZCA of the images − the reference's un-whitened copy| in [0, 1] pixels. A GPU fit and
# ours differ in float rounding (~1e-4); another whitening, or none, differs by ~0.1 and more.
ZCA_TOLERANCE = 1e-2


def _tensor(path: Path, what: str) -> Tensor:
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{what} {path} is not a readable torch file ({err})") from err
    if not isinstance(value, Tensor):
        raise ValueError(f"{what} {path} holds {type(value).__name__}, not a tensor")
    return value.detach()


def _lr(lr: str | float | None) -> tuple[float | None, dict | None]:
    """The learned lr: a number, or a file holding a one-element tensor (DATM's lr_*.pt); None keeps the
    protocol's default_lr."""
    if lr is None:
        return None, None
    try:
        value, source = float(lr), {"value": float(lr)}
    except (TypeError, ValueError):
        path = Path(lr)
        tensor = _tensor(path, "--lr")
        if tensor.numel() != 1:
            raise ValueError(f"--lr {path} holds {tensor.numel()} values; the learned lr is one number") from None
        value, source = float(tensor), {"path": str(path.resolve()), "sha256": sha256_file(path)}
    if not value > 0 or value == float("inf"):
        raise ValueError(f"--lr is {value}; a learned lr must be positive and finite")
    return value, source


def _labels(labels_path: Path | None, count: int, num_classes: int) -> Tensor:
    """Hard labels [N]; without a file, MTT's order: IPC of class 0, then class 1, … (distill.py's label_syn)."""
    if labels_path is None:
        if count % num_classes:
            raise ValueError(f"{count} images are not {num_classes} classes × IPC; pass --labels")
        return torch.arange(num_classes).repeat_interleave(count // num_classes)
    labels = _tensor(labels_path, "--labels")
    if labels.is_floating_point():
        raise ValueError(f"--labels {labels_path} holds {labels.dtype} {list(labels.shape)} soft labels (DATM's "
                         f"learned logits train with a soft cross-entropy our protocol does not have); pass hard "
                         f"labels, one class index per image")
    if labels.shape != (count,):
        raise ValueError(f"--labels {labels_path} is {list(labels.shape)}; it needs one class index per image, "
                         f"[{count}]")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"--labels {labels_path} has classes {int(labels.min())}..{int(labels.max())}; the dataset "
                         f"has 0..{num_classes - 1}")
    return labels.long()


def import_synset(images_path: str | Path, dataset: str, name: str, labels_path: str | Path | None = None,
                  lr: str | float | None = None, zca: bool = False, zca_images: str | Path | None = None,
                  model: str | None = None, root: str | Path = ".") -> Path:
    """Write a foreign synthetic set as results/synsets/external:<name>/<dataset>/ipc<N>/synset.pt and return it.

    Images are [N, C, H, W] in the domain the set was distilled in: normalised by the dataset's mean/std, or
    with `zca` whitened by our ZCA of the prepared data (zca.pt). `zca_images` (MTT's images_zca_<it>.pt, the
    same images un-whitened by the authors' ZCA) is compared with our inverse ZCA of the images, which checks
    that the two whitenings agree. `model` is the architecture it was distilled with (a cell's default arch).
    Images are stored class by class (stable), as our sets are; the metadata names every source with its sha256.
    """
    root, images_path = Path(root), Path(images_path)
    get_spec(dataset)  # a registered name, as in a config: never a path out of results/
    if not NAME.fullmatch(name):
        raise ValueError(f"--name '{name}' must be letters, digits and underscores (it becomes {EXTERNAL}:{name})")
    model = model or default_model(dataset)
    if not is_model_name(model):
        raise ValueError(f"unknown model '{model}' (see distillery.models.MODEL_NAMES)")
    prepared = root / Path(PATHS["meta"].format(dataset=dataset)).parent
    meta = load_meta(prepared)
    images = _tensor(images_path, "images")
    want = (meta["channels"], meta["size"], meta["size"])
    if images.dim() != 4 or tuple(images.shape[1:]) != want or not images.is_floating_point() or not len(images):
        raise ValueError(f"images {images_path} are {images.dtype} {list(images.shape)}; {dataset} needs float "
                         f"[N, {', '.join(map(str, want))}]")
    if not torch.isfinite(images).all():
        raise ValueError(f"images {images_path} hold non-finite values")
    images = images.float()
    labels = _labels(None if labels_path is None else Path(labels_path), len(images), meta["num_classes"])
    counts = torch.bincount(labels, minlength=meta["num_classes"])
    if (counts != counts[0]).any():
        raise ValueError(f"the set has {int(counts.min())}-{int(counts.max())} images per class; IPC must be the same "
                         f"for every class")
    lr_value, lr_source = _lr(lr)
    zca_path = root / PATHS["zca"].format(dataset=dataset)
    zca_check = None
    if zca_images is not None and not zca:
        raise ValueError("--zca-images checks a ZCA set's whitening; it needs --zca")
    if zca:
        if not zca_path.is_file():
            raise ValueError(f"--zca needs our ZCA of the prepared {dataset} ({zca_path}); fit it first: "
                             f"snakemake --cores 1 {PATHS['zca'].format(dataset=dataset)}")
        if zca_images is not None:
            pixels = _tensor(Path(zca_images), "--zca-images")
            if pixels.shape != images.shape:
                raise ValueError(f"--zca-images {zca_images} is {list(pixels.shape)}, the images {list(images.shape)}")
            diff = float((zca_invert(images, load_zca(zca_path)) - pixels.float()).abs().max())
            if not diff <= ZCA_TOLERANCE:
                raise ValueError(f"our ZCA of {dataset} un-whitens these images {diff:.3g} away from {zca_images} "
                                 f"(tolerance {ZCA_TOLERANCE}): the set was whitened differently; fit our ZCA on "
                                 f"the same training split or import without --zca")
            zca_check = {"path": str(Path(zca_images).resolve()), "max_abs_diff": diff}
    order = torch.sort(labels, stable=True).indices
    ipc = int(counts[0])
    method = f"{EXTERNAL}:{name}"
    sources = {"images": {"path": str(images_path.resolve()), "sha256": sha256_file(images_path)},
               "labels": None if labels_path is None else {"path": str(Path(labels_path).resolve()),
                                                           "sha256": sha256_file(labels_path)},
               "lr": lr_source}
    out = root / PATHS["synset"].format(method=method, dataset=dataset, ipc=ipc)
    if out.exists():
        raise ValueError(f"{out} exists; delete it to import again under this name")
    save_synset(out, images[order].contiguous(), labels[order].contiguous(), lr_value, None, {
        "method": method, "kind": EXTERNAL, "dataset": dataset, "dataset_sha256": meta["sha256"]["train.pt"],
        "num_classes": meta["num_classes"], "ipc": ipc, "model": model, "zca": zca, "format": FORMAT,
        "source": sources, "zca_sha256": sha256_file(zca_path) if zca else None, "zca_check": zca_check})
    return out
