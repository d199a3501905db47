"""Where the default run's own jobs spend their time on digits: each distillation of the default table and one
evaluation, rerun in this process under cProfile from a finished default run (its prepared data and experts), with
the settings the workflow gives the job; and the cost of starting a job's process (Python and the library's
imports, timed in fresh processes).

Per job: `seconds` (unprofiled wall time), `profiled_seconds`, `top` (the functions with the most own time, each
with its share of the profiled time: torch's operators appear as the built-in methods that run them) and
`library` (distillery's functions by cumulative time, the share of the job inside each).

    snakemake --cores 2                                       # the default run, in a checkout
    PYTHONPATH=src python benchmarks/digits_jobs.py --run .   # then this, in the same checkout
"""
from __future__ import annotations

import cProfile
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import harness
from distillery.distill import DistillConfig
from distillery.distill.run import run_distillation
from distillery.evaluate import EvalConfig, evaluate_synset
from distillery.plan import PATHS, expert_files, load_config, resolve_method, table_cells
from distillery.plan.settings import eval_config

IMPORTS = {"distill": "distillery.distill.run", "evaluate": "distillery.evaluate", "table": "distillery.report.tables",
           "plot": "distillery.report.figures"}


def import_seconds(module: str, repeat: int) -> float:
    """Median wall time of a fresh interpreter importing `module` (what every job of its rule pays first)."""
    src = Path(__file__).resolve().parents[1] / "src"
    times = []
    for _ in range(repeat):
        tic = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(src)!r}); import {module}"],
                       check=True)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def profiled(fn) -> dict:
    """fn's wall time, then fn again under cProfile: its top functions by own time and distillery's by cumulative."""
    tic = time.perf_counter()
    fn()
    seconds = time.perf_counter() - tic
    profile = cProfile.Profile()
    profile.runcall(fn)
    stats = pstats.Stats(profile)
    total = stats.total_tt
    own, library = [], []
    for (file, line, name), (_, _, tt, ct, _) in stats.stats.items():
        own.append((f"{Path(file).name}:{line}({name})" if file != "~" else name, tt))
        if "/distillery/" in file:
            library.append((f"{Path(file).parent.name}/{Path(file).name}:{name}", ct))

    def shares(pairs: list, first: int, count: int) -> list[dict]:
        ranked = sorted(pairs, key=lambda pair: -pair[1])[first:first + count]
        return [{"function": function, "share": round(t / total, 3)} for function, t in ranked]

    # library: the job's own entry point (all of the time) left out
    return {"seconds": round(seconds, 3), "profiled_seconds": round(total, 3), "top": shares(own, 0, 12),
            "library": shares(library, 1, 12)}


def main() -> None:
    p = harness.parser(__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a checkout where the default run has finished")
    p.add_argument("--table", default="digits", help="the default config's table whose cells are profiled")
    args = p.parse_args()
    torch.set_num_threads(args.threads)   # the jobs' own count: threads 1 in resources
    run = args.run.resolve()
    config = load_config(run)
    data = run / "results/data/digits"
    rows = [{"job": "import", "rule": rule, "module": module, "seconds": round(import_seconds(module, args.repeat), 3)}
            for rule, module in IMPORTS.items()]
    with tempfile.TemporaryDirectory() as tmp:
        for cell in table_cells(config, args.table):
            settings = resolve_method(config, cell.method, cell.dataset, cell.ipc)
            if settings["kind"] == "coreset":
                continue
            experts = [run / f for f in expert_files(config, cell.dataset, settings)]
            params = DistillConfig.from_dict(settings).job_params()
            out = Path(tmp) / f"{cell.method}-{cell.ipc}"

            def distill():
                for stale in Path(tmp).glob(f".{out.name}*"):   # no checkpoint to resume from
                    stale.unlink()
                run_distillation(params, data, f"{out}.pt", f"{out}.csv", expert_paths=experts,
                                 zca_path=data / "zca.pt" if settings["zca"] else None, checkpoint_every=10**9)

            rows.append({"job": "distill", "method": cell.method, "ipc": cell.ipc,
                         "iterations": settings["iterations"], **profiled(distill)})
        cell = next(c for c in table_cells(config, args.table) if c.method == "mtt" and c.ipc == 10)
        synset = run / PATHS["synset"].format(method=cell.method, dataset=cell.dataset, ipc=cell.ipc)
        protocol = EvalConfig(**vars(eval_config(config)))
        zca = data / "zca.pt" if resolve_method(config, cell.method, cell.dataset, cell.ipc)["zca"] else None
        rows.append({"job": "evaluate", "method": cell.method, "ipc": cell.ipc, "epochs": protocol.epochs + 1,
                     **profiled(lambda: evaluate_synset(synset, data, cell.arch, 0, protocol, zca_path=zca))})
    harness.record(args.name or "digits-jobs", "cpu", args, rows)


if __name__ == "__main__":
    main()
