"""Where every artifact of the workflow lives: the path patterns rules write and jobs read."""
from __future__ import annotations

import re
from pathlib import Path

PATHS = {
    "train": "results/data/{dataset}/train.pt",
    "test": "results/data/{dataset}/test.pt",
    "meta": "results/data/{dataset}/meta.json",
    "zca": "results/data/{dataset}/zca.pt",
    "validation": "results/data/{dataset}/val.pt",
    "expert": "results/experts/{dataset}/{norm}/{model}/{recipe}/{k}.pt",
    "expert_stats": "results/experts/{dataset}/{norm}/{model}/{recipe}/stats.json",
    "synset": "results/synsets/{method}/{dataset}/ipc{ipc}/synset.pt",
    "distill_log": "results/synsets/{method}/{dataset}/ipc{ipc}/log.csv",
    "group_synset": "results/synsets/{method}/{dataset}/ipc{ipc}/group{group}/synset.pt",
    "group_log": "results/synsets/{method}/{dataset}/ipc{ipc}/group{group}/log.csv",
    "snapshot": "results/synsets/{method}/{dataset}/ipc{ipc}/snapshots/it{iteration}.pt",
    "eval": "results/evals/{method}/{dataset}/ipc{ipc}/{arch}/{protocol}/seed{seed}.json",
    "snapshot_eval": "results/evals/{method}/{dataset}/ipc{ipc}/{arch}/{protocol}/it{iteration}/seed{seed}.json",
    "real_eval": "results/real/{dataset}/{norm}/{arch}/{protocol}/seed{seed}.json",
    "table_csv": "results/tables/{table}.csv",
    "table_md": "results/tables/{table}.md",
    "table_tex": "results/tables/{table}.tex",
    "table_figure": "results/figures/tables/{table}/{figure}.png",
    "images": "results/figures/{method}/{dataset}/ipc{ipc}/images.png",
    "stability_trial": "results/stability/{study}/{method}/{parameter}_x{multiplier}/seed{seed}.json",
    "stability_csv": "results/stability/{study}/counts.csv",
    "stability_md": "results/stability/{study}/counts.md",
    "stability_figure": "results/figures/stability/{study}/stability.png",
    "curves": "results/figures/{method}/{dataset}/ipc{ipc}/curves.png",
    "nas_result": "results/nas/{study}/{source}/{arch}.json",
    "nas_csv": "results/nas/{study}/correlation.csv",
    "nas_md": "results/nas/{study}/correlation.md",
    "nas_accuracies": "results/nas/{study}/accuracies.csv",
    "cost_html": "results/cost/cost.html",
    "cost_csv": "results/cost/cost.csv",
    "cost_distill_csv": "results/cost/distillations.csv",
}


def parse_expert_path(path: str | Path) -> dict:
    """The wildcards of an expert file (PATHS["expert"], relative or below another root): dataset, norm, model,
    recipe and k (an int)."""
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(PATHS["expert"]))
    found = re.search(f"(?:^|/){pattern}$", Path(path).as_posix())
    if found is None:
        raise ValueError(f"{path} is not an expert file path ({PATHS['expert']})")
    return {**found.groupdict(), "k": int(found["k"])}


def shown_path(path: str | Path, *roots: str | Path) -> str:
    """`path` relative to the first of `roots` it lies under, else as given: how a job records a file of the checkout
    or the working directory (a param, an input), so that moving the checkout changes nothing a rerun trigger sees."""
    path = Path(path)
    under = [path.relative_to(root) for root in map(Path, roots) if path.is_relative_to(root)]
    return str(under[0] if under else path)


def config_name(paths: list, *roots: str | Path) -> str:
    """The cost table's name for the config files `paths` (--configfile): each relative to the first of `roots` (the
    working directory, the repository) it lies under, so that the name, a job param, does not change where the
    checkout moves; 'the default config' without any."""
    return ", ".join(shown_path(path, *roots) for path in paths) or "the default config"
