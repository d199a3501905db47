"""Snakemake adapter: train one architecture of a NAS study on one source (a synset or the real training split)."""
import _library  # noqa: F401  (the checkout's src/ on sys.path under --sdm conda)
from pathlib import Path

from distillery.evaluate import EvalConfig
from distillery.io import save_json
from distillery.nas import train_architecture
from distillery.runtime import job_setup

device = job_setup(snakemake.log[0], snakemake.threads, snakemake.params.device, snakemake.config["runtime"]["tf32"])
synsets = snakemake.input.synset
result = train_architecture(snakemake.wildcards.source, synsets[0] if synsets else None,
                            Path(snakemake.input.meta).parent, snakemake.wildcards.arch, int(snakemake.params.seed),
                            EvalConfig(**snakemake.params.evaluation), zca_path=snakemake.input.get("zca"),
                            device=device)
save_json(result, snakemake.output[0])
