"""Snakemake adapter: a grid of the distilled images, as pixels."""
import _library  # noqa: F401  (the checkout's src/ on sys.path under --sdm conda)
from pathlib import Path

from distillery.report import plot_images
from distillery.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads, "cpu")
plot_images(snakemake.input.synset, Path(snakemake.input.meta).parent, snakemake.output.png,
            zca_path=snakemake.input.get("zca"))
