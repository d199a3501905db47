"""Snakemake adapter: matching loss and learned lr over distillation iterations."""
import _library  # the checkout's src/ on sys.path (--sdm conda); the job wrapper
from distillery.report import plot_curves

w = snakemake.wildcards
with _library.job(snakemake, device="cpu"):
    plot_curves(snakemake.input[0], snakemake.output.png, title=f"{w.method} · {w.dataset} · IPC {w.ipc}")
