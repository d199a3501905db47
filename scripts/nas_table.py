"""Snakemake adapter: a NAS study's per-architecture results -> rank-correlation table (CSV, Markdown) with each
source's search time, and the accuracies behind it."""
import _library  # noqa: F401  (the checkout's src/ on sys.path under --sdm conda)
from distillery.nas import write_nas_table
from distillery.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads, "cpu")
write_nas_table(snakemake.input.results, snakemake.params.sources, snakemake.output.csv, snakemake.output.md,
                snakemake.output.accuracies, snakemake.params.title, snakemake.params.top,
                ground_truth=snakemake.params.ground_truth, study=snakemake.wildcards.study)
