"""Snakemake adapter: a table's CSV -> its accuracy-vs-IPC or cross-architecture figure (PNG + PDF)."""
from distillery.report import plot_table
from distillery.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads, "cpu")
plot_table(snakemake.wildcards.figure, snakemake.input[0], snakemake.output.png, snakemake.params.title)
