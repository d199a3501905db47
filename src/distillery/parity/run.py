"""One harness run: check the checkout, prepare the shared data, run the chosen cases of a method, and build the
report (reference commit, each case's largest differences, tolerance and verdict, every patch, the machine, torch,
the run time), written atomically as JSON."""
from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from distillery.io import save_json
from distillery.parity import mtt, mtt_end_to_end
from distillery.parity.context import Context, Method, with_settings
from distillery.parity.reference import check_checkout
from distillery.parity.workspace import DATASET, make_workspace

METHODS: dict[str, Method] = {
    "mtt": Method(mtt.REFERENCE, mtt.Sizes(), {
        "distill_iteration": mtt.iteration_case("distill_iteration", torch.float64, mtt.FLOAT64),
        "distill_iteration_float32": mtt.iteration_case("distill_iteration_float32", torch.float32, mtt.FLOAT32),
        "distill_iteration_dsa": mtt.dsa_case,
        "expert_training": mtt.expert_case(dsa=False),
        "expert_training_dsa": mtt.expert_case(dsa=True),
        "evaluation": mtt.evaluation_case(dsa=False),
        "evaluation_dsa": mtt.evaluation_case(dsa=True),
        "end_to_end": mtt_end_to_end.end_to_end,
    }),
}


def machine() -> dict:
    """Where the run ran: enough to tell two machines' numbers apart."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
            "torch": torch.__version__}


def pick_cases(method: Method, names: Sequence[str] | None) -> list[str]:
    """The cases to run, in the method's order; unknown names are an error listing the choices."""
    if not names:
        return list(method.cases)
    unknown = [n for n in names if n not in method.cases]
    if unknown:
        raise ValueError(f"unknown case(s) {', '.join(unknown)}; choose from: {', '.join(method.cases)}")
    return [n for n in method.cases if n in names]


@dataclass(frozen=True)
class Plan:
    """A checked run: the method, its cases to run, its sizes, the checkout and the checkout's commit."""

    name: str
    method: Method
    cases: list[str]
    sizes: Any
    reference: Path
    commit: str


def plan_parity(name: str, reference: str | Path, cases: Sequence[str] | None = None,
                settings: dict[str, str] | None = None, any_commit: bool = False) -> Plan:
    """Check everything a run needs (method, cases, sizes, checkout, commit) before any compute; errors name the
    fix."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from: {', '.join(METHODS)}")
    method = METHODS[name]
    chosen = pick_cases(method, cases)
    sizes = with_settings(method.sizes, settings or {})
    reference = Path(reference).resolve()
    return Plan(name, method, chosen, sizes, reference, check_checkout(method.reference, reference, any_commit))


def run_parity(plan: Plan, data_dir: str | Path = "data", command: str = "") -> dict:
    """Run the plan's cases on a fresh workspace (Fashion-MNIST from `data_dir`); the report as a dict."""
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        ws = make_workspace(Path(tmp) / "root", data_dir, plan.sizes.train_per_class, plan.sizes.test_per_class)
        ctx = Context(plan.reference, ws, plan.sizes, Path(tmp) / "scratch")
        ctx.scratch.mkdir()
        for case in plan.cases:
            results.append(plan.method.cases[case](ctx))
    ref = plan.method.reference
    return {"method": plan.name, "command": command,
            "reference": {"repo": ref.repo, "commit": plan.commit, "ledger_commit": ref.commit,
                          "path": str(plan.reference)},
            "passed": all(r.passed for r in results), "seconds": time.perf_counter() - started,
            "machine": machine(), "sizes": asdict(plan.sizes),
            "dataset": {"name": DATASET, "subset": ws.meta.get("subset"), "source": ws.meta.get("source")},
            "cases": [r.to_dict() for r in results],
            "patches": [asdict(p) for p in ctx.patches.values()]}


def write_report(report: dict, out: str | Path) -> None:
    """The report as JSON at `out`, written atomically."""
    save_json(report, out)
