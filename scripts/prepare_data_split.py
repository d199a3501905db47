"""Snakemake adapter: raw dataset -> results/data/<dataset>/{train.pt,test.pt,meta.json,val.pt}, the validation split
held out of train.pt (config `validation`)."""
import _library  # the checkout's src/ on sys.path (--sdm conda); the job wrapper
from pathlib import Path

from distillery.data import prepare

with _library.job(snakemake, device="cpu"):
    prepare(snakemake.wildcards.dataset, snakemake.params.data_dir, Path(snakemake.output.meta).parent,
            validation=snakemake.params.validation)
