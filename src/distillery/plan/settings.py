"""What the config says: the files Snakemake merges, the schema check, method presets over hyperparameter tables
resolved into one distillation's settings (once per cell and config), evaluation protocols, expert settings and
the declared resources of a rule."""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import fields, replace
from pathlib import Path

import yaml

from distillery.budget.memory import gpu_memory_gb, plan_memory
from distillery.choices import AUTO, LOGGED_KINDS
from distillery.data import get_spec
from distillery.distill.config import DistillConfig, uses
from distillery.synset import load_synset
from distillery.evaluate import EvalConfig
from distillery.models import is_model_name
from distillery.typecheck import SettingError
from distillery.plan.paths import PATHS

# Backbones other than ConvNet (depth 3): the reference's deeper ConvNets leave a 4x4 map before the head at
# 64 and 128 px. digits (8 px): two blocks leave a 2x2 map (instance norm over the 2x2 map of a third block
# made the meta-gradient explode, up to 1e7 for the learned lr), and width 32 keeps the laptop run in minutes.
DEFAULT_MODELS = {"digits": "ConvNetD2W32", "tiny-imagenet": "ConvNetD4", "imagenet-64": "ConvNetD4",
                  "imagenette": "ConvNetD5", "imagewoof": "ConvNetD5", "imagemeow": "ConvNetD5",
                  "imagesquawk": "ConvNetD5", "imagefruit": "ConvNetD5", "imageyellow": "ConvNetD5"}

# What the Snakefile loads before --configfile, in order (relative to the repository).
CONFIG_FILES = ("config/methods.yaml", "config/hparams/mtt.yaml", "config/hparams/ftd.yaml", "config/hparams/ast.yaml",
                "config/hparams/att.yaml", "config/hparams/apm.yaml", "config/hparams/datm.yaml",
                "config/config.yaml")
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


def type_cli_values(config: dict, cli: dict) -> None:
    """Read the scalars of nested `--config` values (`reliability={checkpoint_every: 10}`) in `config` as a config file
    would: Snakemake parses them with YAML's base loader, which makes every scalar text, so `10` would fail as "not
    an integer". A scalar still equal to the command line's text becomes what YAML reads (10 an integer, 1.0e-5 a
    number, true a boolean, null); text YAML reads as text stays. Top-level values Snakemake types itself."""
    for key, given in cli.items():
        if isinstance(given, (dict, list)) and key in config:
            config[key] = _typed(config[key], given)


def _typed(current: object, given: object) -> object:
    if isinstance(given, dict) and isinstance(current, dict):
        return {**current, **{k: _typed(current.get(k), v) for k, v in given.items()}}
    if isinstance(given, list) and isinstance(current, list) and len(given) == len(current):
        return [_typed(c, g) for c, g in zip(current, given)]
    if isinstance(given, str) and current == given:
        read = yaml.safe_load(given) if given.strip() else given
        return read if read is None or isinstance(read, (bool, int, float)) else given
    return current


SCHEMA = "workflow/schemas/config.schema.yaml"  # relative to the repository
JSON_TYPES = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
              "array": "a list", "object": "a mapping", "null": "null"}


