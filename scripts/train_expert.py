"""Snakemake adapter: train expert k of a (dataset, normalisation, model, recipe) and save its trajectory."""
import _library  # noqa: F401  (the checkout's src/ on sys.path under --sdm conda)
from pathlib import Path

from distillery.experts import run_expert_training
from distillery.runtime import job_setup

device = job_setup(snakemake.log[0], snakemake.threads, snakemake.params.device, snakemake.config["runtime"]["tf32"])
w = snakemake.wildcards
run_expert_training(Path(snakemake.input.meta).parent, snakemake.output[0], w.model, w.recipe, int(w.k),
                    zca_path=snakemake.input.get("zca"), overrides=snakemake.params.overrides, device=device,
                    checkpoint_every=snakemake.config["reliability"]["expert_checkpoint_every"])
