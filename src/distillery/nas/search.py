"""Architecture search with a proxy: train one architecture on a data source (a synthetic set, or the real
training split) under the evaluation protocol and record its test accuracy and time; then rank-correlate each
source's search with the reference ranking and total its search time (FTD Table 5, APM Table 3)."""
from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from distillery.data import load_meta, load_split
from distillery.evaluate import EvalConfig, evaluate, evaluate_synset
from distillery.io import atomic_path, load_json
from distillery.nas.rank import top_k_spearman
from distillery.nas.space import read_ground_truth
from distillery.progress import log
from distillery.report.tables import markdown_text, write_text

REAL = "real"  # the source name of the real training split


def train_architecture(source: str, synset_path: str | Path | None, prepared_dir: str | Path, arch: str, seed: int,
                       cfg: EvalConfig, zca_path: str | Path | None = None, device: str = "cpu") -> dict:
    """Test accuracy of a fresh `arch` trained on `source` (its synset file; None for the real training split,
    at cfg.default_lr), and the seconds it took (training and testing; a synset's loading too); JSON-ready."""
    tic = time.perf_counter()
    if synset_path is not None:
        result = evaluate_synset(synset_path, prepared_dir, arch, seed, cfg, zca_path=zca_path, device=device)
        images = result["ipc"] * load_meta(prepared_dir)["num_classes"]
    else:
        train_images, train_labels = load_split(prepared_dir, "train", device=device)
        test_images, test_labels = load_split(prepared_dir, "test", device=device)
        tic = time.perf_counter()
        num_classes = load_meta(prepared_dir)["num_classes"]
        accuracy = evaluate(train_images, train_labels, None, arch, test_images, test_labels, num_classes, seed, cfg)
        result, images = {"accuracy": accuracy, "lr": cfg.default_lr, "eval": asdict(cfg)}, len(train_images)
        log.info("%s on the real training split, seed %d: test accuracy %.2f%%", arch, seed, 100 * accuracy)
    seconds = time.perf_counter() - tic
    return {"source": source, "arch": arch, "seed": seed, "accuracy": result["accuracy"], "lr": result["lr"],
            "images": images, "seconds": seconds, "eval": result["eval"]}


def top_label(k: int | None) -> str:
    return "spearman" if k is None else f"top{k}"


def nas_summary(records: Iterable[dict], sources: Sequence[str], top: Sequence[int] = (),
                truth: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per source: its training images, architectures searched, Spearman of its ranking with the
    reference (`truth`, else the real source's accuracies) over each proxy top k (all when `top` is empty),
    and the total search minutes."""
    accuracy: dict[str, dict[str, float]] = {s: {} for s in sources}
    images: dict[str, int] = {}
    seconds: dict[str, float] = {s: 0.0 for s in sources}
    for record in records:
        if record["source"] not in accuracy:
            raise ValueError(f"result for source '{record['source']}', which is not one of {', '.join(sources)}")
        accuracy[record["source"]][record["arch"]] = 100 * record["accuracy"]
        images[record["source"]] = record["images"]
        seconds[record["source"]] += record["seconds"]
    if truth is None:
        if REAL not in accuracy:
            raise ValueError(f"without ground-truth accuracies the reference is the '{REAL}' source; add it to "
                             f"the study's sources")
        truth = accuracy[REAL]
    ks = list(top) or [None]
    rows = []
    for source in sources:
        archs = accuracy[source]
        if not archs:
            raise ValueError(f"no results for source '{source}'")
        missing = sorted(set(archs) - set(truth))
        if missing:
            raise ValueError(f"source '{source}': no reference accuracy for {', '.join(missing[:5])}")
        row = {"source": source, "images": images[source], "architectures": len(archs)}
        for k in ks:
            row[top_label(k)] = top_k_spearman(archs, {a: truth[a] for a in archs}, k)[0]
        row["minutes"] = seconds[source] / 60
        rows.append(row)
    return pd.DataFrame(rows)


def accuracies(records: Iterable[dict]) -> pd.DataFrame:
    """Per-architecture test accuracy (%) and seconds, one row per (source, arch)."""
    return pd.DataFrame([{"source": r["source"], "arch": r["arch"], "accuracy": 100 * r["accuracy"],
                          "seconds": r["seconds"]} for r in records])


def summary_markdown(summary: pd.DataFrame, title: str, reference: str) -> str:
    body = summary.copy()
    body["source"] = body["source"].map(markdown_text)
    for column in body.columns[3:-1]:
        body[column] = [("n/a" if math.isnan(v) else f"{v:.2f}") for v in body[column]]
    body["minutes"] = [f"{v:,.1f}" for v in body["minutes"]]
    note = (f"Spearman's rank correlation with {reference}: `topK` over the K architectures the source ranks "
            f"highest (fewer when fewer were searched), `spearman` over all; minutes = the search's total training "
            f"and testing time. n/a: a constant ranking.")
    return f"## {markdown_text(title)}\n\n{body.to_markdown(index=False, disable_numparse=True)}\n\n{note}\n"


def write_nas_table(result_paths: Iterable[str | Path], sources: Sequence[str], csv_path: str | Path,
                    md_path: str | Path, accuracies_path: str | Path, title: str, top: Sequence[int] = (),
                    ground_truth: str | Path | None = None, study: str = "?") -> pd.DataFrame:
    """Read the per-architecture JSONs (train_architecture), write the correlation table (CSV, Markdown) and
    the accuracies behind it (CSV), atomically. A missing `ground_truth` file is an error saying what to supply."""
    truth = read_ground_truth(ground_truth, study) if ground_truth is not None else None
    records = [load_json(p) for p in result_paths]
    summary = nas_summary(records, sources, top, truth)
    with atomic_path(csv_path) as tmp:
        summary.to_csv(tmp, index=False)
    with atomic_path(accuracies_path) as tmp:
        accuracies(records).to_csv(tmp, index=False)
    reference = "the ground-truth accuracies" if truth is not None else "the real training split's ranking"
    write_text(md_path, summary_markdown(summary, title, reference))
    return summary