def _schema_problem(error) -> str:
    """One schema violation as a line naming the field and what it must be: an unknown key with the nearest allowed
    one, a value off a closed list with the list, a wrong type with the type expected, a bound with the bound, and
    for a value that may take one of several forms (a name or a list of names), the problem within the form its
    type fits; else jsonschema's own message."""
    field = ".".join(str(part) for part in error.absolute_path)
    value = error.instance
    if error.validator == "additionalProperties" and error.validator_value is False:
        allowed = sorted(error.schema.get("properties", {}))
        lines = []
        for key in (k for k in error.instance if k not in allowed):
            near = difflib.get_close_matches(str(key), allowed, n=1)
            lines.append(f"unknown key '{key}' {f'in {field}' if field else 'at the top level'}"
                         f"{f'; did you mean {near[0]!r}?' if near else ''} (allowed: {', '.join(allowed)})")
        return "\n".join(lines)
    if error.validator in ("oneOf", "anyOf") and error.context:
        forms: dict = {}
        for sub in error.context:
            forms.setdefault(sub.relative_schema_path[0], []).append(sub)
        fitting = [subs for subs in forms.values() if not any(s.validator == "type" and not s.relative_path
                                                               for s in subs)]
        if fitting:
            return _schema_problem(fitting[0][0])
        types = [t for subs in forms.values() for s in subs if s.validator == "type" for t in _types(s)]
        return f"{field}: {value!r} is not {' or '.join(JSON_TYPES.get(t, t) for t in dict.fromkeys(types))}"
    if error.validator == "type":
        return f"{field}: {value!r} is not {' or '.join(JSON_TYPES.get(t, t) for t in _types(error))}"
    if error.validator == "enum":
        name = str(error.absolute_path[-1]) if error.absolute_path else "value"
        what = (f"unknown value {value!r} in {error.absolute_path[-2]}" if name.isdigit() and len(error.absolute_path)
                > 1 else f"unknown {name} {value!r}")
        return f"{field}: {what}; choose one of: {', '.join(map(str, error.validator_value))}"
    bounds = {"minimum": "at least", "exclusiveMinimum": "greater than", "maximum": "at most",
              "exclusiveMaximum": "less than"}
    if error.validator in bounds:
        return f"{field}: {value!r} must be {bounds[error.validator]} {error.validator_value}"
    return f"{field or 'config'}: {error.message}"


def _types(error) -> list[str]:
    """The JSON types a `type` violation expected."""
    return error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]


def check_schema(config: dict, schema_path: str | Path) -> None:
    """The config against the workflow's JSON schema, each problem naming its field (Snakemake's validate, run after
    this, then fills in the defaults)."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    problems = sorted(_schema_problem(error) for error in jsonschema.Draft202012Validator(schema).iter_errors(config))
    if problems:
        raise ValueError("the config does not fit workflow/schemas/config.schema.yaml:\n  " + "\n  ".join(problems))


def _preset(config: dict, method: str) -> dict:
    """The method preset with its `base` chain merged (base first)."""
    presets = config.get("methods", {})
    chain, name = [], method
    while name is not None:
        if name not in presets:
            what = f"unknown method '{name}'" if name == method else f"method '{method}': unknown base '{name}'"
            raise ValueError(f"{what}; define it under methods: or choose one of: "
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


def method_protocol(config: dict, method: str) -> str:
    """The evaluation protocol of a method's cells where a table names none: its preset's `protocol` (a method
    evaluated as its authors' code evaluates, e.g. AST's presets: `ast`), else "default"; imported sets "default"."""
    if method.startswith(f"{EXTERNAL}:"):
        return "default"
    return _preset(config, method).get("protocol", "default")


def default_model(dataset: str) -> str:
    """The architecture a dataset's methods distil with unless a table or preset names another."""
    return DEFAULT_MODELS.get(dataset, "ConvNet")


def logged_method_pattern(config: dict) -> str:
    """A regex matching exactly the config's methods whose distillation writes a per-iteration log (LOGGED_KINDS):
    the cells whose figures are images and curves, rendered by one job (rule plot_cell)."""
    names = [name for name in config.get("methods", {}) if _preset(config, name).get("kind") in LOGGED_KINDS]
    return f"(?:{'|'.join(map(re.escape, names))})" if names else "(?!)"


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


# The config keys a method's resolution reads: its cache key is their content, so a changed config resolves anew.
RESOLVED_FROM = ("methods", "hparams", "distill", "seed", "runtime")
_resolved: dict[tuple, DistillConfig] = {}


def resolve_method(config: dict, method: str, dataset: str, ipc: int) -> dict:
    """Settings of one distillation: hparam table (dataset default, then ipcN; table_settings) < preset <
    distill.overrides; a trajectory method's `memory` (default auto) resolved against runtime.gpu_memory_gb
    (budget.plan_memory).
    Each (config, method, dataset, ipc) is resolved once into a DistillConfig, which every later call (the
    planner's targets, checks, resources and costs, and every job's inputs and params) is handed as a fresh dict.
    An `external:<name>` method is an imported set (external_settings), read from its file each time."""
    get_spec(dataset)
    if method.startswith(f"{EXTERNAL}:"):
        return external_settings(method, dataset, int(ipc))
    key = (json.dumps({k: config.get(k) for k in RESOLVED_FROM}, sort_keys=True, default=str), method, dataset,
           int(ipc))
    if key not in _resolved:
        _resolved[key] = _resolve(config, method, dataset, int(ipc))
    return _resolved[key].to_dict()


