"""The cost tables of a config as text (also Markdown), CSV and HTML (`python -m distillery.plan cost`, rule cost),
from plan.cost's rows."""
from __future__ import annotations

import csv
from pathlib import Path

from distillery.budget import memory
from distillery.data.host import DEVICE_SHARE
from distillery.plan import timing
from distillery.plan.cost import DISTILL_COLUMNS, SUMMARY_COLUMNS, config_cost


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)


def to_text(rows: list[dict], distills: list[dict], header: str) -> str:
    """The summary and distillation tables as aligned text (also valid Markdown)."""
    def table(columns, body) -> list[str]:
        cells = [list(columns)] + [[_cell(r[c]) for c in columns] for r in body]
        widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
        lines = ["| " + " | ".join(v.ljust(w) for v, w in zip(line, widths)) + " |" for line in cells]
        return [lines[0], "|" + "|".join("-" * (w + 2) for w in widths) + "|", *lines[1:]]

    return "\n".join([header, "", *table(SUMMARY_COLUMNS, rows), "", "Distillations:", "",
                      *table(DISTILL_COLUMNS, distills), ""])


def write_csv(rows: list[dict], columns: tuple[str, ...], path: str | Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: ("" if r[k] is None else r[k]) for k in columns} for r in rows)


def header(config: dict, device: str, name: str) -> str:
    sources = timing.rates(device)
    lines = [f"Cost of {name} on {device} (GPU of {memory.gpu_memory_gb(config):g} GB, runtime.gpu_memory_gb; peak = "
             f"the estimate with the margin {100 * memory.MARGIN_FRACTION:.0f}% + {memory.MARGIN_GB:g} GB; jobs shared "
             f"by tables are counted in each, once in the total).",
             f"Time per inner step ({device}): {sources['unroll'].source}.",
             f"Time per training batch ({device}): {sources['training'].source}.",
             "Not costed: prepare_data and fit_zca (I/O), tables, figures and plots (local jobs).",
             f"on_host: splits whose whole load would take over {100 * DEVICE_SHARE:.0f}% of the GPU stay on the host "
             "as uint8, a batch at a time normalised on the device."]
    if device == "gpu":
        cpu = timing.rates("cpu")
        lines.append(f"Jobs without a GPU: {cpu['unroll'].source}; {cpu['training'].source}.")
    return "\n".join(lines)


def write_cost(config: dict, device: str, name: str, csv_path: str | Path, distill_csv_path: str | Path,
               html_path: str | Path | None = None) -> str:
    """Write the cost tables as CSV (and HTML, for the Snakemake report); returns them as text."""
    rows, distills = config_cost(config, device)
    text = to_text(rows, distills, header(config, device, name))
    write_csv(rows, SUMMARY_COLUMNS, csv_path)
    write_csv(distills, DISTILL_COLUMNS, distill_csv_path)
    if html_path is not None:
        import html

        import pandas as pd

        notes = "".join(f"<p>{html.escape(line)}</p>" for line in header(config, device, name).splitlines())
        tables = [pd.DataFrame(rows, columns=SUMMARY_COLUMNS), pd.DataFrame(distills, columns=DISTILL_COLUMNS)]
        body = [t.to_html(index=False, na_rep="—", float_format=lambda v: f"{v:,.2f}") for t in tables]
        Path(html_path).write_text(f"<html><body>{notes}{body[0]}<h3>Distillations</h3>{body[1]}</body></html>\n")
    return text
