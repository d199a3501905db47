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
from distillery.parity import (apm, apm_iteration, apm_train, ast, ast_init, ast_training, att, datm, datm_evaluation,
                               ftd, mtt, mtt_end_to_end)
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
    "ftd": Method(ftd.REFERENCE, ftd.Sizes(), ftd.CASES),
    "ast": Method(ast.REFERENCE, ast.Sizes(), {
        "distill_iteration": ast.iteration_case("distill_iteration", torch.float64, ast.FLOAT64, both_sides=True),
        "distill_iteration_float32": ast.iteration_case("distill_iteration_float32", torch.float32, ast.FLOAT32),
        "distill_iteration_recompute": ast.iteration_case("distill_iteration_recompute", torch.float64, ast.FLOAT64,
                                                          memory="recompute"),
        "distill_iteration_dsa": ast.dsa_case,
        "representative_init": ast_init.representative_case,
        "expert_training": ast_training.expert_case(dsa=False),
        "expert_training_dsa": ast_training.expert_case(dsa=True),
        "evaluation": ast_training.evaluation_case(dsa=False),
        "evaluation_dsa": ast_training.evaluation_case(dsa=True),
    }),
    "att": Method(att.REFERENCE, att.Sizes(), att.CASES),
    "apm": Method(apm.REFERENCE, apm.Sizes(), {
        "image_update": apm_iteration.iteration_case("image_update", torch.float64, apm.FLOAT64, "ours"),
        "iteration": apm_iteration.iteration_case("iteration", torch.float32, apm.FLOAT32, "theirs"),
        "iteration_dsa": apm_iteration.iteration_case("iteration_dsa", torch.float32, apm.FLOAT32, "theirs",
                                                      "color_crop_cutout_flip_scale_rotate"),
        "iterations": apm_iteration.iterations_case,
        "teacher_training": apm_train.teacher_case(dsa=False),
        "teacher_training_dsa": apm_train.teacher_case(dsa=True),
        "evaluation": apm_train.evaluation_case(dsa=False),
        "evaluation_dsa": apm_train.evaluation_case(dsa=True),
    }),
    "datm": Method(datm.REFERENCE, datm.Sizes(), {
        "distill_iteration": datm.iteration_case("distill_iteration", torch.float64, datm.FLOAT64),
        "distill_iteration_float32": datm.iteration_case("distill_iteration_float32", torch.float32, datm.FLOAT32),
        "distill_iteration_dsa": datm.iteration_case("distill_iteration_dsa", torch.float32, datm.FLOAT32,
                                                     dsa=datm.DSA),
        "threshold": datm.threshold_case,
        "init_correct": datm.iteration_case("init_correct", torch.float64, datm.FLOAT64, init="correct"),
        "evaluation": datm_evaluation.evaluation_case(dsa=False),
        "evaluation_dsa": datm_evaluation.evaluation_case(dsa=True),
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
