"""From a workflow config to the work it implies: table cells, resolved method settings, artifact paths.

The Snakefile and the tests both use this, so the paths rules write and the paths jobs ask for agree.
"""
from __future__ import annotations

import difflib
import itertools
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from distillery.budget.memory import AUTO, expert_estimate, expert_group_estimate, gpu_memory_gb, plan_memory
from distillery.data import get_spec
from distillery.distill.config import DistillConfig
from distillery.distill.run import load_synset
from distillery.evaluate import EvalConfig
from distillery.experts import check_batchable, get_recipe
from distillery.models import is_model_name
from distillery.nas import REAL, SPACES, convnet_space, read_ground_truth, sample

PATHS = {
    "train": "results/data/{dataset}/train.pt",
    "test": "results/data/{dataset}/test.pt",
    "meta": "results/data/{dataset}/meta.json",
    "zca": "results/data/{dataset}/zca.pt",
    "expert": "results/experts/{dataset}/{norm}/{model}/{recipe}/{k}.pt",
    "expert_stats": "results/experts/{dataset}/{norm}/{model}/{recipe}/stats.json",
    "synset": "results/synsets/{method}/{dataset}/ipc{ipc}/synset.pt",
    "distill_log": "results/synsets/{method}/{dataset}/ipc{ipc}/log.csv",
    "group_synset": "results/synsets/{method}/{dataset}/ipc{ipc}/group{group}/synset.pt",
    "group_log": "results/synsets/{method}/{dataset}/ipc{ipc}/group{group}/log.csv",
    "eval": "results/evals/{method}/{dataset}/ipc{ipc}/{arch}/{protocol}/seed{seed}.json",
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
# Backbones other than ConvNet (depth 3): the reference's deeper ConvNets leave a 4x4 map before the head at
# 64 and 128 px. digits (8 px): two blocks leave a 2x2 map (instance norm over the 2x2 map of a third block
# made the meta-gradient explode, up to 1e7 for the learned lr), and width 32 keeps the laptop run in minutes.
DEFAULT_MODELS = {"digits": "ConvNetD2W32", "tiny-imagenet": "ConvNetD4", "imagenet-64": "ConvNetD4",
                  "imagenette": "ConvNetD5", "imagewoof": "ConvNetD5", "imagemeow": "ConvNetD5",
                  "imagesquawk": "ConvNetD5", "imagefruit": "ConvNetD5", "imageyellow": "ConvNetD5"}


@dataclass(frozen=True)
class Cell:
    """One number in a table: `method` distilled on `dataset` at `ipc`, evaluated on `arch` under `protocol`."""
    table: str
    method: str
    dataset: str
    ipc: int
    arch: str
    protocol: str = "default"


# What the Snakefile loads before --configfile, in order (relative to the repository).
CONFIG_FILES = ("config/methods.yaml", "config/hparams/mtt.yaml", "config/hparams/ftd.yaml", "config/hparams/ast.yaml",
                "config/hparams/att.yaml", "config/hparams/apm.yaml", "config/config.yaml")
# What a table's cells report (`measure:` of a table, default accuracy) and the file each number comes from.
MEASURES = ("accuracy", "expert_accuracy", "avg_var", "seconds_per_iteration")
EXPERT_MEASURES = ("expert_accuracy", "avg_var")  # read from the experts' stats.json: no distillation needed
LOGGED_KINDS = ("trajectory", "adversarial")      # kinds whose distillation writes a per-iteration log
EXTERNAL = "external"  # a cell's method `external:<name>`: a set imported by distillery.interop, evaluated only


def merge(base: dict, update: dict) -> dict:
    """Snakemake's config merge: dicts key by key, everything else (lists too) replaced."""
    merged = dict(base)
    for key, value in update.items():
        merged[key] = merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def load_yaml(path: str | Path) -> dict:
    """A YAML config file; a syntax error names the file, line and column (Snakemake's own message names neither)."""
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"{path}{where}: not valid YAML: {error.problem or error.context}") from None


