"""Snakemake adapter: distil one (method, dataset, IPC) — or one group of it, or merge its groups — into
synset.pt and its per-iteration log; where the rule asks for snapshots, also the set every snapshot_every
iterations (snapshots/it<k>.pt)."""
import _library  # the checkout's src/ on sys.path (--sdm conda); the job wrapper
from pathlib import Path

from distillery.distill.run import run_distillation

with _library.job(snakemake) as device:
    run_distillation(snakemake.params.settings, Path(snakemake.input.meta).parent, snakemake.output.synset,
                     snakemake.output.log_csv, expert_paths=snakemake.input.experts,
                     group_paths=snakemake.input.get("groups", []), zca_path=snakemake.input.get("zca"), device=device,
                     checkpoint_every=snakemake.config["reliability"]["checkpoint_every"],
                     max_bad=snakemake.config["reliability"]["max_bad_iterations"],
                     gpu_memory_gb=_library.gpu_memory_gb(snakemake),
                     snapshot_every=snakemake.params.get("snapshot_every"),
                     snapshot_paths=snakemake.output.get("snapshots", []))
