"""What a config will cost before anything is submitted: every job of every table (and stability and NAS
study) with its estimated GPU peak, host memory and time, summed per table and in total (as text and CSV:
plan/costtable.py).

A job shared by several tables (an expert, a distillation evaluated in two tables) is counted in each table
that needs it and once in the total. Jobs whose rule asks for a GPU (`resources:` gpu) run on the device class
named (`--device gpu`: GPU-hours); the others, and everything under `--device cpu`, on the CPU.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from distillery.budget import memory
from distillery.budget.memory import GB, Estimate
from distillery.choices import EXPERT_MEASURES, LOGGED_KINDS
from distillery.data.registry import get_spec
from distillery.distill.config import DistillConfig
from distillery.experts.recipes import get_recipe
from distillery.models.convnet import name_codes, parse_convnet_name
from distillery.plan import timing
from distillery.plan.settings import (declared_resources, eval_config, eval_seeds, expert_overrides, expert_seeds,
                                      resolve_method)
from distillery.plan.studies import (nas_eval_config, nas_results, nas_settings, nas_spec, stability_settings,
                                     stability_spec)
from distillery.plan.targets import (expert_dir, expert_files, figure_sources, table_cells, table_sources,
                                     table_spec)

# Rules whose mem_mb and runtime come from the memory and time models (budget/) unless the table names them.
MODELLED_RULES = ("train_expert", "expert_stats", "distill", "distill_group", "evaluate", "evaluate_real",
                  "stability_trial", "nas_train")
COSTED = ("prepare_data", "fit_zca", "train_expert", "expert_stats", "distill", "distill_group", "evaluate",
          "evaluate_snapshot", "evaluate_real", "stability_trial", "nas_train")
SUMMARY_COLUMNS = ("table", "kind", "jobs", "memory", "peak_gpu_gb", "host_gb", "hours_per_job", "hours",
                   "gpu_hours", "on_host")
DISTILL_COLUMNS = ("method", "dataset", "ipc", "kind", "memory", "chunk", "batch_syn", "syn_steps", "iterations",
                   "peak_gpu_gb", "fits", "hours")


@dataclass(frozen=True)
class Job:
    """One job of the workflow, with what it will take: `estimate` None and `seconds` None for jobs that are not
    modelled (data preparation, ZCA fitting: I/O-bound CPU work)."""

    rule: str
    key: tuple
    dataset: str
    estimate: Estimate | None = None
    seconds: float | None = None
    on_gpu: bool = False
    settings: dict | None = None

    @property
    def mode(self) -> str:
        """The memory mode a trajectory job runs (with its chunk), else ''."""
        if not self.settings or self.settings["kind"] != "trajectory":
            return ""
        chunk = self.settings.get("chunk")
        return self.settings["memory"] + (f" chunk {chunk}" if chunk else "")


def _gpu(config: dict, rule: str, dataset: str) -> bool:
    return declared_resources(config, rule, dataset)[0]["gpu"] > 0


def _device(config: dict, rule: str, dataset: str, device: str) -> tuple[bool, str]:
    """(does the job get a GPU, the device class its time is taken on)."""
    on_gpu = device == "gpu" and _gpu(config, rule, dataset)
    return on_gpu, "gpu" if on_gpu else "cpu"


def _recipe(config: dict, name: str, dataset: str):
    """The recipe a dataset's experts train with (settings.expert_overrides)."""
    return get_recipe(name, **expert_overrides(config, dataset))


