"""Aggregate per-seed evaluation results (or another measure: expert accuracy, Avg_Var, seconds per iteration)
into mean ± std per (method, dataset, IPC, architecture), set them beside the numbers the papers report, and
render the result as CSV, Markdown and LaTeX."""
from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from distillery.choices import SCORE_MEASURES
from distillery.io import atomic_path, atomic_write, load_json
from distillery.report.scores import SCORE_NOTES, SCORE_PROTOCOL, WEIGHT, score_records
from distillery.report.selection import select, selection_records

COLUMNS = ["method", "dataset", "ipc", "arch", "mean", "std", "n"]
KEYS = ["method", "dataset", "ipc", "arch"]
REPORTED_COLUMNS = ["paper", "table", "method", "dataset", "ipc", "arch", "mean", "std"]
REPORTED_DTYPES = {"paper": str, "table": str, "method": str, "dataset": str, "ipc": "int64", "arch": str,
                   "mean": "float64", "std": "float64"}
COMPARED_COLUMNS = COLUMNS + ["reported_mean", "reported_std", "diff"]
HEADER = ["method", "dataset", "ipc", "arch", "ours", "paper", "Δ", "n"]
ALIGN = ("left", "left", "right", "left", "right", "right", "right", "right")
LATEX_SPEC = "llrlrrrr"
MINUS = "\u2212"
PROTOCOL = (
    "ours: top-1 test accuracy (%) of freshly initialised networks trained on the synthetic set, read once after "
    "the final training epoch, with no selection on the test set; mean ± std (population std) over n evaluation "
    "seeds. paper: the number printed in the paper, transcribed as reported (mean ± std where the paper gives a "
    "std), not recomputed. The papers (MTT, FTD, ATT, AST, APM, DATM) report the best test accuracy over "
    "evaluations run periodically during distillation; AST also keeps the best epoch within each evaluation run, "
    "APM's teachers are saved at their best test accuracy, and DATM re-evaluates its checkpoint of best test "
    "accuracy. Their values are thus selected on the test set, which biases them upward relative to ours. "
    "Δ = ours − paper in percentage points; empty where the paper reports no value.")
# Per measure: decimals of our numbers and the note under the table (accuracy: PROTOCOL).
MEASURE_NOTES = {
    "expert_accuracy": "ours: top-1 test accuracy (%) of the expert networks the method distils from, after their "
                       "final training epoch; mean ± std over n experts. paper: as printed.",
    "avg_var": "ours: Avg_Var (AST Table VII), the mean over epochs of ‖θ_(e+1) − θ_e‖² along one expert "
               "trajectory; mean ± std over n experts. paper: as printed.",
    "seconds_per_iteration": "ours: wall-clock seconds per distillation iteration, from the distillation job's "
                             "log (the first, warm-up iteration excluded); mean ± std over n iterations, on the "
                             "hardware of this run. paper: as printed, measured on the authors' GPU.",
}
DECIMALS = {"accuracy": 2, "expert_accuracy": 2, "avg_var": 4, "seconds_per_iteration": 3,
            **{score: 2 for score in SCORE_MEASURES}}
LATEX_SPECIALS = {"\\": r"\textbackslash{}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$", "{": r"\{", "}": r"\}"}
LATEX_SPECIAL_RE = re.compile("|".join(re.escape(c) for c in LATEX_SPECIALS))


def row_label(method: str, protocol: str, own: str = "default") -> str:
    """A row's method as a table shows it: the method under its own evaluation protocol, else "mtt [sam0.01]"."""
    return method if protocol == own else f"{method} [{protocol}]"


