"""Snakemake adapter: train a fresh network on a synthetic set, record its final test accuracy."""
import _library  # noqa: F401  (the checkout's src/ on sys.path under --sdm conda)
from pathlib import Path

from distillery.evaluate import EvalConfig, evaluate_synset
from distillery.io import save_json
from distillery.runtime import job_setup

device = job_setup(snakemake.log[0], snakemake.threads, snakemake.params.device, snakemake.config["runtime"]["tf32"])
result = evaluate_synset(snakemake.input.synset, Path(snakemake.input.meta).parent, snakemake.wildcards.arch,
                         int(snakemake.wildcards.seed), EvalConfig(**snakemake.params.evaluation),
                         zca_path=snakemake.input.get("zca"), device=device, protocol=snakemake.wildcards.protocol)
save_json(result, snakemake.output[0])
