"""Snakemake adapter: matching loss and learned lr over distillation iterations."""
import _library  # noqa: F401  (the checkout's src/ on sys.path under --sdm conda)
from distillery.report import plot_curves
from distillery.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads, "cpu")
w = snakemake.wildcards
plot_curves(snakemake.input[0], snakemake.output.png, title=f"{w.method} · {w.dataset} · IPC {w.ipc}")
