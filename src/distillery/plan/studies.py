"""The studies besides the tables: stability (a method's runs with a multiplied learning rate) and NAS (how well
training on a synthetic set ranks architectures): their specs, runs, settings and result paths."""
from __future__ import annotations

import itertools
from pathlib import Path

from distillery.evaluate import EvalConfig
from distillery.nas import REAL, convnet_space, read_ground_truth, sample
from distillery.plan.paths import PATHS
from distillery.plan.settings import eval_config, resolve_method


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
