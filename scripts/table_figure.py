"""Snakemake adapter: a table's CSV (or its experts' stats) -> one of its figures (PNG + PDF)."""
from distillery.report import plot_table
from distillery.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads, "cpu")
plot_table(snakemake.wildcards.figure, snakemake.input.csv, snakemake.output.png, snakemake.params.title,
           stats=snakemake.params.stats)