def distill_job(config: dict, rule: str, dataset: str, settings: dict, device: str,
                iterations: int | None = None) -> Job:
    """A distill, distill_group or stability_trial job of resolved `settings`."""
    cfg = DistillConfig.from_dict(settings)
    spec = get_spec(dataset)
    on_gpu, where = _device(config, rule, dataset, device)
    if cfg.kind == "trajectory":
        seconds = timing.trajectory_seconds(cfg, spec, where, iterations)
    elif cfg.kind == "adversarial":
        seconds = timing.adversarial_seconds(cfg, spec, where)
    else:
        seconds = timing.coreset_seconds(cfg, spec, where)
    key = (rule, settings["method"], dataset, settings["ipc"], settings["seed"], iterations)
    return Job(rule, key, dataset, memory.distill_estimate(cfg, spec, memory.gpu_memory_gb(config)), seconds, on_gpu,
               settings)


def expert_job(config: dict, dataset: str, norm: str, model: str, recipe: str, k: int, device: str) -> Job:
    spec, chosen = get_spec(dataset), _recipe(config, recipe, dataset)
    on_gpu, where = _device(config, "train_expert", dataset, device)
    return Job("train_expert", ("train_expert", dataset, norm, model, recipe, k), dataset,
               memory.expert_estimate(chosen, model, spec, norm == "zca", memory.gpu_memory_gb(config)),
               timing.expert_seconds(chosen, model, spec, where), on_gpu)


def stats_job(config: dict, dataset: str, norm: str, model: str, recipe: str, device: str) -> Job:
    spec, chosen = get_spec(dataset), _recipe(config, recipe, dataset)
    on_gpu, where = _device(config, "expert_stats", dataset, device)
    experts = len(expert_seeds(config))
    seconds = experts * timing.training_seconds(model, 0, 0, 1, spec, where,
                                                tested=(chosen.epochs + 1) * spec.test_size)
    return Job("expert_stats", ("expert_stats", dataset, norm, model, recipe), dataset,
               memory.expert_stats_estimate(model, spec, norm == "zca", chosen.epochs, memory.gpu_memory_gb(config)),
               seconds, on_gpu)


def evaluate_job(config: dict, method: str, dataset: str, ipc: int, arch: str, protocol: str, seed: int,
                 device: str) -> Job:
    spec, settings = get_spec(dataset), resolve_method(config, method, dataset, ipc)
    protocol_cfg = eval_config(config, protocol)
    on_gpu, where = _device(config, "evaluate", dataset, device)
    images = ipc * spec.num_classes
    return Job("evaluate", ("evaluate", method, dataset, ipc, arch, protocol, seed), dataset,
               memory.evaluate_estimate(arch, images, spec, protocol_cfg, settings["zca"],
                                        gpu_gb=memory.gpu_memory_gb(config)),
               timing.evaluate_seconds(arch, images, spec, protocol_cfg, where), on_gpu)


def real_job(config: dict, dataset: str, norm: str, arch: str, protocol: str, seed: int, device: str) -> Job:
    """An evaluate_real job: the protocol on the whole training split (DD-Ranking's hard-label recovery)."""
    spec, cfg = get_spec(dataset), eval_config(config, protocol)
    on_gpu, where = _device(config, "evaluate", dataset, device)
    return Job("evaluate_real", ("evaluate_real", dataset, norm, arch, protocol, seed), dataset,
               memory.evaluate_estimate(arch, spec.train_size, spec, cfg, norm == "zca", True, memory.gpu_memory_gb(config)),
               timing.evaluate_seconds(arch, spec.train_size, spec, cfg, where), on_gpu)


def source_jobs(config: dict, source: dict, device: str) -> list[Job]:
    """The jobs behind one evaluation a selection or a score reads (plan.targets.table_sources): a snapshot's or the
    real split's evaluation, or a set's (the random subset's with its own job)."""
    w = {k: source[k] for k in ("dataset", "ipc", "arch", "seed")}
    if source.get("evaluates") == "real":
        return [real_job(config, w["dataset"], source["norm"], w["arch"], source["choice"], w["seed"], device)]
    method = source.get("evaluates", source["method"])
    found = evaluate_job(config, method, **w, protocol=source["choice"], device=device)
    if source.get("iteration") is not None:
        found = replace(found, rule="evaluate_snapshot", key=(*found.key, source["iteration"]))
    settings = resolve_method(config, method, w["dataset"], w["ipc"])
    return (_distillation_jobs(config, w["dataset"], settings, device) if method != source["method"] else []) + [found]