def table_settings(config: dict, table: str, dataset: str, ipc: int, method: str, chain: tuple = ()) -> dict:
    """Hyperparameter table `table`'s settings for (dataset, ipc): its `default`, then its `ipcN`. A `from: <table>`
    in either stands, at that point, for that table's settings of the same dataset and IPC, so a value that is the
    same as another method's is written once (config/hparams/*.yaml). `chain`: the entries whose `from` led here."""
    tables = config.get("hparams") or {}
    where = f"hparams.{chain[-1]}: `from: {table}`" if chain else f"method '{method}'"
    if table in [entry.split(".")[0] for entry in chain]:
        raise ValueError(f"hparams: the `from` references loop for {dataset} ipc{ipc}: {' -> '.join(chain)} -> {table}")
    if table not in tables:
        raise ValueError(f"{where}: hyperparameter table '{table}' is not defined under `hparams:` (tables: "
                         f"{', '.join(tables)})")
    if dataset not in tables[table]:
        raise ValueError(f"{where}: no '{table}' hyperparameters for dataset '{dataset}'; add "
                         f"hparams.{table}.{dataset}.default (and ipc{ipc}) to your config")
    settings: dict = {}
    for part in ("default", f"ipc{ipc}"):
        values = dict(tables[table][dataset].get(part) or {})
        source = values.pop("from", None)
        if source is not None:
            if not isinstance(source, str):
                raise ValueError(f"hparams.{table}.{dataset}.{part}: `from` must name one table (got {source!r})")
            settings.update(table_settings(config, source, dataset, ipc, method,
                                           (*chain, f"{table}.{dataset}.{part}")))
        settings.update(values)
    return settings


def _resolve(config: dict, method: str, dataset: str, ipc: int) -> DistillConfig:
    """resolve_method's work, for a method that is not external."""
    preset = _preset(config, method)
    settings: dict = {"model": default_model(dataset)}
    preset.pop("protocol", None)  # the evaluation's (method_protocol), not a distillation setting
    table_name = preset.pop("hparams", None)
    if table_name is not None:
        settings.update(table_settings(config, table_name, dataset, ipc, method))
    settings.update(preset)
    overrides = distill_overrides(config)
    settings.update({k: v for k, v in overrides.items() if uses(settings.get("kind", ""), k)})
    settings.update(method=method, ipc=int(ipc), seed=int(config.get("seed", 0)))
    if settings.get("kind") == "merged":  # the groups' model and domain
        group = resolve_method(config, settings["groups_of"], dataset, settings["group_ipc"])
        settings.update(model=group["model"], zca=group["zca"], recipe=group["recipe"])
    memory = settings.pop("memory", AUTO) if settings.get("kind") == "trajectory" else None
    try:
        cfg = DistillConfig.from_dict(settings)  # validates every field
    except SettingError as error:
        if error.field in overrides and overrides[error.field] is error.value:  # the override's value: name it
            raise SettingError("distill.overrides", error.field, error.value, error.why) from None
        raise
    if not is_model_name(cfg.model):
        raise ValueError(f"method '{method}' on {dataset}: unknown model '{cfg.model}'")
    if memory is not None:
        cfg = replace(cfg, **plan_memory(cfg, memory, get_spec(dataset), gpu_memory_gb(config),
                                         f"method '{method}' on {dataset} ipc{ipc}"))
    return cfg


# A protocol's twins that DD-Ranking's scores compare it with (report/scores.py): `<protocol>~hard` trains on the
# hard labels, `<protocol>~noaug` without augmentation. `~` never appears in a configured protocol's name (schema).
PROTOCOL_VARIANTS = {"hard": {"soft_labels": False}, "noaug": {"dsa": "none"}}


