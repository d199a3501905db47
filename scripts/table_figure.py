"""Snakemake adapter: a table's CSV (or its experts' stats, or its distillation logs) -> one of its figures."""
import _library  # the checkout's src/ on sys.path (--sdm conda); the job wrapper
from distillery.report.figures import plot_table

with _library.job(snakemake, device="cpu"):
    plot_table(snakemake.wildcards.figure, snakemake.input.csv, snakemake.output.png, snakemake.params.title,
               sources=snakemake.params.sources)
