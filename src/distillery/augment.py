"""Differentiable Siamese Augmentation (DSA) with the reference `ParamDiffAug` constants, batched on the device.

Each call picks ONE group of the strategy uniformly (the reference's mode 'S') and applies it to the whole batch
with independent per-sample parameters. All random numbers come from a CPU `torch.Generator` and are then moved
to the data's device, so a seed gives the same augmentation on CPU and GPU and drawing never syncs the device.
Replaying a generator state replays the augmentation (the "Siamese" use: same transform on two batches).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

from distillery.runtime import to_device

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"


@dataclass(frozen=True)
class DSAParams:
    """The reference augmentation strengths (DSA's ParamDiffAug)."""

    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0  # degrees
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5


# ---- deterministic ops: explicit per-sample parameters (1-D tensors of length B), differentiable in x ----

def _per_sample(v: Tensor, x: Tensor) -> Tensor:
    return to_device(v, x.device, x.dtype).view(-1, 1, 1, 1)


def brightness(x: Tensor, u: Tensor, strength: float = 1.0) -> Tensor:
    """x + (u - 0.5) * strength."""
    return x + (_per_sample(u, x) - 0.5) * strength


def saturation(x: Tensor, u: Tensor, strength: float = 2.0) -> Tensor:
    """Scale each pixel's deviation from its mean over channels by u * strength."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_per_sample(u, x) * strength) + mean


def contrast(x: Tensor, u: Tensor, strength: float = 0.5) -> Tensor:
    """Scale each image's deviation from its mean over (C, H, W) by u + strength."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_per_sample(u, x) + strength) + mean


def translate(x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """out[b, :, i, j] = x[b, :, i + dy[b], j + dx[b]], zero outside the image (integer shifts, one gather)."""
    b, _, h, w = x.shape
    dy, dx = to_device(dy, x.device, torch.long).view(b, 1, 1), to_device(dx, x.device, torch.long).view(b, 1, 1)
    # a 1-px zero border; indices that leave the image are clamped onto it
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # [B, H+2, W+2, C]
    rows = (torch.arange(1, h + 1, device=x.device).view(1, h, 1) + dy).clamp(0, h + 1)
    cols = (torch.arange(1, w + 1, device=x.device).view(1, 1, w) + dx).clamp(0, w + 1)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def cutout(x: Tensor, cy: Tensor, cx: Tensor, side: int) -> Tensor:
    """Zero a side x side square per image: rows cy - side//2 onwards (likewise cols), clipped at the borders."""
    _, _, h, w = x.shape
    top = (to_device(cy, x.device, torch.long) - side // 2).view(-1, 1)
    left = (to_device(cx, x.device, torch.long) - side // 2).view(-1, 1)
    rows = torch.arange(h, device=x.device).view(1, h)
    cols = torch.arange(w, device=x.device).view(1, w)
    in_rows = (rows >= top) & (rows < top + side)  # [B, H]
    in_cols = (cols >= left) & (cols < left + side)  # [B, W]
    keep = ~(in_rows.unsqueeze(2) & in_cols.unsqueeze(1))
    return x * keep.unsqueeze(1).to(x.dtype)


def flip(x: Tensor, mask: Tensor) -> Tensor:
    """Horizontally flip the images where `mask` (bool, [B]) is true."""
    return torch.where(to_device(mask, x.device).view(-1, 1, 1, 1), x.flip(3), x)


def affine(x: Tensor, theta: Tensor) -> Tensor:
    """Resample each image through its 2x3 affine matrix (bilinear, zero padding, align_corners=True)."""
    theta = to_device(theta, x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def scale_theta(sx: Tensor, sy: Tensor) -> Tensor:
    """[B, 2, 3] matrices scaling the sampling grid by sx horizontally and sy vertically."""
    zero = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1)


def rotate_theta(angle: Tensor) -> Tensor:
    """[B, 2, 3] matrices [[cos a, −sin a, 0], [sin a, cos a, 0]] (angles in radians), as MTT's rand_rotate builds
    them (utils.py:572-573): the sampling grid turned by a, the image by −a."""
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    return torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)


# ---- random groups: draw parameters on the CPU from the generator, then apply ----

def _rand(n: int, g: torch.Generator) -> Tensor:
    return torch.rand(n, generator=g)


def _color(x: Tensor, g: torch.Generator, p: DSAParams) -> Tensor:
    n = x.shape[0]
    x = brightness(x, _rand(n, g), p.brightness)
    x = saturation(x, _rand(n, g), p.saturation)
    return contrast(x, _rand(n, g), p.contrast)


def _crop(x: Tensor, g: torch.Generator, p: DSAParams) -> Tensor:
    n, _, h, w = x.shape
    sy, sx = int(h * p.ratio_crop_pad + 0.5), int(w * p.ratio_crop_pad + 0.5)
    dy = torch.randint(-sy, sy + 1, (n,), generator=g)
    dx = torch.randint(-sx, sx + 1, (n,), generator=g)
    return translate(x, dy, dx)


def _cutout(x: Tensor, g: torch.Generator, p: DSAParams) -> Tensor:
    n, _, h, w = x.shape
    side = int(h * p.ratio_cutout + 0.5)
    # centres range over 0..H-1 for odd sides and 0..H for even ones, so clipping is symmetric at both borders
    cy = torch.randint(0, h + 1 - side % 2, (n,), generator=g)
    cx = torch.randint(0, w + 1 - side % 2, (n,), generator=g)
    return cutout(x, cy, cx, side)


def _flip(x: Tensor, g: torch.Generator, p: DSAParams) -> Tensor:
    return flip(x, _rand(x.shape[0], g) < p.prob_flip)


def _scale(x: Tensor, g: torch.Generator, p: DSAParams) -> Tensor:
    n, lo, hi = x.shape[0], 1.0 / p.ratio_scale, p.ratio_scale
    sx = _rand(n, g) * (hi - lo) + lo
    sy = _rand(n, g) * (hi - lo) + lo
    return affine(x, scale_theta(sx, sy))


def _rotate(x: Tensor, g: torch.Generator, p: DSAParams) -> Tensor:
    angle = (_rand(x.shape[0], g) - 0.5) * 2 * p.ratio_rotate / 180 * math.pi  # utils.py:571's order of operations
    return affine(x, rotate_theta(angle))


GROUPS: dict[str, Callable[[Tensor, torch.Generator, DSAParams], Tensor]] = {
    "color": _color, "crop": _crop, "cutout": _cutout, "flip": _flip, "scale": _scale, "rotate": _rotate,
}


def parse_strategy(strategy: str) -> list[str]:
    """The groups of an underscore-separated strategy ('' or 'none' -> no groups); unknown names raise."""
    if strategy in ("", "none"):
        return []
    groups = strategy.split("_")
    unknown = [name for name in groups if name not in GROUPS]
    if unknown:
        raise ValueError(f"unknown DSA group(s) {unknown} in strategy '{strategy}'; "
                         f"allowed groups: {', '.join(GROUPS)} (or '' / 'none')")
    return groups


def dsa(x: Tensor, generator: torch.Generator, strategy: str = DEFAULT_STRATEGY,
        params: DSAParams = DSAParams()) -> Tensor:
    """Augment a batch [B, C, H, W] with one randomly chosen group of `strategy` (per-sample parameters)."""
    groups = parse_strategy(strategy)
    if not groups:
        return x
    choice = groups[int(torch.randint(len(groups), (1,), generator=generator))]
    return GROUPS[choice](x, generator, params)
