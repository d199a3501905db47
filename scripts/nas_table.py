"""Snakemake adapter: a NAS study's per-architecture results -> rank-correlation table (CSV, Markdown) with each
source's search time, and the accuracies behind it."""
import _library  # the checkout's src/ on sys.path (--sdm conda); the job wrapper
from distillery.nas import write_nas_table

with _library.job(snakemake, device="cpu"):
    write_nas_table(snakemake.input.results, snakemake.params.sources, snakemake.output.csv, snakemake.output.md,
                    snakemake.output.accuracies, snakemake.params.title, snakemake.params.top,
                    ground_truth=snakemake.params.ground_truth, study=snakemake.wildcards.study)
