"""Aggregate per-seed evaluation results into mean ± std per (method, dataset, IPC, architecture)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from distillery.io import atomic_path, load_json

COLUMNS = ["method", "dataset", "ipc", "arch", "mean", "std", "n"]
KEYS = ["method", "dataset", "ipc", "arch"]
ALIGN = ("left", "left", "right", "left", "right", "right", "right")
PROTOCOL = ("Test accuracy (%) of freshly initialised networks trained on each synthetic set, read after the "
            "final epoch (no test-set selection); mean ± std (population std) over n evaluation seeds.")


def aggregate(records: Iterable[dict]) -> pd.DataFrame:
    """One row per (method, dataset, ipc, arch) in first-seen order; accuracy in percent."""
    frame = pd.DataFrame(list(records))
    if frame.empty:
        raise ValueError("no evaluation results to aggregate")
    frame["accuracy"] = frame["accuracy"] * 100
    grouped = frame.groupby(KEYS, sort=False)["accuracy"]
    table = grouped.agg(mean="mean", std=lambda a: a.std(ddof=0), n="count").reset_index()
    return table[COLUMNS]


def to_markdown(table: pd.DataFrame, title: str) -> str:
    shown = table.assign(mean=table["mean"].map("{:.2f}".format), std=table["std"].map("{:.2f}".format))
    return f"## {title}\n\n{shown.to_markdown(index=False, disable_numparse=True, colalign=ALIGN)}\n\n{PROTOCOL}\n"


def write_table(result_paths: Iterable[str | Path], csv_path: str | Path, md_path: str | Path, title: str) -> pd.DataFrame:
    """Read evaluation JSONs, write the aggregated table as CSV and Markdown (atomically); return it."""
    table = aggregate(load_json(p) for p in result_paths)
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(md_path) as tmp:
        tmp.write_text(to_markdown(table, title))
    return table
