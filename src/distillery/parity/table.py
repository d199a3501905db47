"""The summary of parity reports as one Markdown table, a row per method and case (docs/parity.md's table):
`python -m distillery.parity.table benchmarks/results/parity_*.json`."""
from __future__ import annotations

import sys
from typing import Sequence

from distillery.io import load_json

HEADER = ["method", "commit", "case", "result", "largest abs. difference", "largest rel. difference", "tolerance",
          "seconds"]


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


def main(paths: Sequence[str]) -> None:
    print("\n".join(summary_lines([load_json(path) for path in paths])))


if __name__ == "__main__":
    main(sys.argv[1:])
