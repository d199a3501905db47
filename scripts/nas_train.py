"""Snakemake adapter: train one architecture of a NAS study on one source (a synset or the real training split)."""
import _library  # the checkout's src/ on sys.path (--sdm conda); the job wrapper
from pathlib import Path

from distillery.evaluate import EvalConfig
from distillery.io import save_json
from distillery.nas import train_architecture

synsets = snakemake.input.synset
with _library.job(snakemake) as device:
    result = train_architecture(snakemake.wildcards.source, synsets[0] if synsets else None,
                                Path(snakemake.input.meta).parent, snakemake.wildcards.arch, int(snakemake.params.seed),
                                EvalConfig(**snakemake.params.evaluation), zca_path=snakemake.input.get("zca"),
                                device=device)
    save_json(result, snakemake.output[0])
