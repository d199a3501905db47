"""Raw dataset readers for image-file trees: Tiny ImageNet, the 128 px ImageNet subsets, ImageNet at 64 px."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .registry import IMAGENET_SUBSET_NAMES, IMAGENET_SUBSETS
from .sources import DataMissingError, RawSplits

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _decode_one(path: Path, size: int) -> np.ndarray:
    """One image as uint8 [3,size,size]: RGB; if not already size x size, the whole image is resized to exactly
    size x size (aspect not kept, nothing cropped), bilinear on the [0,1] tensor without antialiasing.

    That is the references' ImageNet transform (MTT utils.py get_dataset: ToTensor, Normalize, then
    Resize(im_size) with the tuple im_size = (128, 128), a tensor resize that squashes, so its CenterCrop
    is a no-op; torchvision 0.12 did not antialias tensors). Normalising first commutes with the resize.
    """
    import torchvision.transforms.functional as TF

    with Image.open(path) as img:
        pixels = np.asarray(img.convert("RGB")).transpose(2, 0, 1)
    if pixels.shape[1:] == (size, size):
        return pixels
    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).float().div_(255)
    tensor = TF.resize(tensor, [size, size], interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
    return tensor.mul_(255).round_().clamp_(0, 255).to(torch.uint8).numpy()


def decode_images(paths: list[Path], size: int) -> Tensor:
    """Decode image files into one preallocated uint8 [N,3,size,size] tensor (threads: PIL releases the GIL)."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def fill(i: int) -> None:
        out[i] = _decode_one(paths[i], size)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(fill, range(len(paths))))
    return torch.from_numpy(out)


def image_files(directory: Path) -> list[Path]:
    """All image files below `directory` (any depth), sorted so the order never depends on the file system."""
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def subdirs(directory: Path) -> list[str]:
    """Sorted names of the sub-folders of `directory` (empty if it does not exist)."""
    return sorted(d.name for d in directory.iterdir() if d.is_dir()) if directory.is_dir() else []


def scan_classes(root: Path, folders: list[str], labels: list[int]) -> tuple[list[Path], Tensor]:
    """Files of root/<folder> for each folder with the given label; a folder without images is an error."""
    paths: list[Path] = []
    counts: list[int] = []
    for folder in folders:
        files = image_files(root / folder)
        if not files:
            raise FileNotFoundError(f"no image files in {root / folder}")
        paths += files
        counts.append(len(files))
    return paths, torch.repeat_interleave(torch.tensor(labels, dtype=torch.int64), torch.tensor(counts))


# --- Tiny ImageNet -------------------------------------------------------------------------------------------

def _tiny_missing(root: Path, problem: str) -> DataMissingError:
    return DataMissingError(
        f"dataset 'tiny-imagenet': {problem}. It cannot be downloaded automatically; unzip tiny-imagenet-200.zip "
        f"(http://cs231n.stanford.edu/tiny-imagenet-200.zip) so that this layout exists:\n"
        f"  {root}/train/<wnid>/images/*.JPEG      one folder per class (200 in the full set)\n"
        f"  {root}/val/images/*.JPEG and {root}/val/val_annotations.txt   (stock flat layout: file<TAB>wnid...)\n"
        f"  or {root}/val/<wnid>/*.JPEG (or {root}/val/images/<wnid>/*.JPEG)   (re-organised layout)"
    )


def _tiny_val(val: Path, wnids: list[str], root: Path) -> tuple[list[Path], Tensor]:
    """Tiny ImageNet val split in either the stock flat layout (annotations file) or class sub-folders."""
    index = {w: i for i, w in enumerate(wnids)}
    annotations = val / "val_annotations.txt"
    flat = val / "images"
    if annotations.is_file() and flat.is_dir() and not subdirs(flat):
        paths, labels = [], []
        for line in annotations.read_text().splitlines():
            if not line.strip():
                continue
            filename, wnid = line.split("\t")[:2]
            if wnid not in index:
                raise _tiny_missing(root, f"{annotations} names class {wnid!r}, which has no folder in {root}/train")
            paths.append(flat / filename)
            labels.append(index[wnid])
        absent = [p for p in paths if not p.is_file()]
        if absent:
            raise _tiny_missing(root, f"{len(absent)} files listed in {annotations} are missing, e.g. {absent[0]}")
        return paths, torch.tensor(labels, dtype=torch.int64)
    class_root = flat if subdirs(flat) else val
    folders = subdirs(class_root)
    if not folders or not set(folders) <= set(index):
        raise _tiny_missing(root, f"{val} has neither val_annotations.txt + images/ nor class folders named by "
                                  f"the train wnids (found {folders[:5]})")
    try:
        return scan_classes(class_root, folders, [index[w] for w in folders])
    except FileNotFoundError as err:
        raise _tiny_missing(root, str(err)) from err


