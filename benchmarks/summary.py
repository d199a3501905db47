"""The figures of docs/performance.md, computed from the committed benchmarks/results/*.json: each row a range
over a file's rows, so the page cites the files instead of retyping their numbers. `python benchmarks/summary.py`
prints the table; `--write` puts it between the page's markers (tests/test_docs.py checks that they agree)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "performance.md"
START, END = "<!-- summary:start -->", "<!-- summary:end -->"


def rows(name: str) -> list[dict]:
    return json.loads((RESULTS / name).read_text())["rows"]


def span(values: list[float], digits: int = 2) -> str:
    low, high = min(values), max(values)
    return f"{low:.{digits}f}" if f"{low:.{digits}f}" == f"{high:.{digits}f}" else f"{low:.{digits}f}–{high:.{digits}f}"


def memory_growth() -> str:
    """Saved-for-backward memory of an MTT iteration at N 20 over N 10, per IPC (distill_cpu.json)."""
    mtt = [r for r in rows("distill_cpu.json") if r["case"]["method"] == "mtt"]
    by = {(r["case"]["ipc"], r["case"]["syn_steps"]): r["a"] for r in mtt}
    return span([by[(ipc, 20)]["saved_mib"] / by[(ipc, 10)]["saved_mib"] for ipc, steps in by if steps == 10])


def memory_modes(variants: str, key: str, steps: int | None = None) -> str:
    """Memory modes (`|`-separated variants) against unchunked `full` (memory_cpu.json): at `steps` inner steps, or
    the range over all of them."""
    return span([r[key] for r in rows("memory_cpu.json")
                 if r["variant"] in variants.split("|") and steps in (None, r["steps"])],
                3 if key == "memory_vs_full" else 1)


def saved_per_image(model: str) -> str:
    """MB autograd saves for one image through one unrolled `full` step (memory-model_cpu.json)."""
    return f"{json.loads((RESULTS / 'memory-model_cpu.json').read_text())['saved_mb_per_image_step_full'][model]:.2f}"


def job_seconds(job: str, ipc: int) -> str:
    return span([r["seconds"] for r in rows("digits-jobs_cpu.json") if r["job"] == job and r["ipc"] == ipc], 1)


def table() -> list[tuple[str, str, str]]:
    """(what, figure, file) per row."""
    return [
        ("one MTT iteration / its unrolling floor (N+1 plain forward-backward passes), 1×8×8, IPC 1/10, N 10/20",
         span([r["a"]["iteration_over_floor"] for r in rows("distill_cpu.json")]), "distill_cpu.json"),
        ("the same, 3×32×32, IPC 1/10, N 10, batch_syn 10",
         span([r["a"]["iteration_over_floor"] for r in rows("distill-cifar_cpu.json")]), "distill-cifar_cpu.json"),
        ("saved-for-backward memory of an iteration, N 20 / N 10", memory_growth(), "distill_cpu.json"),
        ("AST / MTT (`--compare method=ast`), same N: seconds per iteration",
         span([r["ratio_b_over_a"]["seconds_per_iteration"] for r in rows("distill_cpu.json")]), "distill_cpu.json"),
        ("AST / MTT: saved memory",
         span([r["ratio_b_over_a"]["saved_mib"] for r in rows("distill_cpu.json")]), "distill_cpu.json"),
        ("K experts trained together (vmap) / one after another, images/s, K = 1, 4, 8",
         span([r["ratio_b_over_a"]["images_per_second"] for r in rows("experts_cpu.json")]), "experts_cpu.json"),
        ("evaluation without / with DSA, epochs/s",
         span([r["ratio_b_over_a"]["epochs_per_second"] for r in rows("evaluate_cpu.json")]), "evaluate_cpu.json"),
        ("memory `recompute` / `full`, saved for backward at N 40", memory_modes("recompute", "memory_vs_full", 40),
         "memory_cpu.json"),
        ("memory `constant` / `full`, saved for backward at N 40", memory_modes("constant", "memory_vs_full", 40),
         "memory_cpu.json"),
        ("`recompute` / `full`, seconds per iteration, N 2…40", memory_modes("recompute", "seconds_vs_full"),
         "memory_cpu.json"),
        ("`constant` / `full`, seconds per iteration, N 2…40", memory_modes("constant", "seconds_vs_full"),
         "memory_cpu.json"),
        ("`recompute` with `chunk: 10` (5 pieces a step) / `full`, saved for backward at N 40",
         memory_modes("recompute chunk 10", "memory_vs_full", 40), "memory_cpu.json"),
        ("any mode with `chunk: 10` / unchunked `full`, seconds per iteration, N 2…40",
         memory_modes("full chunk 10|recompute chunk 10|constant chunk 10", "seconds_vs_full"), "memory_cpu.json"),
        ("memory model's estimate / saved bytes counted on CPU runs, width 128, 9 settings",
         span([1 / r["saved_ratio"] for r in rows("memory-model_cpu.json")]), "memory-model_cpu.json"),
        ("MB saved for backward by one image through one unrolled `full` step: ConvNet, 32 px",
         saved_per_image("ConvNet 32 px"), "memory-model_cpu.json"),
        ("the same: ConvNetD4, 64 px", saved_per_image("ConvNetD4 64 px"), "memory-model_cpu.json"),
        ("the same: ConvNetD5, 128 px", saved_per_image("ConvNetD5 128 px"), "memory-model_cpu.json"),
        ("a default-run distillation's work, IPC 1 (seconds, 200 iterations)", job_seconds("distill", 1),
         "digits-jobs_cpu.json"),
        ("the same, IPC 10 (seconds, 150 iterations)", job_seconds("distill", 10), "digits-jobs_cpu.json"),
        ("a default-run evaluation's work, IPC 10, 200 epochs (seconds)", job_seconds("evaluate", 10),
         "digits-jobs_cpu.json"),
    ]


def markdown() -> str:
    lines = ["| what | figure | file (`benchmarks/results/`) |", "|---|---|---|"]
    lines += [f"| {what} | {figure} | `{file}` |" for what, figure, file in table()]
    return "\n".join(lines)


def page_with_summary(text: str) -> str:
    """`text` (the page) with the table between its markers replaced by today's."""
    head, rest = text.split(START, 1)
    return f"{head}{START}\n{markdown()}\n{END}{rest.split(END, 1)[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help=f"rewrite the table in {PAGE.relative_to(ROOT)}")
    args = parser.parse_args()
    if args.write:
        PAGE.write_text(page_with_summary(PAGE.read_text()))
    else:
        print(markdown())


if __name__ == "__main__":
    main()
