"""What each job asks the scheduler for: mem_mb, runtime and gpu, declared by the config or modelled (plan.cost),
and the jobs that train several experts at once (experts.per_job) with the GPU memory they need."""
from __future__ import annotations

import math
import re

from distillery.budget.memory import expert_estimate, expert_group_estimate, gpu_memory_gb
from distillery.data import get_spec
from distillery.experts import check_batchable, get_recipe
from distillery.plan.cost import MODELLED_RULES, job_resources
from distillery.plan.paths import PATHS
from distillery.plan.settings import declared_resources, expert_overrides, expert_seeds
from distillery.plan.targets import expert_sets


def rule_resources(config: dict, rule: str, dataset: str | None = None, attempt: int = 1,
                   job: dict | None = None) -> dict:
    """mem_mb, runtime (minutes), gpu and threads (torch's CPU threads) of a job: `resources.default` <
    `resources.<rule>` < the rule's entry for the dataset's scale; for a modelled rule's `job` (its wildcards),
    mem_mb and runtime from the memory and time models (plan.cost.job_resources) unless the rule or its scale
    entry sets them. Memory and runtime grow with the attempt (Snakemake `--retries`), threads do not."""
    chosen, explicit = declared_resources(config, rule, dataset)
    if job is not None and rule in MODELLED_RULES:
        modelled = job_resources(config, rule, job, chosen["gpu"] > 0)
        chosen.update({k: v for k, v in modelled.items() if k not in explicit})
    return {"mem_mb": chosen["mem_mb"] * attempt, "runtime": chosen["runtime"] * attempt, "gpu": chosen["gpu"],
            "threads": chosen["threads"]}


def expert_groups(config: dict) -> list[dict]:
    """With `experts.per_job` K > 1: the expert files trained K to a job (one vmapped run, experts.batched) — of
    every expert set the config reads whose recipe and model batched training reproduces (check_batchable), the
    experts.count files in runs of K. Each group: its set's wildcards, `seeds`, `files`, and its own `rule` name,
    `log` and `benchmark`. Other sets, and every set when K is 1 (the default: on the CPU batching was slower), keep
    one expert per job (rule train_expert); the files are the same either way. A GPU job of K experts that would
    not fit runtime.gpu_memory_gb (budget.memory) is an error naming the K that fits."""
    per_job = int(config.get("experts", {}).get("per_job", 1))
    if per_job < 2:
        return []
    groups = []
    for where in expert_sets(config):
        recipe = get_recipe(where["recipe"], **expert_overrides(config, where["dataset"]))
        try:
            check_batchable(where["model"], recipe)
        except ValueError:
            continue
        seeds = expert_seeds(config)
        if rule_resources(config, "train_expert", where["dataset"])["gpu"] > 0:
            check_group_fits(config, where, recipe, min(per_job, len(seeds)))
        for chunk in (seeds[i:i + per_job] for i in range(0, len(seeds), per_job)):
            folder, label = "/".join(where.values()), f"{chunk[0]}-{chunk[-1]}"
            groups.append({**where, "rule": re.sub(r"\W", "_", f"train_experts_{'_'.join(where.values())}_{label}"),
                           "seeds": chunk, "files": [PATHS["expert"].format(**where, k=k) for k in chunk],
                           "log": f"results/logs/train_expert/{folder}/{label}.log",
                           "benchmark": f"results/benchmarks/train_expert/{folder}/{label}.tsv"})
    return groups


def check_group_fits(config: dict, where: dict, recipe, per_job: int) -> None:
    """per_job experts of the set `where` trained together must fit the GPU, as the memory model counts them."""
    spec, gb, zca = get_spec(where["dataset"]), gpu_memory_gb(config), where["norm"] == "zca"
    estimate = expert_group_estimate(recipe, where["model"], spec, zca, per_job)
    if not estimate.fits(gb):
        fitting = next((k for k in range(per_job - 1, 1, -1)
                        if expert_group_estimate(recipe, where["model"], spec, zca, k).fits(gb)), 1)
        raise ValueError(f"experts.per_job {per_job}: {per_job} {where['model']} experts of {where['dataset']} "
                         f"({where['recipe']}) trained together need {estimate.describe()}, more than "
                         f"runtime.gpu_memory_gb {gb:g}; set experts.per_job to {fitting} or less")


def expert_group_resources(config: dict, group: dict, attempt: int = 1) -> dict:
    """An expert group job's mem_mb, runtime and gpu: its first expert's train_expert resources (modelled unless the
    config sets them), with the host memory of the other experts' trajectories added and the runtime times the
    group's size (what training them one after another would take)."""
    first = {key: group[key] for key in ("dataset", "norm", "model", "recipe")}
    chosen = rule_resources(config, "train_expert", group["dataset"], attempt, job={**first, "k": group["seeds"][0]})
    recipe = get_recipe(group["recipe"], **expert_overrides(config, group["dataset"]))
    spec, zca, size = get_spec(group["dataset"]), group["norm"] == "zca", len(group["seeds"])
    on_gpu = chosen["gpu"] > 0
    extra = (expert_group_estimate(recipe, group["model"], spec, zca, size).host_bytes(on_gpu)
             - expert_estimate(recipe, group["model"], spec, zca).host_bytes(on_gpu))
    return {**chosen, "mem_mb": chosen["mem_mb"] + math.ceil(extra / 2**20) * attempt,
            "runtime": chosen["runtime"] * size}
