"""Snakemake adapter: the experts of a (dataset, normalisation, model, recipe) -> stats.json (Avg_Var, accuracies)."""
import _library  # noqa: F401  (the checkout's src/ on sys.path under --sdm conda)
from pathlib import Path

from distillery.experts import run_expert_stats
from distillery.runtime import job_setup

device = job_setup(snakemake.log[0], snakemake.threads, snakemake.params.device, snakemake.config["runtime"]["tf32"])
run_expert_stats(snakemake.input.experts, Path(snakemake.input.meta).parent, snakemake.output[0],
                 zca_path=snakemake.input.get("zca"), device=device)
