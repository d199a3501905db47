"""Raw dataset readers for array-shaped sources: scikit-learn digits, idx files, torchvision downloads."""
from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .registry import FASHION_MNIST_CLASSES

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist


class DataMissingError(FileNotFoundError):
    """The raw files of a dataset are not where they must be and could not be fetched."""


@dataclass
class RawSplits:
    """Both splits of a dataset as uint8 [N,C,H,W] images and int64 [N] labels, plus provenance for meta.json."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: list[str]
    info: dict = field(default_factory=dict)


def load_digits_splits(data_dir: Path) -> RawSplits:
    """scikit-learn's 8x8 digits (values 0..16 -> 0..255), split 75/25 stratified with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=0)
    return RawSplits(
        torch.from_numpy(images[train_idx]).contiguous(), torch.from_numpy(labels[train_idx]),
        torch.from_numpy(images[test_idx]).contiguous(), torch.from_numpy(labels[test_idx]),
        classes=[str(k) for k in range(10)],
        info={"source": "sklearn.datasets.load_digits, train_test_split(test_size=0.25, stratify, random_state=0)"},
    )


def read_idx(path: Path) -> np.ndarray:
    """Parse a uint8 idx file (gzipped or not) into an array of the shape its header declares."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 idx file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: header says {dims.tolist()}, found {data.size} values")
    return data.reshape(dims.tolist())


IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def find_idx_files(directory: Path) -> list[Path] | None:
    """The four MNIST-style idx files in `directory` (plain or .gz), or None unless all four are there."""
    found = []
    for stem in IDX_STEMS:
        candidates = [directory / stem, directory / f"{stem}.gz"]
        hit = next((p for p in candidates if p.is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found


def load_fashion_mnist_splits(data_dir: Path) -> RawSplits:
    """Fashion-MNIST from idx files in data_dir/fashion-mnist, else the Debian package path, else torchvision."""
    for directory in (data_dir / "fashion-mnist", DEBIAN_FASHION_MNIST):
        files = find_idx_files(directory)
        if files is not None:
            train_x, train_y, test_x, test_y = (torch.from_numpy(read_idx(p).copy()) for p in files)
            return RawSplits(train_x[:, None].contiguous(), train_y.long(), test_x[:, None].contiguous(), test_y.long(),
                             classes=list(FASHION_MNIST_CLASSES), info={"source": str(directory)})
    return load_torchvision_splits("fashion-mnist", data_dir)


# name -> (torchvision class, what torchvision expects under data_dir/<name>, the files or folders of it that may be
# there already: then a failure means they are corrupt or incomplete, not missing)
TORCHVISION_SOURCES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "mnist": ("MNIST", "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]", ("MNIST/raw",)),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] "
                                      "(or the four idx files directly in this folder)", ("FashionMNIST/raw",)),
    "cifar10": ("CIFAR10", "cifar-10-python.tar.gz or its extracted folder cifar-10-batches-py/",
                ("cifar-10-python.tar.gz", "cifar-10-batches-py")),
    "cifar100": ("CIFAR100", "cifar-100-python.tar.gz or its extracted folder cifar-100-python/",
                 ("cifar-100-python.tar.gz", "cifar-100-python")),
    "svhn": ("SVHN", "train_32x32.mat and test_32x32.mat", ("train_32x32.mat", "test_32x32.mat")),
}


def _arrays(dataset) -> tuple[Tensor, Tensor]:
    """Pull the whole image array and label vector out of a torchvision dataset, as uint8 NCHW and int64."""
    images = torch.as_tensor(np.asarray(dataset.data))
    if images.ndim == 3:  # MNIST-style [N,H,W]
        images = images[:, None]
    elif images.shape[-1] == 3:  # CIFAR-style [N,H,W,C]; SVHN is already [N,C,H,W]
        images = images.permute(0, 3, 1, 2)
    labels = dataset.targets if hasattr(dataset, "targets") else dataset.labels
    return images.contiguous(), torch.as_tensor(np.asarray(labels), dtype=torch.int64)


def load_torchvision_splits(name: str, data_dir: Path) -> RawSplits:
    """Load (downloading if needed) a torchvision dataset rooted at data_dir/<name>; failure -> DataMissingError."""
    import torchvision.datasets

    class_name, expected, present = TORCHVISION_SOURCES[name]
    root = data_dir / name
    cls = getattr(torchvision.datasets, class_name)
    try:
        if name == "svhn":
            train, test = (cls(root=str(root), split=s, download=True) for s in ("train", "test"))
        else:
            train, test = (cls(root=str(root), train=t, download=True) for t in (True, False))
    except Exception as err:  # files there but unusable (torchvision checks their md5), or absent and not downloaded
        found = [str(root / p) for p in present if (root / p).exists()]
        if found:
            raise DataMissingError(
                f"dataset {name!r}: {' and '.join(found)} is there but torchvision cannot use it: it is corrupt or "
                f"incomplete (torchvision checks its md5 and the files it needs), and downloading a fresh copy failed "
                f"({type(err).__name__}: {err}). Replace it with an intact copy of {expected} (or delete it, and "
                f"torchvision downloads it again) and rerun prepare."
            ) from err
        raise DataMissingError(
            f"dataset {name!r}: the raw files are not in {root} and the torchvision download failed "
            f"({type(err).__name__}: {err}). Put {expected} into {root} (torchvision.datasets.{class_name} layout) "
            f"and rerun prepare."
        ) from err
    train_x, train_y = _arrays(train)
    test_x, test_y = _arrays(test)
    classes = list(getattr(train, "classes", None) or [str(k) for k in range(int(train_y.max()) + 1)])
    return RawSplits(train_x, train_y, test_x, test_y, classes=classes,
                     info={"source": f"torchvision.datasets.{class_name}({root})"})
