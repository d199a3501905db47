"""Snakemake adapter: the experts of a (dataset, normalisation, model, recipe) -> stats.json (Avg_Var, accuracies)."""
import _library  # the checkout's src/ on sys.path (--sdm conda); the job wrapper
from pathlib import Path

from distillery.experts import run_expert_stats

with _library.job(snakemake) as device:
    run_expert_stats(snakemake.input.experts, Path(snakemake.input.meta).parent, snakemake.output[0],
                     zca_path=snakemake.input.get("zca"), device=device,
                     gpu_memory_gb=_library.gpu_memory_gb(snakemake))