def distill_overrides(config: dict) -> dict:
    """`distill.overrides`, the settings forced on every distillation that reads them; an unknown key fails here,
    naming the setting (a typo would otherwise be blamed on whichever method is resolved first)."""
    overrides = (config.get("distill") or {}).get("overrides") or {}
    known = {f.name for f in fields(DistillConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        near = [difflib.get_close_matches(key, known, n=1) for key in unknown]
        hints = "".join(f"; did you mean '{n[0]}' for '{key}'?" for key, n in zip(unknown, near) if n)
        raise ValueError(f"distill.overrides: unknown setting(s) {', '.join(unknown)}{hints} (allowed: "
                         f"{', '.join(sorted(known))})")
    return overrides


def eval_config(config: dict, protocol: str = "default") -> EvalConfig:
    """The evaluation protocol: `evaluation` settings, with a named `protocols` entry's changes on top, then those
    of each `~variant` (PROTOCOL_VARIANTS) the name ends with."""
    protocol, *variants = protocol.split("~")
    protocols = config.get("protocols") or {}
    if protocol != "default" and protocol not in protocols:
        raise ValueError(f"unknown evaluation protocol '{protocol}'; define it under `protocols:` or choose one "
                         f"of: {', '.join(['default', *protocols])}")
    unknown = [v for v in variants if v not in PROTOCOL_VARIANTS]
    if unknown:
        raise ValueError(f"unknown protocol variant '~{unknown[0]}' of '{protocol}'; variants: "
                         f"{', '.join('~' + v for v in PROTOCOL_VARIANTS)}")
    options = {k: v for k, v in config.get("evaluation", {}).items() if k != "seeds"}
    options.update(protocols.get(protocol, {}))
    for variant in variants:
        options.update(PROTOCOL_VARIANTS[variant])
    return EvalConfig(**options)


def protocol_variant(config: dict, protocol: str, variant: str | None) -> str:
    """The name of `protocol`'s `variant` twin (`default~noaug`), or `protocol` itself when the variant is None or
    changes none of its settings (a hard-label protocol is its own ~hard), so no evaluation is run twice."""
    if variant is None:
        return protocol
    twin = f"{protocol}~{variant}"
    return protocol if eval_config(config, twin) == eval_config(config, protocol) else twin


def eval_seeds(config: dict) -> list[int]:
    return list(range(int(config.get("evaluation", {}).get("seeds", 5))))


def expert_overrides(config: dict, dataset: str) -> dict:
    """Recipe settings forced on `dataset`'s experts: `experts.datasets[dataset]`, then `experts.overrides` (every
    dataset) over it; so a setting made for one small dataset never reaches another's experts."""
    experts = config.get("experts", {})
    return merge((experts.get("datasets") or {}).get(dataset) or {}, experts.get("overrides") or {})


def expert_seeds(config: dict) -> list[int]:
    return list(range(int(config.get("experts", {}).get("count", 10))))


# Dataset scales for per-rule resources (config `resources.<rule>.<scale>`).
SCALES = {"small": ("digits", "mnist", "fashion-mnist"), "cifar": ("cifar10", "cifar100", "svhn"),
          "tiny": ("tiny-imagenet",), "imagenet": ("imagenet-64", "imagenette", "imagewoof", "imagemeow",
                                                  "imagesquawk", "imagefruit", "imageyellow")}
RESOURCE_KEYS = ("mem_mb", "runtime", "gpu", "threads")


def dataset_scale(dataset: str) -> str:
    return next(scale for scale, names in SCALES.items() if dataset in names)


RESOURCES_OF = {"evaluate_real": "evaluate"}  # rules that take another rule's `resources:` entry


def declared_resources(config: dict, rule: str, dataset: str | None = None) -> tuple[dict, set]:
    """(mem_mb, runtime, gpu and threads of a rule's job as the config declares them: `resources.default` <
    `resources.<rule>` < the rule's entry for the dataset's scale; the keys the rule or its scale entry set). The
    variants of a rule (RESOURCES_OF) are declared under its name."""
    rule = RESOURCES_OF.get(rule, rule)
    table = config["resources"]
    chosen = dict(table["default"])
    per_rule = table.get(rule, {})
    chosen.update({k: v for k, v in per_rule.items() if k in RESOURCE_KEYS})
    scale = per_rule.get(dataset_scale(dataset), {}) if dataset is not None else {}
    chosen.update(scale)
    return chosen, set(per_rule) | set(scale)
