"""Snakemake adapter: a table's CSV (or its experts' stats, or its distillation logs) -> one of its figures."""
import _library  # noqa: F401  (the checkout's src/ on sys.path under --sdm conda)
from distillery.report import plot_table
from distillery.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads, "cpu")
plot_table(snakemake.wildcards.figure, snakemake.input.csv, snakemake.output.png, snakemake.params.title,
           sources=snakemake.params.sources)