def nas_job(config: dict, study: str, source: str, arch: str, device: str) -> Job:
    spec_ = nas_spec(config, study)
    spec, settings = get_spec(spec_["dataset"]), nas_settings(config, study, source)
    protocol = nas_eval_config(config, study, source)
    on_gpu, where = _device(config, "nas_train", spec.name, device)
    real = settings is None
    images = spec.train_size if real else settings["ipc"] * spec.num_classes
    costed = _nas_costed(arch)
    return Job("nas_train", ("nas_train", study, source, arch), spec.name,
               memory.evaluate_estimate(costed, images, spec, protocol, bool(settings and settings["zca"]), real),
               timing.evaluate_seconds(costed, images, spec, protocol, where), on_gpu)


def _nas_costed(arch: str) -> str:
    """NAS architectures are costed by depth, width and pooling (norm and activation change little), so 720
    ConvNets need 48 calibrations; other names are costed as themselves."""
    kwargs = parse_convnet_name(arch)
    if kwargs is None:
        return arch
    pool = name_codes("pool")[kwargs.get("pool", "avgpool")]
    return f"ConvNetD{kwargs.get('depth', 3)}W{kwargs.get('width', 128)}{pool}"


def _data_jobs(dataset: str, zca: bool) -> list[Job]:
    jobs = [Job("prepare_data", ("prepare_data", dataset), dataset)]
    return jobs + [Job("fit_zca", ("fit_zca", dataset), dataset)] if zca else jobs


