"""Snakemake adapter: a logged distillation's figures, its images as pixels and its loss and learned lr curves."""
import _library  # the checkout's src/ on sys.path (--sdm conda); the job wrapper
from pathlib import Path

from distillery.report.figures import plot_distillation

w = snakemake.wildcards
with _library.job(snakemake, device="cpu"):
    plot_distillation(snakemake.input.synset, Path(snakemake.input.meta).parent, snakemake.output.images,
                      snakemake.input.log_csv, snakemake.output.curves, title=f"{w.method} · {w.dataset} · IPC {w.ipc}",
                      zca_path=snakemake.input.get("zca"))
