"""Snakemake adapter: train a fresh network on a synthetic set (or one of its snapshots), record its final test
accuracy and, where the dataset holds a validation split out, its validation accuracy."""
import _library  # the checkout's src/ on sys.path (--sdm conda); the job wrapper
from pathlib import Path

from distillery.evaluate import EvalConfig, evaluate_synset
from distillery.io import save_json

with _library.job(snakemake) as device:
    result = evaluate_synset(snakemake.input.synset, Path(snakemake.input.meta).parent, snakemake.wildcards.arch,
                             int(snakemake.wildcards.seed), EvalConfig(**snakemake.params.evaluation),
                             zca_path=snakemake.input.get("zca"), device=device, protocol=snakemake.wildcards.protocol,
                             gpu_memory_gb=_library.gpu_memory_gb(snakemake),
                             validation="validation" in snakemake.input.keys())
    save_json(result, snakemake.output[0])
