"""Puts this checkout's `src/` first on sys.path, so jobs run in a conda environment (--sdm conda, envs/),
where the package itself is not installed, import the library of the checkout that runs them; and `job`, the one
wrapper every script runs its library call in."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def job(smk, device: str | None = None):
    """distillery.runtime.job for a Snakemake job: its log, outputs and threads, and the config's run-time settings
    (device unless given, runtime.tf32), which are not job params."""
    from distillery.runtime import job as run_job

    return run_job(smk.log[0] if smk.log else None, list(smk.output), smk.threads, device or smk.config["device"],
                   smk.config["runtime"]["tf32"])


def gpu_memory_gb(smk) -> float:
    """runtime.gpu_memory_gb as the planner reads it (budget.memory.gpu_memory_gb): it decides which data splits a job
    keeps on the host (data.host), as its memory estimate did. Not a job param: the results are the same either way."""
    from distillery.budget.memory import gpu_memory_gb as read

    return read(smk.config)
