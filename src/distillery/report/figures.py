"""Figures, each saved as PNG and PDF side by side: a grid of distilled images (one row per class), the loss
and learned-lr curves, accuracy vs IPC, the cross-architecture heat map, expert-trajectory smoothness and
ATT's matched steps."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from distillery.data import load_meta, load_zca, to_pixels  # noqa: E402
from distillery.io import atomic_path, load_json  # noqa: E402
from distillery.synset import load_synset  # noqa: E402


FORMATS = {".png": {}, ".pdf": {"CreationDate": None}}  # the PDF without a timestamp: same input, same bytes


def _save(fig: plt.Figure, path: str | Path) -> None:
    """Write `fig` as <stem>.png and <stem>.pdf beside each other (each atomically), then close it."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise ValueError(f"figure path must end in .png or .pdf, got {path.name!r}")
    try:
        for suffix, metadata in FORMATS.items():
            with atomic_path(path.with_suffix(suffix)) as tmp:
                fig.savefig(tmp, format=suffix[1:], dpi=150, bbox_inches="tight", metadata=metadata)
    finally:
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


def plot_distillation(synset_path: str | Path, prepared_dir: str | Path, images_path: str | Path,
                      log_csv: str | Path, curves_path: str | Path, title: str = "",
                      zca_path: str | Path | None = None) -> None:
    """A logged distillation's two figures, its images and its curves: one job, so Python, torch and matplotlib
    start once per distillation rather than once per figure."""
    plot_images(synset_path, prepared_dir, images_path, zca_path=zca_path)
    plot_curves(log_csv, curves_path, title=title)


def panel_labels(table: pd.DataFrame) -> pd.Series:
    """Panel of each row: the dataset, or 'dataset · arch' when the table holds several architectures."""
    if table["arch"].nunique() > 1:
        return table["dataset"] + " · " + table["arch"]
    return table["dataset"].copy()


def _log_ipc_axis(ax: plt.Axes, ipcs: list[int]) -> None:
    """Log-scaled x axis ticked at exactly the IPCs shown."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ipcs))
    ax.xaxis.set_major_formatter(FixedFormatter([str(i) for i in ipcs]))
    ax.xaxis.set_minor_locator(NullLocator())


def plot_accuracy_vs_ipc(table: pd.DataFrame, out_path: str | Path, title: str = "") -> None:
    """Mean accuracy vs IPC (log x at the actual IPCs), one line per method, std error bars, one panel per dataset."""
    if table.empty:
        raise ValueError("no rows to plot accuracy vs IPC")
    data = table.assign(panel=panel_labels(table))
    panels, methods = data["panel"].unique(), data["method"].unique()
    colors = dict(zip(methods, sns.color_palette(n_colors=len(methods))))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for i, (ax, panel) in enumerate(zip(axes[0], panels)):
        rows = data[data["panel"] == panel].sort_values("ipc")
        sns.lineplot(data=rows, x="ipc", y="mean", hue="method", hue_order=methods, palette=colors, marker="o",
                     errorbar=None, legend=i == 0, ax=ax)
        for method, group in rows.groupby("method", sort=False):
            ax.errorbar(group["ipc"], group["mean"], yerr=group["std"].fillna(0), fmt="none",
                        ecolor=colors[method], capsize=3)
        _log_ipc_axis(ax, sorted(rows["ipc"].unique()))
        ax.set(title=panel, xlabel="images per class", ylabel="test accuracy (%)")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out_path)


def cross_arch_grid(table: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy with rows = method (+ IPC, + dataset when several) and columns = arch, in first-seen order."""
    labels = table["method"].astype(str)
    if table["ipc"].nunique() > 1:
        labels = labels + " · IPC " + table["ipc"].astype(str)
    if table["dataset"].nunique() > 1:
        labels = labels + " · " + table["dataset"].astype(str)
    grid = table.assign(row=labels).pivot(index="row", columns="arch", values="mean")
    return grid.reindex(index=labels.unique(), columns=table["arch"].unique()).rename_axis(index=None, columns=None)