def _distillation_jobs(config: dict, dataset: str, settings: dict, device: str, rule: str = "distill") -> list[Job]:
    """A synthetic set's jobs: its data, its experts, its groups (a merged method), then its own job."""
    jobs = _data_jobs(dataset, settings["zca"])
    if settings["kind"] == "merged":
        group = resolve_method(config, settings["groups_of"], dataset, settings["group_ipc"])
        for g in range(settings["ipc"] // settings["group_ipc"]):
            jobs += _distillation_jobs(config, dataset, {**group, "seed": group["seed"] + g}, device, "distill_group")
    for path in expert_files(config, dataset, settings):
        where = expert_dir(dataset, settings)
        jobs.append(expert_job(config, **where, k=int(Path(path).stem), device=device))
    return jobs + [distill_job(config, rule, dataset, settings, device)]


def table_jobs(config: dict, table: str, device: str) -> list[Job]:
    """Every job the table needs, each once."""
    spec = table_spec(config, table)
    measure = spec.get("measure", "accuracy")
    jobs = []
    for cell in table_cells(config, table):
        settings = resolve_method(config, cell.method, cell.dataset, cell.ipc)
        if measure in EXPERT_MEASURES:
            where = expert_dir(cell.dataset, settings)
            jobs += _data_jobs(cell.dataset, settings["zca"])
            jobs += [expert_job(config, **where, k=k, device=device) for k in expert_seeds(config)]
            jobs.append(stats_job(config, **where, device=device))
            continue
        jobs += _distillation_jobs(config, cell.dataset, settings, device)
        if measure == "accuracy":
            jobs += [evaluate_job(config, cell.method, cell.dataset, cell.ipc, cell.arch, cell.protocol, seed,
                                  device) for seed in eval_seeds(config)]
    jobs += [job for source in table_sources(config, table) if "seed" in source  # a selection's or a score's
             for job in source_jobs(config, source, device)]
    if "smoothness" in spec.get("figures", []):
        for source in figure_sources(config, table, "smoothness").values():
            dataset, norm, model, recipe = Path(source["path"]).parts[-5:-1]
            jobs.append(stats_job(config, dataset, norm, model, recipe, device))
    return _unique(jobs)


def stability_jobs(config: dict, study: str, device: str) -> list[Job]:
    spec, jobs = stability_spec(config, study), []
    for method in spec["methods"]:
        settings = stability_settings(config, study, method)
        jobs += _distillation_jobs(config, spec["dataset"], settings, device)[:-1]  # experts, not the distill
        trial = distill_job(config, "stability_trial", spec["dataset"], settings, device, spec["iterations"])
        for parameter in spec["parameters"]:
            for multiplier in spec["multipliers"]:
                jobs += [replace(trial, key=(*trial.key, parameter, multiplier, seed)) for seed in range(spec["seeds"])]
    return _unique(jobs)


def nas_jobs(config: dict, study: str, device: str) -> list[Job]:
    spec, jobs = nas_spec(config, study), []
    for source in spec["sources"]:
        settings = nas_settings(config, study, source)
        jobs += _data_jobs(spec["dataset"], False)
        if settings is not None:
            jobs += _distillation_jobs(config, spec["dataset"], settings, device)
    jobs += [nas_job(config, study, r["source"], r["arch"], device) for r in nas_results(config, study)]
    return _unique(jobs)


def _unique(jobs: list[Job]) -> list[Job]:
    return list({job.key: job for job in jobs}.values())


def sections(config: dict, device: str) -> dict[str, list[Job]]:
    """{table or study name: its jobs}, tables first, then stability and NAS studies."""
    out = {spec["name"]: table_jobs(config, spec["name"], device) for spec in config.get("tables", [])}
    out.update({spec["name"]: stability_jobs(config, spec["name"], device) for spec in config.get("stability") or []})
    out.update({spec["name"]: nas_jobs(config, spec["name"], device) for spec in config.get("nas") or []})
    return out


def summarise(name: str, jobs: list[Job]) -> list[dict]:
    """One row per job kind: count, memory modes, largest GPU peak and host memory, mean hours, total hours, and the
    datasets' splits its jobs keep on the host (too large for the GPU: data.host)."""
    rows = []
    for kind in COSTED:
        mine = [job for job in jobs if job.rule == kind]
        if not mine:
            continue
        modes = {}
        for job in mine:
            if job.mode:
                modes[job.mode] = modes.get(job.mode, 0) + 1
        timed = [job.seconds for job in mine if job.seconds is not None]
        hours = sum(timed) / 3600 if timed else None
        rows.append({"table": name, "kind": kind, "jobs": len(mine),
                     "memory": ", ".join(f"{mode} ×{count}" for mode, count in modes.items()),
                     "peak_gpu_gb": _max(job.estimate.required / GB for job in mine if job.estimate and job.on_gpu),
                     "host_gb": _max(job.estimate.host_bytes(job.on_gpu) / GB for job in mine if job.estimate),
                     "hours_per_job": hours / len(timed) if timed else None, "hours": hours,
                     "gpu_hours": sum(job.seconds for job in mine if job.on_gpu and job.seconds) / 3600,
                     "on_host": ", ".join(sorted({f"{job.dataset} {split}" for job in mine if job.estimate
                                                  for split in job.estimate.host_splits}))})
    return rows


def _max(values) -> float | None:
    values = list(values)
    return max(values) if values else None


def config_cost(config: dict, device: str = "gpu") -> tuple[list[dict], list[dict]]:
    """(summary rows per table and kind, then 'total' rows; one row per distillation job)."""
    found = sections(config, device)
    rows = [row for name, jobs in found.items() for row in summarise(name, jobs)]
    every = _unique([job for jobs in found.values() for job in jobs])
    rows += summarise("total", every)
    gpu_gb = memory.gpu_memory_gb(config)
    distills = []
    for job in every:
        if job.rule in ("distill", "distill_group") and job.settings:
            s = job.settings
            distills.append({"method": s["method"], "dataset": job.dataset, "ipc": s["ipc"], "kind": s["kind"],
                             "memory": s["memory"] if s["kind"] == "trajectory" else "", "chunk": s["chunk"],
                             "batch_syn": s["batch_syn"], "syn_steps": s["syn_steps"] if s["kind"] == "trajectory"
                             else "", "iterations": s["iterations"] if s["kind"] in LOGGED_KINDS else "",
                             "peak_gpu_gb": job.estimate.required / GB,
                             "fits": job.estimate.fits(gpu_gb), "hours": job.seconds / 3600})
    return rows, distills


def config_digest(config: dict) -> str:
    """A short hash of the config without its run-time settings (device, data_dir, reliability, runtime.tf32 and
    every rule's threads, which change no estimate): the cost rule's parameter, so that any other change recomputes
    the table (runtime.gpu_memory_gb too: the table plans and checks every job against that GPU)."""
    planned = {key: value for key, value in config.items() if key not in ("device", "data_dir", "reliability")}
    planned["runtime"] = {k: v for k, v in (config.get("runtime") or {}).items() if k != "tf32"}
    planned["resources"] = _without_threads(config.get("resources") or {})
    return hashlib.sha256(json.dumps(planned, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _without_threads(table: dict) -> dict:
    """A resources table without its threads (an entry left empty by that is as good as none)."""
    kept = {k: _without_threads(v) if isinstance(v, dict) else v for k, v in table.items() if k != "threads"}
    return {k: v for k, v in kept.items() if v != {}}


# SLURM requests from the models: host memory with this factor, runtime with this factor plus fixed minutes
# (start-up, loading the data, writing the result), before Snakemake's per-attempt growth.
HOST_SAFETY = 1.25
TIME_SAFETY, TIME_FIXED_MINUTES = 1.5, 15


def job(config: dict, rule: str, wildcards: dict, device: str) -> Job:
    """The Job a rule's wildcards name (the MODELLED_RULES)."""
    w = wildcards
    if rule in ("distill", "distill_group"):
        settings = resolve_method(config, w["method"], w["dataset"], int(w["ipc"]))
        if rule == "distill_group":
            settings = {**settings, "seed": settings["seed"] + int(w["group"])}
        return distill_job(config, rule, w["dataset"], settings, device)
    if rule == "train_expert":
        return expert_job(config, w["dataset"], w["norm"], w["model"], w["recipe"], int(w["k"]), device)
    if rule == "expert_stats":
        return stats_job(config, w["dataset"], w["norm"], w["model"], w["recipe"], device)
    if rule == "evaluate":
        return evaluate_job(config, w["method"], w["dataset"], int(w["ipc"]), w["arch"], w["protocol"],
                            int(w["seed"]), device)
    if rule == "evaluate_real":
        return real_job(config, w["dataset"], w["norm"], w["arch"], w["protocol"], int(w["seed"]), device)
    if rule == "stability_trial":
        spec = stability_spec(config, w["study"])
        settings = stability_settings(config, w["study"], w["method"])
        return distill_job(config, rule, spec["dataset"], settings, device, spec["iterations"])
    if rule == "nas_train":
        return nas_job(config, w["study"], w["source"], w["arch"], device)
    raise ValueError(f"rule '{rule}' is not modelled; modelled: {', '.join(MODELLED_RULES)}")


def job_resources(config: dict, rule: str, wildcards: dict, on_gpu: bool) -> dict:
    """mem_mb (host memory) and runtime (minutes) of a job from the models, on a GPU or on the CPU."""
    found = job(config, rule, wildcards, "gpu" if on_gpu else "cpu")
    mem_mb = math.ceil(found.estimate.host_bytes(on_gpu) * HOST_SAFETY / 2**20)
    return {"mem_mb": mem_mb, "runtime": math.ceil(found.seconds * TIME_SAFETY / 60) + TIME_FIXED_MINUTES}