def aggregate(records: Iterable[dict]) -> pd.DataFrame:
    """One row per (method, dataset, ipc, arch) in first-seen order: mean, std, n of each record's `value`
    (an evaluation record's `accuracy` fraction counts as value in percent).

    A result of an evaluation protocol other than the method's own (a record's `method_protocol`, else "default")
    shows as method "mtt [sam0.01]".
    """
    frame = pd.DataFrame(list(records))
    if frame.empty:
        raise ValueError("no evaluation results to aggregate")
    if "protocol" in frame:
        own = frame["method_protocol"] if "method_protocol" in frame else pd.Series("default", index=frame.index)
        frame["method"] = [row_label(m, p, o) for m, p, o in
                           zip(frame["method"], frame["protocol"].fillna("default"), own.fillna("default"))]
    if "value" not in frame:
        frame["value"] = frame["accuracy"] * 100
    grouped = frame.groupby(KEYS, sort=False)["value"]
    table = grouped.agg(mean="mean", std=lambda a: a.std(ddof=0), n="count").reset_index()
    return table[COLUMNS]


def samples(measure: str, path: str | Path) -> list[float]:
    """The numbers one source file contributes to a cell of `measure` (see distillery.plan.table_sources)."""
    if measure == "accuracy" or measure in SCORE_MEASURES:  # a score's evaluations: report/scores.py
        return [load_json(path)["accuracy"] * 100]
    if measure == "expert_accuracy":
        return [a * 100 for a in load_json(path)["final_test_accuracy"]]
    if measure == "avg_var":
        return list(load_json(path)["avg_var"])
    if measure == "seconds_per_iteration":
        seconds = pd.read_csv(path)["seconds"].tolist()
        return seconds[1:] or seconds
    raise ValueError(f"unknown measure '{measure}'; choose one of: {', '.join(DECIMALS)}")


def load_records(sources: Iterable[str | Path | dict], measure: str = "accuracy") -> list[dict]:
    """Records for `aggregate`: an evaluation JSON path is one record as written; a dict source (cell keys and
    `path`) gives one record per sample of `measure` in its file."""
    records = []
    for source in sources:
        if not isinstance(source, dict):
            records.append(load_json(source))
            continue
        keys = {k: v for k, v in source.items() if k != "path"}
        records += [{**keys, "value": value} for value in samples(measure, source["path"])]
    return records


