"""Snakemake adapter: train a fresh network on the whole real training split, record its final test accuracy (and
its validation accuracy where the dataset holds a split out)."""
import _library  # the checkout's src/ on sys.path (--sdm conda); the job wrapper
from pathlib import Path

from distillery.evaluate import EvalConfig, evaluate_real
from distillery.io import save_json

with _library.job(snakemake) as device:
    result = evaluate_real(Path(snakemake.input.meta).parent, snakemake.wildcards.arch, int(snakemake.wildcards.seed),
                           EvalConfig(**snakemake.params.evaluation), zca_path=snakemake.input.get("zca"),
                           device=device, protocol=snakemake.wildcards.protocol,
                           gpu_memory_gb=_library.gpu_memory_gb(snakemake),
                           validation="validation" in snakemake.input.keys())
    save_json(result, snakemake.output[0])
