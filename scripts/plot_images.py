"""Snakemake adapter: a grid of the distilled images, as pixels."""
import _library  # the checkout's src/ on sys.path (--sdm conda); the job wrapper
from pathlib import Path

from distillery.report.figures import plot_images

with _library.job(snakemake, device="cpu"):
    plot_images(snakemake.input.synset, Path(snakemake.input.meta).parent, snakemake.output.png,
                zca_path=snakemake.input.get("zca"))
