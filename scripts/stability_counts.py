"""Snakemake adapter: a stability study's run JSONs -> counts CSV + Markdown and the bar figure."""
import _library  # noqa: F401  (the checkout's src/ on sys.path under --sdm conda)
from distillery.report.stability import plot_stability, write_stability
from distillery.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads, "cpu")
write_stability(snakemake.input, snakemake.output.csv, snakemake.output.md, snakemake.params.title)
plot_stability(snakemake.output.csv, snakemake.output.png, snakemake.params.title)