def load_config(root: str | Path, *extra: str | Path) -> dict:
    """The workflow's config as Snakemake builds it: CONFIG_FILES under `root`, then each `extra` file."""
    config: dict = {}
    for path in [Path(root) / f for f in CONFIG_FILES] + [Path(p) for p in extra]:
        config = merge(config, load_yaml(path))
    return config


SCHEMA = "workflow/schemas/config.schema.yaml"  # relative to the repository
JSON_TYPES = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
              "array": "a list", "object": "a mapping", "null": "null"}


def _schema_problem(error) -> str:
    """One schema violation as a line naming the field: an unknown key with the nearest allowed one, a wrong type
    with the type expected, else jsonschema's own message."""
    field = ".".join(str(part) for part in error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        allowed = sorted(error.schema.get("properties", {}))
        lines = []
        for key in (k for k in error.instance if k not in allowed):
            near = difflib.get_close_matches(str(key), allowed, n=1)
            lines.append(f"unknown key '{key}' {f'in {field}' if field else 'at the top level'}"
                         f"{f'; did you mean {near[0]!r}?' if near else ''} (allowed: {', '.join(allowed)})")
        return "\n".join(lines)
    if error.validator == "type":
        expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        return f"{field}: {error.instance!r} is not {' or '.join(JSON_TYPES.get(t, t) for t in expected)}"
    return f"{field or 'config'}: {error.message}"


def check_schema(config: dict, schema_path: str | Path) -> None:
    """The config against the workflow's JSON schema, each problem naming its field (Snakemake's validate, run after
    this, then fills in the defaults)."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    problems = sorted(_schema_problem(error) for error in jsonschema.Draft202012Validator(schema).iter_errors(config))
    if problems:
        raise ValueError("the config does not fit workflow/schemas/config.schema.yaml:\n  " + "\n  ".join(problems))


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _preset(config: dict, method: str) -> dict:
    """The method preset with its `base` chain merged (base first)."""
    presets = config.get("methods", {})
    chain, name = [], method
    while name is not None:
        if name not in presets:
            where = f"method '{method}'" + (" (base of a preset)" if name != method else "")
            raise ValueError(f"unknown {where}: '{name}'; define it under `methods:` or choose one of: "
                             f"{', '.join(sorted(presets))}")
        if name in chain:
            raise ValueError(f"method '{method}': its `base` chain loops at '{name}'")
        chain.append(name)
        name = presets[name].get("base")
    merged: dict = {}
    for name in reversed(chain):
        merged.update(presets[name])
    merged.pop("base", None)
    return merged


def default_model(dataset: str) -> str:
    """The architecture a dataset's methods distil with unless a table or preset names another."""
    return DEFAULT_MODELS.get(dataset, "ConvNet")


def external_settings(method: str, dataset: str, ipc: int) -> dict:
    """An imported set's settings, from its synset file: kind external, its model (a cell's default arch), zca."""
    path = PATHS["synset"].format(method=method, dataset=dataset, ipc=ipc)
    if not Path(path).is_file():
        raise ValueError(f"method '{method}' on {dataset} ipc{ipc}: no imported set at {path}; import it first: "
                         f"python -m distillery.interop import-synset IMAGES --dataset {dataset} "
                         f"--name {method.split(':', 1)[1]} (see the README)")
    meta = load_synset(path, verify=False)["meta"]
    if (meta.get("method"), meta.get("dataset"), meta.get("ipc")) != (method, dataset, ipc):
        raise ValueError(f"{path} is {meta.get('method')} on {meta.get('dataset')} ipc{meta.get('ipc')}, not "
                         f"{method} on {dataset} ipc{ipc}; import the set again")
    return {"method": method, "kind": EXTERNAL, "ipc": ipc, "model": meta["model"], "zca": meta["zca"]}


def logged_method_pattern(config: dict) -> str:
    """A regex matching exactly the config's methods whose distillation writes a per-iteration log (LOGGED_KINDS):
    the cells whose figures are images and curves, rendered by one job (rule plot_cell)."""
    names = [name for name in config.get("methods", {}) if _preset(config, name).get("kind") in LOGGED_KINDS]
    return f"(?:{'|'.join(map(re.escape, names))})" if names else "(?!)"


def resolve_method(config: dict, method: str, dataset: str, ipc: int) -> dict:
    """Settings of one distillation: hparam table (dataset default, then ipcN) < preset < distill.overrides;
    a trajectory method's `memory` (default auto) resolved against runtime.gpu_memory_gb (budget.plan_memory).
    An `external:<name>` method is an imported set (external_settings)."""
    get_spec(dataset)
    if method.startswith(f"{EXTERNAL}:"):
        return external_settings(method, dataset, int(ipc))
    preset = _preset(config, method)
    settings: dict = {"model": default_model(dataset)}
    table_name = preset.pop("hparams", None)
    if table_name is not None:
        table = config.get("hparams", {}).get(table_name)
        if table is None:
            raise ValueError(f"method '{method}' uses hyperparameter table '{table_name}', which is not defined "
                             f"under `hparams:`")
        if dataset not in table:
            raise ValueError(f"no '{table_name}' hyperparameters for dataset '{dataset}'; add "
                             f"hparams.{table_name}.{dataset}.default (and ipc{ipc}) to your config")
        settings.update(table[dataset].get("default", {}))
        settings.update(table[dataset].get(f"ipc{ipc}", {}))
    settings.update(preset)
    settings.update(config.get("distill", {}).get("overrides") or {})
    settings.update(method=method, ipc=int(ipc), seed=int(config.get("seed", 0)))
    if settings.get("kind") == "merged":  # the groups' model and domain
        group = resolve_method(config, settings["groups_of"], dataset, settings["group_ipc"])
        settings.update(model=group["model"], zca=group["zca"], recipe=group["recipe"])
    memory = settings.pop("memory", AUTO) if settings.get("kind") == "trajectory" else None
    cfg = DistillConfig.from_dict(settings)  # validates every field
    if not is_model_name(cfg.model):
        raise ValueError(f"method '{method}' on {dataset}: unknown model '{cfg.model}'")
    if memory is not None:
        cfg = replace(cfg, **plan_memory(cfg, memory, get_spec(dataset), gpu_memory_gb(config),
                                         f"method '{method}' on {dataset} ipc{ipc}"))
    return cfg.to_dict()


def eval_config(config: dict, protocol: str = "default") -> EvalConfig:
    """The evaluation protocol: `evaluation` settings, with a named `protocols` entry's changes on top."""
    protocols = config.get("protocols") or {}
    if protocol != "default" and protocol not in protocols:
        raise ValueError(f"unknown evaluation protocol '{protocol}'; define it under `protocols:` or choose one "
                         f"of: {', '.join(['default', *protocols])}")
    options = {k: v for k, v in config.get("evaluation", {}).items() if k != "seeds"}
    return EvalConfig(**{**options, **protocols.get(protocol, {})})


def eval_seeds(config: dict) -> list[int]:
    return list(range(int(config.get("evaluation", {}).get("seeds", 5))))


def table_cells(config: dict, table: str | None = None) -> list[Cell]:
    """Every cell of every table (or of `table`): the product of each cell spec's lists, in order, unique."""
    cells: list[Cell] = []
    for spec in config.get("tables", []):
        if table is not None and spec["name"] != table:
            continue
        for row in spec["cells"]:
            protocols = _as_list(row.get("protocol", "default"))
            for method, dataset, ipc in itertools.product(*(_as_list(row[k]) for k in ("method", "dataset", "ipc"))):
                archs = _as_list(row.get("arch") or resolve_method(config, method, dataset, ipc)["model"])
                for arch, protocol in itertools.product(archs, protocols):
                    if not is_model_name(arch):
                        raise ValueError(f"table '{spec['name']}': unknown architecture '{arch}'")
                    eval_config(config, protocol)
                    cell = Cell(spec["name"], method, dataset, int(ipc), arch, protocol)
                    if cell not in cells:
                        cells.append(cell)
    if table is not None and not cells:
        table_spec(config, table)  # names the tables there are
    return cells


def expert_overrides(config: dict, dataset: str) -> dict:
    """Recipe settings forced on `dataset`'s experts: `experts.datasets[dataset]`, then `experts.overrides` (every
    dataset) over it; so a setting made for one small dataset never reaches another's experts."""
    experts = config.get("experts", {})
    return merge((experts.get("datasets") or {}).get(dataset) or {}, experts.get("overrides") or {})


def expert_seeds(config: dict) -> list[int]:
    return list(range(int(config.get("experts", {}).get("count", 10))))


def expert_dir(dataset: str, settings: dict) -> dict:
    """The wildcards naming the experts of resolved `settings`: dataset, norm, model, recipe."""
    get_recipe(settings["recipe"])
    norm = "zca" if settings["zca"] else "std"
    return dict(dataset=dataset, norm=norm, model=settings["model"], recipe=settings["recipe"])


def expert_files(config: dict, dataset: str, settings: dict) -> list[str]:
    """Expert trajectory files a distillation with resolved `settings` reads (coresets none, herding and kmeans
    expert 0)."""
    if settings["kind"] in ("merged", EXTERNAL) or settings["kind"] == "coreset" and settings["select"] not in (
            "herding", "kmeans"):
        return []
    seeds = [0] if settings["kind"] == "coreset" else expert_seeds(config)
    return [PATHS["expert"].format(**expert_dir(dataset, settings), k=k) for k in seeds]


def parse_expert_path(path: str | Path) -> dict:
    """The wildcards of an expert file (PATHS["expert"], relative or below another root): dataset, norm, model,
    recipe and k (an int)."""
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(PATHS["expert"]))
    found = re.search(f"(?:^|/){pattern}$", Path(path).as_posix())
    if found is None:
        raise ValueError(f"{path} is not an expert file path ({PATHS['expert']})")
    return {**found.groupdict(), "k": int(found["k"])}


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


