"""ZCA whitening (kornia semantics: eps 0.1, unbiased covariance) and the map back to viewable pixels."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from distillery.io import save_torch


def fit_zca(images_uint8: Tensor, eps: float = 0.1) -> dict:
    """Fit ZCA on uint8 [N,C,H,W] images scaled to [0,1], with kornia.enhance.zca_mean (dim=0, unbiased).

    Fits on the images' device (move them to a GPU first to fit fast); the result is kept on the CPU.
    """
    from kornia.enhance import zca_mean

    n, *shape = images_uint8.shape
    flat = images_uint8.reshape(n, -1).float() / 255.0
    transform, mean, inverse = zca_mean(flat, dim=0, unbiased=True, eps=float(eps), return_inverse=True)
    return {"mean": mean.reshape(-1).cpu(), "transform": transform.cpu(), "inverse": inverse.cpu(),
            "eps": float(eps), "shape": [int(s) for s in shape]}


def save_zca(zca: dict, path: str | Path) -> None:
    """Save a fitted ZCA dict atomically."""
    save_torch(zca, path)


def load_zca(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """Load a ZCA dict saved by save_zca, with its tensors on `device` (once, rather than on every apply)."""
    zca = torch.load(path, map_location=device, weights_only=True)
    missing = {"mean", "transform", "inverse", "eps", "shape"} - set(zca)
    if missing:
        raise ValueError(f"{path} is not a ZCA file: missing {sorted(missing)}")
    return zca


def _check(x: Tensor, zca: dict) -> None:
    if list(x.shape[1:]) != list(zca["shape"]):
        raise ValueError(f"images of shape {list(x.shape[1:])} do not match the ZCA fit shape {zca['shape']}")


def zca_apply(x01: Tensor, zca: dict) -> Tensor:
    """Whiten [B,C,H,W] images in [0,1]: (x - mean) @ W, on x's device (differentiable in x)."""
    _check(x01, zca)
    mean = zca["mean"].to(x01.device, x01.dtype)
    transform = zca["transform"].to(x01.device, x01.dtype)
    return ((x01.reshape(len(x01), -1) - mean) @ transform).reshape(x01.shape)


def zca_invert(xw: Tensor, zca: dict) -> Tensor:
    """Undo zca_apply exactly: xw @ W^-1 + mean, back to the [0,1] pixel domain (not clamped)."""
    _check(xw, zca)
    mean = zca["mean"].to(xw.device, xw.dtype)
    inverse = zca["inverse"].to(xw.device, xw.dtype)
    return (xw.reshape(len(xw), -1) @ inverse + mean).reshape(xw.shape)


def _channel_stats(meta: dict, like: Tensor) -> tuple[Tensor, Tensor]:
    mean = torch.tensor(meta["mean"], device=like.device, dtype=like.dtype).reshape(1, -1, 1, 1)
    std = torch.tensor(meta["std"], device=like.device, dtype=like.dtype).reshape(1, -1, 1, 1)
    return mean, std


def normalise(x01: Tensor, meta: dict) -> Tensor:
    """Per-channel (x - mean) / std with the dataset's meta.json statistics."""
    mean, std = _channel_stats(meta, x01)
    return (x01 - mean) / std


def to_float(images_uint8: Tensor, meta: dict, zca: dict | None) -> Tensor:
    """uint8 images as the float32 the models see, on their device. Without zca: (x/255 - mean)/std per channel;
    with zca: x/255 then ZCA, and no mean/std (as the reference)."""
    x01 = images_uint8.float().div_(255.0)
    return zca_apply(x01, zca) if zca is not None else normalise(x01, meta)


def to_pixels(images: Tensor, meta: dict, zca: dict | None) -> Tensor:
    """Normalised (zca=None) or whitened images back to [0,1] pixels, clamped, for pictures."""
    if zca is not None:
        return zca_invert(images, zca).clamp(0, 1)
    mean, std = _channel_stats(meta, images)
    return (images * std + mean).clamp(0, 1)
