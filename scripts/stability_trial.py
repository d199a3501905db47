"""Snakemake adapter: one short distillation of a stability study (a multiplied lr_img or lr_lr) -> success JSON."""
import _library  # the checkout's src/ on sys.path (--sdm conda); the job wrapper
from pathlib import Path

from distillery.distill.stability import stability_trial

w = snakemake.wildcards
with _library.job(snakemake) as device:
    stability_trial(snakemake.params.settings, Path(snakemake.input.meta).parent, snakemake.input.experts, w.parameter,
                    float(w.multiplier), int(w.seed), snakemake.params.iterations, snakemake.output[0],
                    zca_path=snakemake.input.get("zca"), device=device, gpu_memory_gb=_library.gpu_memory_gb(snakemake))