def group_files(dataset: str, settings: dict) -> list[str]:
    """The independently distilled groups a `merged` method concatenates: groups_of at group_ipc, groups
    0 … ipc/group_ipc − 1 (each its own job, with seed + group)."""
    if settings["kind"] != "merged":
        return []
    return [PATHS["group_synset"].format(method=settings["groups_of"], dataset=dataset, ipc=settings["group_ipc"],
                                         group=g) for g in range(settings["ipc"] // settings["group_ipc"])]


def table_spec(config: dict, table: str) -> dict:
    for spec in config.get("tables", []):
        if spec["name"] == table:
            return spec
    raise ValueError(f"no table named '{table}' in the config; tables: "
                     f"{', '.join(t['name'] for t in config.get('tables', []))}")


def table_sources(config: dict, table: str) -> list[dict]:
    """The files behind every number of `table`, each with its cell's keys (method, dataset, ipc, arch, protocol)
    and `path`: evaluation JSONs per seed (accuracy), the experts' stats.json (expert_accuracy, avg_var) or the
    distillation's log.csv (seconds_per_iteration)."""
    measure = table_spec(config, table).get("measure", "accuracy")
    if measure not in MEASURES:
        raise ValueError(f"table '{table}': unknown measure '{measure}'; choose one of: {', '.join(MEASURES)}")
    sources = []
    for cell in table_cells(config, table):
        keys = dict(method=cell.method, dataset=cell.dataset, ipc=cell.ipc, arch=cell.arch, protocol=cell.protocol)
        where = dict(method=cell.method, dataset=cell.dataset, ipc=cell.ipc)
        if measure == "accuracy":
            sources += [{**keys, "path": PATHS["eval"].format(**keys, seed=seed)} for seed in eval_seeds(config)]
            continue
        settings = resolve_method(config, cell.method, cell.dataset, cell.ipc)
        if settings["kind"] != "trajectory" and not (measure == "seconds_per_iteration"
                                                     and settings["kind"] in LOGGED_KINDS):
            raise ValueError(f"table '{table}': measure {measure} needs trajectory methods; '{cell.method}' is a "
                             f"{settings['kind']}")
        if measure in EXPERT_MEASURES:
            path = PATHS["expert_stats"].format(**expert_dir(cell.dataset, settings))
        else:
            path = PATHS["distill_log"].format(**where)
        sources.append({**keys, "path": path})
    return sources


def figure_sources(config: dict, table: str, figure: str) -> dict[str, dict]:
    """Files a table figure reads besides the table: {label: {path, syn_steps}} for its trajectory cells —
    smoothness: the stats.json of each expert set (labelled by recipe); match_steps: each distillation's
    log.csv (labelled by method and N_s). Other figures: {}. Labels name the dataset and IPC when they vary."""
    if figure not in ("smoothness", "match_steps"):
        return {}
    cells = table_cells(config, table)
    several = len({(c.dataset, c.ipc) for c in cells}) > 1
    sources: dict[str, dict] = {}
    for cell in cells:
        settings = resolve_method(config, cell.method, cell.dataset, cell.ipc)
        if settings["kind"] != "trajectory":
            continue
        if figure == "smoothness":
            label, path = settings["recipe"], PATHS["expert_stats"].format(**expert_dir(cell.dataset, settings))
            where = cell.dataset
        else:
            label = f"{cell.method} (N_s = {settings['syn_steps']})"
            path = PATHS["distill_log"].format(method=cell.method, dataset=cell.dataset, ipc=cell.ipc)
            where = f"{cell.dataset} IPC {cell.ipc}"
        sources.setdefault(f"{where} · {label}" if several else label,
                           {"path": path, "syn_steps": settings["syn_steps"]})
    return sources


def stability_spec(config: dict, study: str) -> dict:
    for spec in config.get("stability") or []:
        if spec["name"] == study:
            return spec
    raise ValueError(f"no stability study named '{study}' in the config")


def stability_trials(config: dict, study: str) -> list[dict]:
    """Every run of a stability study: method × parameter × multiplier × seed, with its result path."""
    spec = stability_spec(config, study)
    trials = []
    for method, parameter, multiplier, seed in itertools.product(
            spec["methods"], spec["parameters"], spec["multipliers"], range(int(spec["seeds"]))):
        where = dict(study=study, method=method, parameter=parameter, multiplier=f"{multiplier:g}", seed=seed)
        trials.append({**where, "path": PATHS["stability_trial"].format(**where)})
    return trials


def stability_settings(config: dict, study: str, method: str) -> dict:
    """The resolved settings a study's runs of `method` start from (its dataset and IPC)."""
    spec = stability_spec(config, study)
    settings = resolve_method(config, method, spec["dataset"], spec["ipc"])
    if settings["kind"] != "trajectory":
        raise ValueError(f"stability study '{study}': '{method}' is a {settings['kind']}, not a trajectory method")
    return settings


def nas_spec(config: dict, study: str) -> dict:
    for spec in config.get("nas") or []:
        if spec["name"] == study:
            return spec
    raise ValueError(f"no NAS study named '{study}' in the config; studies: "
                     f"{', '.join(s['name'] for s in config.get('nas') or []) or 'none'}")


def nas_architectures(config: dict, study: str) -> list[str]:
    """The model names a study trains: the 720 ConvNets, or the cells of its ground-truth file (none while the file
    is missing: its table job then fails saying what to supply); `nas_subset` of them when set (seeded by `seed`)."""
    spec = nas_spec(config, study)
    if spec["space"] == "convnet":
        names = convnet_space()
    elif Path(spec["ground_truth"]).is_file():
        names = list(read_ground_truth(spec["ground_truth"], study))
    else:
        return []
    return sample(names, config.get("nas_subset"), int(config.get("seed", 0)))


def nas_settings(config: dict, study: str, source: str) -> dict | None:
    """The resolved method settings of a study's synthetic source (None for the real training split)."""
    spec = nas_spec(config, study)
    if source not in spec["sources"]:
        raise ValueError(f"NAS study '{study}' has no source '{source}'; sources: {', '.join(spec['sources'])}")
    if source == REAL:
        return None
    if "ipc" not in spec:
        raise ValueError(f"NAS study '{study}': source '{source}' is a synthetic set; give the study an `ipc`")
    return resolve_method(config, source, spec["dataset"], spec["ipc"])


def nas_synset(config: dict, study: str, source: str) -> str | None:
    """The synset file a source's architectures train on (None: the real training split)."""
    if nas_settings(config, study, source) is None:
        return None
    spec = nas_spec(config, study)
    return PATHS["synset"].format(method=source, dataset=spec["dataset"], ipc=spec["ipc"])


def nas_eval_config(config: dict, study: str, source: str) -> EvalConfig:
    """The protocol an architecture trains under: the source's protocol (study `protocols`) with the study's
    `epochs` (FTD and APM: 200)."""
    spec = nas_spec(config, study)
    cfg = eval_config(config, (spec.get("protocols") or {}).get(source, "default"))
    return EvalConfig(**{**vars(cfg), "epochs": spec.get("epochs", cfg.epochs)})


def nas_results(config: dict, study: str) -> list[dict]:
    """Every (source, architecture) job of a study with its result path, sources in config order."""
    spec = nas_spec(config, study)
    return [{"source": source, "arch": arch, "path": PATHS["nas_result"].format(study=study, source=source, arch=arch)}
            for source in spec["sources"] for arch in nas_architectures(config, study)]


def check_nas(config: dict) -> None:
    """A study's space, sources, protocols and reference are usable, before any job."""
    for spec in config.get("nas") or []:
        study = spec["name"]
        if spec["space"] not in SPACES:
            raise ValueError(f"NAS study '{study}': unknown space '{spec['space']}'; choose one of: "
                             f"{', '.join(SPACES)}")
        if spec["space"] == "convnet" and REAL not in spec["sources"]:
            raise ValueError(f"NAS study '{study}': the convnet space ranks against training on the real data; add "
                             f"'{REAL}' to its sources (or use space bench201 with a ground_truth file)")
        if spec["space"] == "bench201" and not spec.get("ground_truth"):
            raise ValueError(f"NAS study '{study}': space bench201 needs `ground_truth`, a CSV of arch,accuracy")
        for source in spec.get("protocols") or {}:
            if source not in spec["sources"]:
                raise ValueError(f"NAS study '{study}': `protocols` names '{source}', which is not a source")
        for source in spec["sources"]:
            settings = nas_settings(config, study, source)
            if settings is not None:
                expert_files(config, spec["dataset"], settings)
            nas_eval_config(config, study, source)
        nas_architectures(config, study)


# Dataset scales for per-rule resources (config `resources.<rule>.<scale>`).
SCALES = {"small": ("digits", "mnist", "fashion-mnist"), "cifar": ("cifar10", "cifar100", "svhn"),
          "tiny": ("tiny-imagenet",), "imagenet": ("imagenet-64", "imagenette", "imagewoof", "imagemeow",
                                                  "imagesquawk", "imagefruit", "imageyellow")}
RESOURCE_KEYS = ("mem_mb", "runtime", "gpu", "threads")
# Rules whose mem_mb and runtime come from the memory and time models (budget/) unless the table names them.
MODELLED_RULES = ("train_expert", "expert_stats", "distill", "distill_group", "evaluate", "stability_trial",
                  "nas_train")


def dataset_scale(dataset: str) -> str:
    return next(scale for scale, names in SCALES.items() if dataset in names)


def rule_resources(config: dict, rule: str, dataset: str | None = None, attempt: int = 1,
                   job: dict | None = None) -> dict:
    """mem_mb, runtime (minutes), gpu and threads (torch's CPU threads) of a job: `resources.default` <
    `resources.<rule>` < the rule's entry for the dataset's scale; for a modelled rule's `job` (its wildcards),
    mem_mb and runtime from the memory and time models (budget.cost.job_resources) unless the rule or its scale entry
    sets them. Memory and runtime grow with the attempt (Snakemake `--retries`), threads do not."""
    table = config["resources"]
    chosen = dict(table["default"])
    per_rule = table.get(rule, {})
    chosen.update({k: v for k, v in per_rule.items() if k in RESOURCE_KEYS})
    scale = per_rule.get(dataset_scale(dataset), {}) if dataset is not None else {}
    chosen.update(scale)
    if job is not None and rule in MODELLED_RULES:
        from distillery.budget.cost import job_resources

        explicit = set(per_rule) | set(scale)
        modelled = job_resources(config, rule, job, chosen["gpu"] > 0)
        chosen.update({k: v for k, v in modelled.items() if k not in explicit})
    return {"mem_mb": chosen["mem_mb"] * attempt, "runtime": chosen["runtime"] * attempt, "gpu": chosen["gpu"],
            "threads": chosen["threads"]}


def check_config(config: dict) -> None:
    """Resolve every cell once, so a bad method, dataset, model, hyperparameter or measure fails before any job."""
    for spec in config.get("tables", []):
        table_sources(config, spec["name"])
    for spec in config.get("stability") or []:
        for method in spec["methods"]:
            expert_files(config, spec["dataset"], stability_settings(config, spec["name"], method))
    check_nas(config)
    for dataset, settings in distillations(config):
        if settings["kind"] == EXTERNAL:  # imported: nothing to distil or train
            continue
        smallest = get_spec(dataset).min_class
        if smallest is not None and settings["ipc"] > smallest:
            raise ValueError(f"{dataset} ipc{settings['ipc']} (method '{settings['method']}'): IPC is larger than the "
                             f"smallest class ({smallest} training images); choose ipc <= {smallest}")
        expert_files(config, dataset, settings)
        epochs = get_recipe(settings["recipe"], **expert_overrides(config, dataset)).epochs
        needed = settings["max_start_epoch"] - 1 + settings["expert_epochs"]
        if settings["kind"] == "trajectory" and epochs < needed:
            raise ValueError(f"method '{settings['method']}' on {dataset} ipc{settings['ipc']} needs experts of at "
                             f"least {needed} epochs (max_start_epoch {settings['max_start_epoch']} + expert_epochs "
                             f"{settings['expert_epochs']} - 1) but experts train {epochs}")


INITIAL_SHARE_WARNING = 0.10  # warn before any job where an EMA result keeps more of its initial images


def initial_share_line(dataset: str, settings: dict) -> tuple[str, float] | None:
    """('ftd cifar10 IPC 10: EMA decay 0.9995 ^ 5000 iterations keeps 8.2% of the initial images', 0.082), or
    None without an EMA."""
    if settings.get("ema_decay") is None:  # also imported sets, whose settings are no DistillConfig
        return None
    share = DistillConfig.from_dict(settings).initial_share()
    return (f"{settings['method']} {dataset} IPC {settings['ipc']}: EMA decay {settings['ema_decay']} ^ "
            f"{settings['iterations']} iterations keeps {100 * share:.1f}% of the initial images"), share


def initial_share_warnings(config: dict) -> list[str]:
    """One warning per distillation whose EMA result would keep more than INITIAL_SHARE_WARNING of its initial
    images (decay^iterations), naming the cell, the decay and the iterations."""
    warnings = []
    for dataset, settings in distillations(config):
        found = initial_share_line(dataset, settings)
        if found and found[1] > INITIAL_SHARE_WARNING:
            warnings.append(f"{found[0]} (more than {100 * INITIAL_SHARE_WARNING:.0f}%): the result is largely its "
                            f"initialisation; raise iterations or lower ema_decay unless that is the run to reproduce")
    return list(dict.fromkeys(warnings))


def table_notes(config: dict, table: str) -> list[str]:
    """Notes printed under a table: its config `note`, then the share of initial images each EMA cell keeps."""
    spec = table_spec(config, table)
    notes = [spec["note"]] if spec.get("note") else []
    shares = []
    for cell in table_cells(config, table):
        found = initial_share_line(cell.dataset, resolve_method(config, cell.method, cell.dataset, cell.ipc))
        if found and found[0] not in shares:
            shares.append(found[0])
    if shares:
        notes.append("EMA results (FTD, ATT: no bias correction, so decay^iterations of the result is still the "
                     "initial images): " + "; ".join(shares) + ".")
    return notes


def distillations(config: dict) -> list[tuple[str, dict]]:
    """(dataset, resolved settings) of every synthetic set the tables and NAS studies read."""
    found = [(cell.dataset, resolve_method(config, cell.method, cell.dataset, cell.ipc))
             for cell in table_cells(config)]
    for spec in config.get("nas") or []:
        found += [(spec["dataset"], settings) for source in spec["sources"]
                  if (settings := nas_settings(config, spec["name"], source)) is not None]
    return found


# DVC (dvc.yaml): one stage per entry of `dvc_experts` in config/config.yaml, keyed <dataset>-<norm>-<model>-<recipe>.
def expert_sets(config: dict) -> list[dict]:
    """The expert sets (dataset, norm, model, recipe) the config's tables, NAS and stability studies read, in order;
    a merged method's are those of its groups."""
    sets: list[dict] = []

    def add(dataset: str, settings: dict) -> None:
        if settings["kind"] == "merged":
            settings = resolve_method(config, settings["groups_of"], dataset, settings["group_ipc"])
        if expert_files(config, dataset, settings) and expert_dir(dataset, settings) not in sets:
            sets.append(expert_dir(dataset, settings))

    for dataset, settings in distillations(config):
        add(dataset, settings)
    for spec in config.get("stability") or []:
        for method in spec["methods"]:
            add(spec["dataset"], stability_settings(config, spec["name"], method))
    return sets


def expert_set_files(config: dict, dataset: str, norm: str, model: str, recipe: str) -> list[str]:
    """Every file of one expert set (experts 0 … experts.count − 1): the Snakemake targets of its DVC stage."""
    get_spec(dataset)
    get_recipe(recipe)
    if norm not in ("zca", "std") or not is_model_name(model):
        raise ValueError(f"not an expert set: norm '{norm}' (zca or std), model '{model}'")
    where = dict(dataset=dataset, norm=norm, model=model, recipe=recipe)
    return [PATHS["expert"].format(**where, k=k) for k in expert_seeds(config)]


def main(argv: list[str] | None = None) -> None:
    """From the repository root, CONFIG merged over the default config as Snakemake does:
    `python -m distillery.plan check CONFIG...` checks the config files as the workflow does before any job, and
    names the file and line of a YAML error (Snakemake reads --configfile before the workflow can, and does not);
    `python -m distillery.plan expert-sets CONFIG` prints the `dvc_experts` entries of CONFIG's expert sets;
    `python -m distillery.plan expert-files CONFIG DATASET NORM MODEL RECIPE` prints that set's files;
    `python -m distillery.plan cost CONFIG [--gpu-memory-gb N] [--device gpu|cpu] [--csv FILE]` prints every
    table's jobs with their estimated GPU memory and hours (budget/cost.py) and writes them as CSV."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m distillery.plan", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check").add_argument("config", nargs="+")
    commands.add_parser("expert-sets").add_argument("config")
    files = commands.add_parser("expert-files")
    for name in ("config", "dataset", "norm", "model", "recipe"):
        files.add_argument(name)
    cost = commands.add_parser("cost")
    cost.add_argument("config")
    cost.add_argument("--gpu-memory-gb", type=float, help="the GPU's memory (default: runtime.gpu_memory_gb)")
    cost.add_argument("--device", choices=("gpu", "cpu"), default="gpu", help="device class of the time model")
    cost.add_argument("--csv", default="cost.csv", help="summary CSV (distillations: <stem>_distillations.csv)")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            config = load_config(Path.cwd(), *args.config)
            check_schema(config, Path.cwd() / SCHEMA)
            check_config(config)
            print(f"{' '.join(args.config)}: the config is valid")
            return
        config = load_config(Path.cwd(), args.config)
        if args.command == "cost":
            from distillery.budget.cost import write_cost

            if args.gpu_memory_gb is not None:
                config["runtime"] = {**config.get("runtime", {}), "gpu_memory_gb": args.gpu_memory_gb}
            csv_path = Path(args.csv)
            print(write_cost(config, args.device, args.config, csv_path,
                             csv_path.with_name(f"{csv_path.stem}_distillations.csv")))
        elif args.command == "expert-sets":
            for where in expert_sets(config):
                fields = ", ".join(f"{k}: {v}" for k, v in where.items())
                print(f"  {'-'.join(where.values())}:\n    {{config: {args.config}, {fields}}}")
        else:
            print("\n".join(expert_set_files(config, args.dataset, args.norm, args.model, args.recipe)))
    except (OSError, ValueError) as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
