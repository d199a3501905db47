"""Snakemake adapter: one short distillation of a stability study (a multiplied lr_img or lr_lr) -> success JSON."""
import _library  # noqa: F401  (the checkout's src/ on sys.path under --sdm conda)
from pathlib import Path

from distillery.distill.stability import stability_trial
from distillery.runtime import job_setup

device = job_setup(snakemake.log[0], snakemake.threads, snakemake.params.device, snakemake.config["runtime"]["tf32"])
w = snakemake.wildcards
stability_trial(snakemake.params.settings, Path(snakemake.input.meta).parent, snakemake.input.experts, w.parameter,
                float(w.multiplier), int(w.seed), snakemake.params.iterations, snakemake.output[0],
                zca_path=snakemake.input.get("zca"), device=device)
