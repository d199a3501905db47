"""Snakemake adapter: a stability study's run JSONs -> counts CSV + Markdown and the bar figure."""
import _library  # the checkout's src/ on sys.path (--sdm conda); the job wrapper
from distillery.report.stability import plot_stability, write_stability

with _library.job(snakemake, device="cpu"):
    write_stability(snakemake.input, snakemake.output.csv, snakemake.output.md, snakemake.params.title)
    plot_stability(snakemake.output.csv, snakemake.output.png, snakemake.params.title)
