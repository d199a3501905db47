"""Snakemake adapter: train a group of experts of one (dataset, normalisation, model, recipe) in one job
(experts.per_job > 1) and save each trajectory to its own file, as train_expert.py would."""
import _library  # the checkout's src/ on sys.path (--sdm conda); the job wrapper
from pathlib import Path

from distillery.experts import run_expert_group
from distillery.plan import parse_expert_path

experts = [parse_expert_path(path) for path in snakemake.output]
with _library.job(snakemake) as device:
    run_expert_group(Path(snakemake.input.meta).parent, list(snakemake.output), experts[0]["model"],
                     experts[0]["recipe"], [w["k"] for w in experts], zca_path=snakemake.input.get("zca"),
                     overrides=snakemake.params.overrides, device=device,
                     checkpoint_every=snakemake.config["reliability"]["expert_checkpoint_every"])
