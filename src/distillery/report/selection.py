"""The selection rules of an accuracy cell (docs/evaluation.md), side by side per cell and evaluation-seed set.

A cell's candidates are its sets (the snapshots a distillation kept and its final set) × its protocol choices; each
candidate was evaluated with the same seeds, every evaluation scoring the same network on the test split and, where
the dataset holds one out, on the validation split.
- `final`: the final set under the cell's own protocol (what a table shows without selection).
- `validation`: the candidate with the best mean validation accuracy; its test accuracy is then read, once. The pick
  is made from the validation accuracies alone (`pick` is never handed a test accuracy).
- `test`: the candidate with the best mean test accuracy — how the papers chose (MTT issue #23: the max over test
  evaluations during distillation); shown only labelled "selected on the test set".
Ties go to the candidate listed first: the final set before the snapshots (latest first), the cell's own protocol
before the other choices."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from distillery.choices import SELECTION_RULES
from distillery.io import load_json

ROW_KEYS = ["method", "dataset", "ipc", "arch", "protocol"]


def selection_records(sources: Iterable[dict]) -> list[dict]:
    """One record per evaluation file of a selection table's sources (plan.table_sources): the row's keys, the
    candidate (`choice`: the protocol evaluated, `iteration`: a snapshot's, or None for the final set), `seed`, and the
    file's test and validation accuracies in % (validation None without a held-out split)."""
    records = []
    for source in sources:
        result = load_json(source["path"])
        validation = result.get("validation_accuracy")
        records.append({**{k: source[k] for k in ROW_KEYS}, "choice": source["choice"],
                        "iteration": source.get("iteration"), "seed": source["seed"],
                        "test": 100 * result["accuracy"], "validation": None if validation is None else 100 * validation})
    return records


def candidate_order(candidates: Iterable[tuple], own: str) -> list[tuple]:
    """(choice, iteration) candidates in tie-breaking order: the cell's own protocol first, then the other choices in
    the order given; within each, the final set, then the snapshots from the latest."""
    candidates = list(dict.fromkeys(candidates))
    choices = list(dict.fromkeys([own, *(c for c, _ in candidates)]))
    return sorted(candidates, key=lambda c: (choices.index(c[0]), c[1] is not None, -(c[1] or 0)))


def pick(means: dict[tuple, float], order: Sequence[tuple]) -> tuple:
    """The candidate of `order` with the largest mean; the first of them on a tie."""
    best = max(means[c] for c in order)
    return next(c for c in order if means[c] == best)


def select(records: Iterable[dict], rules: Sequence[str]) -> pd.DataFrame:
    """One row per cell (first-seen order): for each rule its pick's test accuracy, mean ± population std over the
    seeds and n, with the pick (`<rule>_choice`, `<rule>_iteration`); `mean`, `std` and `n` are the first rule's; the
    method of a row of a named protocol reads "mtt [sam0.01]", as tables.aggregate labels it, its `protocol` kept."""
    unknown = [rule for rule in rules if rule not in SELECTION_RULES]
    if unknown or not rules:
        raise ValueError(f"unknown selection rule(s) {unknown}; choose from: {', '.join(SELECTION_RULES)}")
    cells: dict[tuple, dict[tuple, list[dict]]] = {}
    for record in records:
        row = tuple(record[k] for k in ROW_KEYS)
        cells.setdefault(row, {}).setdefault((record["choice"], record["iteration"]), []).append(record)
    if not cells:
        raise ValueError("no evaluation results to select from")
    rows = []
    for key, candidates in cells.items():
        row = dict(zip(ROW_KEYS, key))
        if (row["protocol"], None) not in candidates:
            raise ValueError(f"{row}: no evaluation of the final set under the cell's protocol")
        order = candidate_order(candidates, row["protocol"])
        for rule in rules:
            chosen = (row["protocol"], None) if rule == "final" else pick(_means(candidates, rule, row), order)
            test = np.array([r["test"] for r in candidates[chosen]], dtype=float)
            row.update({f"{rule}_mean": test.mean(), f"{rule}_std": test.std(), f"{rule}_n": len(test),
                        f"{rule}_choice": chosen[0], f"{rule}_iteration": chosen[1]})
        row.update(mean=row[f"{rules[0]}_mean"], std=row[f"{rules[0]}_std"], n=row[f"{rules[0]}_n"])
        rows.append(row)
    table = pd.DataFrame(rows)
    for rule in rules:  # a snapshot's iteration as an integer, the final set's empty
        table[f"{rule}_iteration"] = table[f"{rule}_iteration"].astype("Int64")
    other = table["protocol"] != "default"  # the row label of a named protocol, as tables.aggregate writes it
    table.loc[other, "method"] = table["method"][other] + " [" + table["protocol"][other] + "]"
    return table


def _means(candidates: dict[tuple, list[dict]], rule: str, row: dict) -> dict[tuple, float]:
    """Each candidate's mean over its seeds of what `rule` chooses by: the validation accuracy (validation: the
    test accuracy is not read) or the test accuracy (test)."""
    by = "validation" if rule == "validation" else "test"
    if by == "validation" and any(r["validation"] is None for group in candidates.values() for r in group):
        raise ValueError(f"{row}: the validation rule needs every evaluation's validation accuracy; set "
                         f"validation.{row['dataset']}.per_class and rerun its evaluations")
    return {c: float(np.mean([r[by] for r in group])) for c, group in candidates.items()}


def selection_columns(rules: Sequence[str]) -> list[str]:
    """The CSV columns of a selection table after the keys: per rule mean, std, n, choice, iteration."""
    return [f"{rule}_{part}" for rule in rules for part in ("mean", "std", "n", "choice", "iteration")]