def load_tiny_imagenet_splits(data_dir: Path) -> RawSplits:
    """Tiny ImageNet from data_dir/tiny-imagenet-200: classes are the sorted train wnids, test is the val split."""
    root = data_dir / "tiny-imagenet-200"
    wnids = subdirs(root / "train")
    if len(wnids) < 2:
        raise _tiny_missing(root, f"{root / 'train'} does not exist or has fewer than 2 class folders")
    if not (root / "val").is_dir():
        raise _tiny_missing(root, f"{root / 'val'} does not exist")
    try:
        train_paths, train_labels = scan_classes(root / "train", wnids, list(range(len(wnids))))
    except FileNotFoundError as err:
        raise _tiny_missing(root, str(err)) from err
    test_paths, test_labels = _tiny_val(root / "val", wnids, root)
    return RawSplits(decode_images(train_paths, 64), train_labels, decode_images(test_paths, 64), test_labels,
                     classes=wnids, info={"source": str(root), "wnids": wnids})


# --- ImageNet-1k subsets at 128 px and ImageNet-1k at 64 px ---------------------------------------------------

def _imagenet_missing(name: str, root: Path, problem: str, layout: str) -> DataMissingError:
    return DataMissingError(
        f"dataset {name!r}: {problem}. ImageNet cannot be downloaded automatically; place it so that this "
        f"layout exists:\n{layout}"
    )


def load_imagenet_subset_splits(name: str, data_dir: Path) -> RawSplits:
    """A 10-class ImageNet subset from ImageFolder trees of full ImageNet, each image resized whole to 128x128."""
    root = data_dir / "imagenet"
    layout = (f"  {root}/train/<wnid>/*.JPEG   all 1000 ImageNet-1k class folders (class i = i-th wnid in sorted order)\n"
              f"  {root}/val/<wnid>/*.JPEG     the val images sorted into the same class folders")
    wnids = subdirs(root / "train")
    if len(wnids) != 1000:
        raise _imagenet_missing(name, root, f"{root / 'train'} has {len(wnids)} class folders, expected 1000", layout)
    chosen = [wnids[i] for i in IMAGENET_SUBSETS[name]]
    labels = list(range(len(chosen)))
    try:
        train_paths, train_labels = scan_classes(root / "train", chosen, labels)
        test_paths, test_labels = scan_classes(root / "val", chosen, labels)
    except FileNotFoundError as err:
        raise _imagenet_missing(name, root, str(err), layout) from err
    return RawSplits(decode_images(train_paths, 128), train_labels, decode_images(test_paths, 128), test_labels,
                     classes=list(IMAGENET_SUBSET_NAMES[name]), info={"source": str(root), "wnids": chosen})


def load_imagenet64_splits(data_dir: Path) -> RawSplits:
    """ImageNet-1k pre-resized to 64 px, as ImageFolder trees; classes are the sorted train folder names."""
    root = data_dir / "imagenet-64"
    layout = f"  {root}/train/<class>/<image>   and   {root}/val/<class>/<image>   (images already 64x64)"
    classes = subdirs(root / "train")
    val_classes = subdirs(root / "val")
    if len(classes) < 2 or not val_classes or not set(val_classes) <= set(classes):
        raise _imagenet_missing("imagenet-64", root, f"{root}/train needs class folders and {root}/val a subset "
                                                     f"of them (found {len(classes)} and {len(val_classes)})", layout)
    index = {c: i for i, c in enumerate(classes)}
    try:
        train_paths, train_labels = scan_classes(root / "train", classes, list(range(len(classes))))
        test_paths, test_labels = scan_classes(root / "val", val_classes, [index[c] for c in val_classes])
    except FileNotFoundError as err:
        raise _imagenet_missing("imagenet-64", root, str(err), layout) from err
    return RawSplits(decode_images(train_paths, 64), train_labels, decode_images(test_paths, 64), test_labels,
                     classes=classes, info={"source": str(root)})
