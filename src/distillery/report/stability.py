"""ATT's stability study (Liu et al. 2024, §4.4, Fig. 4 right): successful runs per method, parameter and
multiplier, as CSV, Markdown and a bar chart."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from distillery.io import atomic_path, load_json
from distillery.report.figures import _save
from distillery.report.tables import markdown_text, write_text

COLUMNS = ["method", "parameter", "multiplier", "successes", "runs"]
KEYS = ["method", "parameter", "multiplier"]
PANELS = ("lr_lr", "lr_img")  # ATT Fig. 4's order; any other parameter follows
NOTE = ("A run succeeds when it finishes all its distillation iterations with a finite matching loss and a positive "
        "learned learning rate; it fails when the loss becomes non-finite (diverges) or the learned learning rate "
        "becomes zero or negative (ATT §4.4). Each cell multiplies one parameter of the method's settings by the "
        "multiplier and changes nothing else; its runs differ only by seed.")


def stability_counts(records: list[dict]) -> pd.DataFrame:
    """Successes and runs per (method, parameter, multiplier), sorted by parameter, multiplier, then method in
    first-seen order. The same (method, parameter, multiplier, seed) twice is an error."""
    frame = pd.DataFrame(list(records))
    if frame.empty:
        raise ValueError("no stability records to count")
    missing = [c for c in KEYS + ["success"] if c not in frame]
    if missing:
        raise ValueError(f"stability records lack {', '.join(missing)}")
    if "seed" in frame and frame.duplicated(KEYS + ["seed"]).any():
        raise ValueError("stability records repeat a (method, parameter, multiplier, seed); each run counts once")
    frame = frame.assign(success=frame["success"].astype(bool), multiplier=frame["multiplier"].astype(float))
    counts = (frame.groupby(KEYS, sort=False)["success"].agg(successes="sum", runs="size").reset_index()
              .astype({"successes": int, "runs": int}))
    rank = {method: i for i, method in enumerate(frame["method"].unique())}
    counts = counts.sort_values(["parameter", "multiplier", "method"], kind="stable",
                                key=lambda col: col.map(rank) if col.name == "method" else col)
    return counts[COLUMNS].reset_index(drop=True)


def multiplier_label(value: float) -> str:
    return f"×{value:g}"


def to_markdown(counts: pd.DataFrame, title: str, iterations: Iterable[int] = ()) -> str:
    """`## title`, per parameter a table (rows: method, columns: multiplier, cells: successes/runs), the note (the title
    and methods escaped: markdown_text)."""
    parts = [f"## {markdown_text(title)}"]
    for parameter, rows in counts.groupby("parameter", sort=False):
        grid = rows.assign(cell=rows["successes"].astype(str) + "/" + rows["runs"].astype(str),
                           column=rows["multiplier"].map(multiplier_label))
        grid = grid.pivot(index="method", columns="column", values="cell")
        grid = grid.reindex(index=rows["method"].unique(), columns=rows["multiplier"].map(multiplier_label).unique())
        table = grid.fillna("").rename_axis(index="method", columns=None).reset_index()
        table["method"] = table["method"].map(markdown_text)
        parts.append(f"### {parameter}\n\n" + table.to_markdown(index=False, disable_numparse=True,
                                                                 colalign=["left"] + ["right"] * grid.shape[1]))
    note, iterations = NOTE, sorted(set(iterations))
    if iterations:
        note += f" Distillation iterations per run: {', '.join(str(i) for i in iterations)}."
    return "\n\n".join(parts + [note]) + "\n"


def write_stability(record_paths: Iterable[str | Path], csv_path: str | Path, md_path: str | Path,
                    title: str) -> pd.DataFrame:
    """Read the trial JSONs (stability_trial), count them, write CSV and Markdown atomically."""
    records = [load_json(path) for path in record_paths]
    counts = stability_counts(records)
    with atomic_path(csv_path) as tmp:
        counts.to_csv(tmp, index=False)
    write_text(md_path, to_markdown(counts, title, [r["iterations"] for r in records if "iterations" in r]))
    return counts


def plot_stability(csv_path: str | Path, out_path: str | Path, title: str = "") -> None:
    """ATT Fig. 4 right: per parameter a panel of bars, x = multiplier, hue = method, y = successful runs."""
    counts = pd.read_csv(csv_path)
    if counts.empty:
        raise ValueError(f"no stability counts in {csv_path}")
    found = list(counts["parameter"].unique())
    panels = [p for p in PANELS if p in found] + [p for p in found if p not in PANELS]
    methods = list(counts["method"].unique())
    colors = dict(zip(methods, sns.color_palette(n_colors=len(methods))))
    runs = int(counts["runs"].max())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for i, (ax, parameter) in enumerate(zip(axes[0], panels)):
        rows = counts[counts["parameter"] == parameter].sort_values("multiplier")
        rows = rows.assign(label=rows["multiplier"].map(multiplier_label))
        sns.barplot(data=rows, x="label", y="successes", hue="method", hue_order=methods, palette=colors,
                    order=list(rows["label"].unique()), errorbar=None, legend=i == len(panels) - 1, ax=ax)
        for bars in ax.containers:
            ax.bar_label(bars, fmt="%d", fontsize=7)  # a 0 shows where no bar does
        ax.set(xlabel="multiplier", ylabel=f"successful runs (of {runs})", ylim=(0, runs))
        ax.set_title(parameter, pad=10)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out_path)
