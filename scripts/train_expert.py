"""Snakemake adapter: train expert k of a (dataset, normalisation, model, recipe) and save its trajectory."""
import _library  # the checkout's src/ on sys.path (--sdm conda); the job wrapper
from pathlib import Path

from distillery.experts import run_expert_training

w = snakemake.wildcards
with _library.job(snakemake) as device:
    run_expert_training(Path(snakemake.input.meta).parent, snakemake.output[0], w.model, w.recipe, int(w.k),
                        zca_path=snakemake.input.get("zca"), overrides=snakemake.params.overrides, device=device,
                        checkpoint_every=snakemake.config["reliability"]["expert_checkpoint_every"],
                        gpu_memory_gb=_library.gpu_memory_gb(snakemake))
