"""Snakemake adapter: per-seed evaluation JSONs -> results/tables/<table>.{csv,md}."""
from distillery.report import write_table
from distillery.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads, "cpu")
write_table(snakemake.input, snakemake.output.csv, snakemake.output.md, snakemake.params.title)
