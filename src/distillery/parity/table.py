"""The summary of parity reports as Markdown (docs/parity.md's tables): a row per method and case, then a row per
run (its command, reference, machine and time), methods in the harness's order:
`python -m distillery.parity.table benchmarks/results/parity_*.json`."""
from __future__ import annotations

import sys
from typing import Sequence

from distillery.io import load_json
from distillery.parity.run import METHODS

HEADER = ["method", "commit", "case", "result", "largest abs. difference", "largest rel. difference", "tolerance",
          "seconds"]
RUN_HEADER = ["method", "command", "cases passed", "seconds", "torch", "threads", "cpus"]


def _number(value: object) -> str:
    return f"{value:.2g}" if isinstance(value, float) else str(value)


def _row(report: dict, case: dict) -> list[str]:
    commit = report["reference"]["commit"][:7]
    verdict = "pass" if case["passed"] else "**fail**"
    if case.get("statistics"):
        stats = case["statistics"]["accuracy"]
        ours, theirs = stats["ours"], stats["theirs"]
        cells = [f"ours {100 * ours['mean']:.1f} ± {100 * ours['std']:.1f}, theirs {100 * theirs['mean']:.1f} ± "
                 f"{100 * theirs['std']:.1f} (%)", f"{100 * abs(stats['difference']):.1f} points",
                 f"spread {100 * stats['spread']:.1f} points"]
    else:
        tol = case["tolerance"]
        bound = "bit for bit" if tol["rtol"] == 0 and tol["atol"] == 0 else f"rtol {tol['rtol']:g}"
        cells = [_number(case.get("max_abs", 0.0)), _number(case.get("max_rel", 0.0)), bound]
    return [report["method"], commit, case["name"], verdict, *cells, f"{case['seconds']:.0f}"]


def summary_lines(reports: Sequence[dict]) -> list[str]:
    """The Markdown table of the reports' cases."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for report in reports:
        lines += ["| " + " | ".join(_row(report, case)) + " |" for case in report["cases"]]
    return lines


def run_lines(reports: Sequence[dict]) -> list[str]:
    """The Markdown table of the runs: each report's command, verdicts, time and machine."""
    lines = ["| " + " | ".join(RUN_HEADER) + " |", "|" + "---|" * len(RUN_HEADER)]
    for r in reports:
        passed = sum(c["passed"] for c in r["cases"])
        m = r["machine"]
        cells = [r["method"], f"`{r['command']}`", f"{passed} of {len(r['cases'])}", f"{r['seconds']:.0f}", m["torch"],
                 str(m["torch_threads"]), str(m["cpus"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def in_method_order(reports: Sequence[dict]) -> list[dict]:
    """The reports in the harness's method order (mtt, ftd, ast, att, apm, datm); others after them."""
    order = list(METHODS)
    return sorted(reports, key=lambda r: order.index(r["method"]) if r["method"] in order else len(order))


def main(paths: Sequence[str]) -> None:
    reports = in_method_order([load_json(path) for path in paths])
    print("\n".join(summary_lines(reports) + [""] + run_lines(reports)))


if __name__ == "__main__":
    main(sys.argv[1:])