def empty_reported() -> pd.DataFrame:
    """A reported-numbers frame with no rows but the right columns and dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=REPORTED_DTYPES[c]) for c in REPORTED_COLUMNS})


def read_reported(path: str | Path) -> pd.DataFrame:
    """One reported-numbers CSV: REPORTED_COLUMNS first, then optional notes (e.g. `source`), which are dropped."""
    header = list(pd.read_csv(path, nrows=0).columns)
    if header[:len(REPORTED_COLUMNS)] != REPORTED_COLUMNS:
        raise ValueError(f"{path}: the columns must start with {','.join(REPORTED_COLUMNS)}, got {','.join(header)}")
    frame = pd.read_csv(path, dtype=REPORTED_DTYPES, keep_default_na=False, na_values={"mean": [""], "std": [""]})
    return frame[REPORTED_COLUMNS]


def load_reported(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate reported-numbers CSVs (paper,table,method,dataset,ipc,arch,mean,std); empty when no paths."""
    frames = [read_reported(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else empty_reported()


def select_reported(reported: pd.DataFrame, paper: str | None, table_name: str | None) -> pd.DataFrame:
    """The reported rows of one paper and table (either filter skipped when None); duplicate keys are an error."""
    rows = reported
    if paper is not None:
        rows = rows[rows["paper"] == paper]
    if table_name is not None:
        rows = rows[rows["table"].astype(str) == str(table_name)]
    duplicated = rows[rows.duplicated(KEYS, keep=False)]
    if not duplicated.empty:
        first = duplicated.iloc[0]
        raise ValueError(f"reported numbers are ambiguous for {dict(first[KEYS])} (paper={paper}, table={table_name}): "
                         f"{len(duplicated)} rows; pass paper and table_name to pick one")
    return rows


def compare(table: pd.DataFrame, reported: pd.DataFrame, paper: str | None = None,
            table_name: str | None = None) -> pd.DataFrame:
    """The aggregated table, in its order, left-joined with the paper's numbers: + reported_mean, reported_std, diff
    (= mean − reported_mean); a selection table's rule columns (report/selection.py) are kept after them."""
    rows = select_reported(reported, paper, table_name)[KEYS + ["mean", "std"]]
    rows = rows.rename(columns={"mean": "reported_mean", "std": "reported_std"}).astype({"ipc": "int64"})
    merged = table.astype({"ipc": "int64"}).merge(rows, on=KEYS, how="left", validate="one_to_one")
    merged["reported_mean"] = merged["reported_mean"].astype("float64")
    merged["reported_std"] = merged["reported_std"].astype("float64")
    merged["diff"] = merged["mean"] - merged["reported_mean"]
    return merged[COMPARED_COLUMNS + [c for c in table.columns if c not in COMPARED_COLUMNS]]


def with_reported(table: pd.DataFrame) -> pd.DataFrame:
    """A compared table as is; an aggregated one with empty reported columns, so both render the same way."""
    if "reported_mean" in table:
        return table
    return table.assign(reported_mean=np.nan, reported_std=np.nan, diff=np.nan)


def decimals(value: float) -> int:
    """Decimal places of a number as transcribed (shortest round-trip form), at least one."""
    text = np.format_float_positional(value, trim="-")
    return max(1, len(text.partition(".")[2]))


def paper_number(value: float) -> str:
    """A reported number with its transcribed precision: 46.3, 46.35, 46 -> 46.0."""
    return f"{value:.{decimals(value)}f}"


def paper_cell(mean: float, std: float, pm: str) -> str:
    """'46.3 ± 0.8', '46.3' without a std, '' without a mean."""
    if math.isnan(mean):
        return ""
    if math.isnan(std):
        return paper_number(mean)
    return f"{paper_number(mean)}{pm}{paper_number(std)}"


def ours_cell(mean: float, std: float, pm: str, digits: int = 2) -> str:
    """Our mean ± std with `digits` decimals."""
    return f"{mean:.{digits}f}{pm}{std:.{digits}f}"


def delta_cell(diff: float, minus: str = MINUS) -> str:
    """Signed difference with one decimal ('+1.2', '−3.4', '0.0'); empty when there is no paper value."""
    if math.isnan(diff):
        return ""
    text = f"{diff:+.1f}"
    if float(text) == 0:
        return "0.0"
    return text.replace("-", minus)


def cells(table: pd.DataFrame, pm: str, minus: str, measure: str = "accuracy") -> list[list[str]]:
    """The displayed row cells (method, dataset, ipc, arch, ours, paper, Δ, n) as strings."""
    shown = with_reported(table)
    digits = DECIMALS[measure]
    return [[str(r.method), str(r.dataset), str(r.ipc), str(r.arch), ours_cell(r.mean, r.std, pm, digits),
             paper_cell(r.reported_mean, r.reported_std, pm), delta_cell(r.diff, minus), str(r.n)]
            for r in shown.itertuples(index=False)]


def measure_note(measure: str, weight: float = WEIGHT) -> str:
    """What a measure's numbers are: PROTOCOL for accuracy, MEASURE_NOTES' line, or a score's formula and protocol."""
    if measure in SCORE_MEASURES:
        return f"{SCORE_NOTES[measure].format(weight=weight)}. {SCORE_PROTOCOL}"
    return MEASURE_NOTES.get(measure, PROTOCOL)


# Markdown's inline markers; an underscore only where it can open or close emphasis (mtt_noise stays as it is).
MARKDOWN_SPECIAL_RE = re.compile(r"[\\`*\[\]|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def markdown_text(text: str) -> str:
    """`text` from a config (a title, note or label) as literal Markdown: HTML's &, < and > as entities and Markdown's
    inline markers escaped, so that it can neither put HTML into the report nor break a table row."""
    return MARKDOWN_SPECIAL_RE.sub(lambda m: "\\" + m[0], html.escape(str(text), quote=False))


def to_markdown(table: pd.DataFrame, title: str, measure: str = "accuracy", notes: Sequence[str] = (),
                weight: float = WEIGHT) -> str:
    """`## title`, the table (ours, paper, Δ), the note on what the numbers are, then the table's own notes (the
    title, notes and row labels escaped: markdown_text)."""
    rows = [[markdown_text(c) for c in row[:4]] + row[4:] for row in cells(table, " ± ", MINUS, measure)]
    markdown = pd.DataFrame(rows, columns=HEADER).to_markdown(index=False, disable_numparse=True, colalign=ALIGN)
    text = "\n\n".join([measure_note(measure, weight), *map(markdown_text, notes)])
    return f"## {markdown_text(title)}\n\n{markdown}\n\n{text}\n"


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters (\\ _ % & # $ { } ~ ^) in cell text."""
    return LATEX_SPECIAL_RE.sub(lambda m: LATEX_SPECIALS[m.group(0)], str(text))


def latex_row(row: list[str]) -> str:
    """One tabular row: cells joined by ' & ', ended by \\\\."""
    return " & ".join(row) + r" \\"


def latex_cells(table: pd.DataFrame, measure: str = "accuracy") -> list[list[str]]:
    """Row cells with text escaped and numbers typeset in math mode ($\\pm$, $-3.4$)."""
    rows = cells(table, " $\\pm$ ", "-", measure)
    return [[latex_escape(c) for c in row[:4]] + [row[4], row[5], f"${row[6]}$" if row[6] else "", row[7]]
            for row in rows]


def to_latex(table: pd.DataFrame, title: str, measure: str = "accuracy") -> str:
    """A booktabs `table` environment with the same columns as the Markdown table and the title as caption."""
    header = [latex_escape(h) for h in HEADER[:6]] + [r"$\Delta$", "n"]
    lines = [r"\begin{table}[t]", r"\centering", f"\\caption{{{latex_escape(title)}}}",
             f"\\begin{{tabular}}{{{LATEX_SPEC}}}", r"\toprule", latex_row(header), r"\midrule",
             *(latex_row(row) for row in latex_cells(table, measure)), r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


TEST_SELECTED = "test ‡"  # the column of the papers' rule, marked everywhere it appears
RULE_HEADERS = {"final": "final", "validation": "validation", "test": TEST_SELECTED}
SELECTION_NOTE = (
    "final: top-1 test accuracy (%) of freshly initialised networks trained on the final synthetic set, read once "
    "after the final training epoch, with no selection on the test set. validation: the same for the snapshot of the "
    "distillation and the protocol choice (shown in brackets where it is not the cell's own) whose networks scored "
    "best on a held-out validation split of the training data, which nothing was trained on; the test accuracy is "
    "read once, after the pick. ‡ test: selected on the test set — the snapshot and choice with the best test "
    "accuracy, as the papers selected theirs (MTT issue #23: the max over test evaluations during distillation); "
    "shown only for comparison with the papers. Each rule picks per cell and evaluation-seed set (by the mean over "
    "the seeds); mean ± std (population std) over n seeds. paper: as printed (selected on the test set by the "
    "papers' protocols). Δ = final − paper = (test ‡ − paper) + (final − test ‡): the first term is how far our "
    "method is from theirs under their protocol, the second what selecting on the test set adds to a number "
    "(never positive: the final set is one of the candidates). In percentage points.")


def with_decomposition(table: pd.DataFrame) -> pd.DataFrame:
    """A compared selection table with Δ's two parts where it has both rules: test_diff = test − paper and
    selection_diff = final − test (so diff = test_diff + selection_diff when the first rule is final)."""
    table = table.copy()
    if "test_mean" in table:
        table["test_diff"] = table["test_mean"] - table["reported_mean"]
        if "final_mean" in table:
            table["selection_diff"] = table["final_mean"] - table["test_mean"]
    return table


def pick_label(row: dict, rule: str) -> str:
    """Where a rule's pick came from: '' for final, else ' (it 40)', ' (final set)', with the protocol choice."""
    if rule == "final":
        return ""
    iteration, choice = row[f"{rule}_iteration"], row[f"{rule}_choice"]
    where = "final set" if pd.isna(iteration) else f"it {int(iteration)}"
    return f" ({where})" if choice == row["protocol"] else f" ({where}, {choice})"


def selection_header(rules: Sequence[str], table: pd.DataFrame) -> list[str]:
    split = ["Δ test ‡ − paper", "Δ final − test ‡"] if "selection_diff" in table else []
    return ["method", "dataset", "ipc", "arch", *(RULE_HEADERS[r] for r in rules), "paper", "Δ", *split, "n"]


def selection_cells(table: pd.DataFrame, rules: Sequence[str], pm: str, minus: str) -> list[list[str]]:
    """Displayed rows of a selection table: keys, each rule's mean ± std and pick, the paper, Δ (and its parts), n."""
    rows = []
    for row in table.to_dict("records"):
        ours = [ours_cell(row[f"{r}_mean"], row[f"{r}_std"], pm) + pick_label(row, r) for r in rules]
        split = [delta_cell(row["test_diff"], minus), delta_cell(row["selection_diff"], minus)] \
            if "selection_diff" in row else []
        rows.append([str(row["method"]), str(row["dataset"]), str(row["ipc"]), str(row["arch"]), *ours,
                     paper_cell(row["reported_mean"], row["reported_std"], pm), delta_cell(row["diff"], minus),
                     *split, str(row["n"])])
    return rows


def selection_markdown(table: pd.DataFrame, title: str, rules: Sequence[str], notes: Sequence[str] = ()) -> str:
    """`## title`, a column per selection rule beside the paper's number and Δ with its two parts, then the note (the
    title, notes and row labels escaped: markdown_text)."""
    header = selection_header(rules, table)
    rows = [[markdown_text(c) for c in row[:4]] + row[4:] for row in selection_cells(table, rules, " ± ", MINUS)]
    align = ("left", "left", "right", "left", *("right",) * (len(header) - 4))
    markdown = pd.DataFrame(rows, columns=header).to_markdown(index=False, disable_numparse=True, colalign=align)
    text = "\n\n".join([SELECTION_NOTE, *map(markdown_text, notes)])
    return f"## {markdown_text(title)}\n\n{markdown}\n\n{text}\n"


def selection_latex(table: pd.DataFrame, title: str, rules: Sequence[str]) -> str:
    """The selection table as a booktabs `table` environment (columns as in the Markdown)."""
    def tex(text: str) -> str:
        return latex_escape(text).replace("\0", r" $\pm$ ").replace("Δ", r"$\Delta$").replace("‡", r"$\ddagger$") \
            .replace("−", "$-$")

    header = [tex(h) for h in selection_header(rules, table)]
    rows = [[tex(c) for c in row] for row in selection_cells(table, rules, "\0", "−")]
    spec = "llrl" + "r" * (len(header) - 4)
    lines = [r"\begin{table}[t]", r"\centering", f"\\caption{{{latex_escape(title)}}}", f"\\begin{{tabular}}{{{spec}}}",
             r"\toprule", latex_row(header), r"\midrule", *(latex_row(row) for row in rows), r"\bottomrule",
             r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_table(sources: Iterable[str | Path | dict], csv_path: str | Path, md_path: str | Path, title: str,
                reported_paths: Iterable[str | Path] = (), paper: str | None = None, table_name: str | None = None,
                tex_path: str | Path | None = None, measure: str = "accuracy",
                notes: Sequence[str] = (), rules: Sequence[str] = ("final",), weight: float = WEIGHT) -> pd.DataFrame:
    """Read the sources (see load_records), set them beside the paper's numbers, write CSV, Markdown (with
    `notes` under the table) and optional LaTeX atomically. Selection `rules` other than final alone put a column per
    rule (report/selection.py, honest.py); a score measure is computed per seed with `weight` (report/scores.py)."""
    reported = load_reported(reported_paths)
    if tuple(rules) != ("final",):
        table = with_decomposition(compare(select(selection_records(sources), rules), reported, paper, table_name))
        markdown, latex = selection_markdown(table, title, rules, notes), selection_latex(table, title, rules)
    else:
        records = load_records(sources, measure)
        if measure in SCORE_MEASURES:
            records = score_records(records, measure, weight)
        table = compare(aggregate(records), reported, paper, table_name)
        markdown, latex = to_markdown(table, title, measure, notes, weight), to_latex(table, title, measure)
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    write_text(md_path, markdown)
    if tex_path is not None:
        write_text(tex_path, latex)
    return table