def plot_cross_arch(table: pd.DataFrame, out_path: str | Path, title: str = "") -> None:
    """Heat map of mean accuracy: rows = method (or method · IPC), columns = evaluation architecture."""
    if table.empty:
        raise ValueError("no rows to plot the cross-architecture heat map")
    grid = cross_arch_grid(table)
    fig, ax = plt.subplots(figsize=(1.4 * grid.shape[1] + 2.5, 0.5 * grid.shape[0] + 1.5))
    sns.heatmap(grid, annot=True, fmt=".1f", cmap="viridis", cbar_kws={"label": "test accuracy (%)"}, ax=ax)
    ax.set(xlabel="evaluation architecture", ylabel="", title=title)
    ax.tick_params(axis="y", rotation=0)
    fig.tight_layout()
    _save(fig, out_path)


def smoothness_frame(stats: dict[str, dict]) -> pd.DataFrame:
    """Long frame (experts, epoch, change, accuracy) from {label: {path: stats.json of run_expert_stats}}."""
    rows = []
    for label, source in stats.items():
        data = load_json(source["path"])
        for k, (changes, accs) in enumerate(zip(data["epoch_changes"], data["test_accuracy"])):
            rows += [{"experts": label, "expert": k, "epoch": e + 1, "change": change, "accuracy": 100 * accs[e + 1]}
                     for e, change in enumerate(changes)]
    if not rows:
        raise ValueError("no expert statistics to plot")
    return pd.DataFrame(rows)


def plot_smoothness(stats: dict[str, dict], out_path: str | Path, title: str = "") -> None:
    """AST Figure 9: per epoch, ‖θ_(e+1) − θ_e‖² (log scale) and the snapshot's test accuracy, one line per kind
    of expert (mean over experts, band: ± std)."""
    data = smoothness_frame(stats)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    sns.lineplot(data=data, x="epoch", y="change", hue="experts", errorbar="sd", ax=axes[0])
    sns.lineplot(data=data, x="epoch", y="accuracy", hue="experts", errorbar="sd", legend=False, ax=axes[1])
    axes[0].set(yscale="log", ylabel="‖θ(e+1) − θ(e)‖²")
    axes[1].set(ylabel="test accuracy (%)")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out_path)


def plot_match_steps(logs: dict[str, dict], out_path: str | Path, title: str = "") -> None:
    """ATT Figure 4 (left): the student step matched in each iteration (log.csv `match_step`), one line per
    distillation, with its bound N_s dashed (where a fixed-length method always matches)."""
    rows = []
    for label, source in logs.items():
        log = pd.read_csv(source["path"])
        rows.append(log[["iteration", "match_step"]].assign(run=label, bound=source["syn_steps"]))
    if not rows:
        raise ValueError("no distillation logs to plot match steps from")
    data = pd.concat(rows, ignore_index=True)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    sns.lineplot(data=data, x="iteration", y="match_step", hue="run", ax=ax)
    colors = dict(zip(data["run"].unique(), sns.color_palette(n_colors=data["run"].nunique())))
    for label, bound in data.groupby("run", sort=False)["bound"].first().items():
        ax.axhline(bound, color=colors[label], linestyle="--", linewidth=1)
    ax.set(ylabel="matched student step", title=title)
    fig.tight_layout()
    _save(fig, out_path)


TABLE_PLOTS = {"accuracy_vs_ipc": plot_accuracy_vs_ipc, "cross_arch": plot_cross_arch}
SOURCE_PLOTS = {"smoothness": plot_smoothness, "match_steps": plot_match_steps}
FIGURES = (*TABLE_PLOTS, *SOURCE_PLOTS)


def plot_table(kind: str, csv_path: str | Path, out_path: str | Path, title: str = "",
               sources: dict[str, dict] | None = None) -> None:
    """Draw figure `kind` of a table: accuracy_vs_ipc | cross_arch from its CSV (written by write_table), or
    smoothness | match_steps from `sources` (distillery.plan.figure_sources: expert stats or distillation logs)."""
    if kind not in FIGURES:
        raise ValueError(f"figure must be one of {', '.join(FIGURES)}, got {kind!r}")
    if kind in SOURCE_PLOTS:
        SOURCE_PLOTS[kind](sources or {}, out_path, title)
    else:
        TABLE_PLOTS[kind](pd.read_csv(csv_path), out_path, title)
