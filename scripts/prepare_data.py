"""Snakemake adapter: raw dataset -> results/data/<dataset>/{train.pt,test.pt,meta.json}."""
import _library  # noqa: F401  (the checkout's src/ on sys.path under --sdm conda)
from pathlib import Path

from distillery.data import prepare
from distillery.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads, "cpu")
prepare(snakemake.wildcards.dataset, snakemake.params.data_dir, Path(snakemake.output.meta).parent)
