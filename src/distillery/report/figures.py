"""Figures: a grid of distilled images (one row per class) and the loss and learned-lr curves."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from distillery.io import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=150, bbox_inches="tight")
    plt.close(fig)


def image_grid(images: torch.Tensor, rows: int, pad: int = 1) -> torch.Tensor:
    """[rows*cols, C, H, W] pixels in [0, 1] -> one [H', W', C] picture with white gutters."""
    cols = len(images) // rows
    padded = F.pad(images, (pad, pad, pad, pad), value=1.0)
    _, c, h, w = padded.shape
    return padded.view(rows, cols, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, cols * w, c)


def plot_images(synset_path: str | Path, prepared_dir: str | Path, out_path: str | Path,
                zca_path: str | Path | None = None, max_per_class: int = 10) -> None:
    """Distilled images as pixels (normalisation or ZCA undone), one row per class."""
    from distillery.data import load_meta, load_zca, to_pixels
    from distillery.distill.run import load_synset

    synset = load_synset(synset_path)
    meta = load_meta(prepared_dir)
    zca = load_zca(zca_path) if synset["meta"]["zca"] else None
    ipc, classes = synset["meta"]["ipc"], meta["num_classes"]
    per_class = min(ipc, max_per_class)
    images = synset["images"].view(classes, ipc, *synset["images"].shape[1:])[:, :per_class].flatten(0, 1)
    grid = image_grid(to_pixels(images, meta, zca), rows=classes)
    fig, ax = plt.subplots(figsize=(max(2, per_class * 0.6), max(2, classes * 0.6)))
    ax.imshow(grid.squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{synset['meta']['method']} · {meta['name']} · IPC {ipc}")
    _save(fig, out_path)


def plot_curves(log_csv: str | Path, out_path: str | Path, title: str = "") -> None:
    """Matching loss and learned learning rate per distillation iteration."""
    log = pd.read_csv(log_csv)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    sns.lineplot(data=log, x="iteration", y="loss", ax=axes[0])
    sns.lineplot(data=log, x="iteration", y="lr", ax=axes[1])
    axes[0].set_ylabel("matching loss")
    axes[1].set_ylabel("learned lr")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out_path)
