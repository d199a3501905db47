"""Every check of a config the workflow runs before any job: each cell, study and distillation resolves, its data
holds its IPC and its experts are long enough (distillery.needs)."""
from __future__ import annotations

from pathlib import Path

from distillery.choices import NAS_SPACES
from distillery.data import get_spec
from distillery.experts import get_recipe
from distillery.needs import check_class_size, check_expert_epochs, expert_epochs_needed
from distillery.nas import REAL
from distillery.plan.honest import split_datasets, validation_spec
from distillery.plan.settings import EXTERNAL, expert_overrides
from distillery.plan.studies import nas_architectures, nas_eval_config, nas_settings, stability_settings
from distillery.plan.targets import distillations, expert_files, snapshot_distillations, table_sources
from distillery.report.tables import load_reported


def check_nas(config: dict) -> None:
    """A study's space, sources, protocols and reference are usable, before any job."""
    for spec in config.get("nas") or []:
        study = spec["name"]
        if spec["space"] not in NAS_SPACES:
            raise ValueError(f"NAS study '{study}': unknown space '{spec['space']}'; choose one of: "
                             f"{', '.join(NAS_SPACES)}")
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


def check_reported(config: dict, root: str | Path) -> None:
    """Each table's `reported: {paper, table}` names rows of `reported_files` (relative to `root`, the repository):
    a misspelt paper or table would leave the paper column empty."""
    asked = [spec for spec in config.get("tables", []) if spec.get("reported")]
    if not asked:
        return
    files = [Path(root) / f for f in config.get("reported_files") or []]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ValueError(f"reported_files: {', '.join(missing)} does not exist")
    reported = load_reported(files)
    for spec in asked:
        paper, table = spec["reported"]["paper"], str(spec["reported"]["table"])
        papers = sorted(set(reported["paper"]))
        if paper not in papers:
            raise ValueError(f"table '{spec['name']}': reported paper '{paper}' has no rows in reported_files "
                             f"({', '.join(config.get('reported_files') or []) or 'none'}); choose one of: "
                             f"{', '.join(papers) or 'none (list the paper CSV under reported_files)'}")
        tables = sorted(set(reported.loc[reported["paper"] == paper, "table"].astype(str)))
        if table not in tables:
            raise ValueError(f"table '{spec['name']}': paper '{paper}' reports no table '{table}'; choose one of: "
                             f"{', '.join(tables)}")


def check_config(config: dict, root: str | Path | None = None) -> None:
    """Resolve every cell once, so a bad method, dataset, model, hyperparameter or measure fails before any job;
    with `root` (the repository), also each table's reported numbers (check_reported)."""
    if root is not None:
        check_reported(config, root)
    for spec in config.get("tables", []):
        table_sources(config, spec["name"])
    for spec in config.get("stability") or []:
        for method in spec["methods"]:
            expert_files(config, spec["dataset"], stability_settings(config, spec["name"], method))
    check_nas(config)
    for dataset in split_datasets(config):
        smallest = get_spec(dataset).min_class
        held = validation_spec(config, dataset)["per_class"]
        if smallest is not None and held >= smallest:
            raise ValueError(f"validation.{dataset}.per_class={held} would hold out every image of its smallest "
                             f"class ({smallest}); lower it")
    snapshot_distillations(config)  # one snapshot interval per distillation
    for dataset, settings in distillations(config):
        if settings["kind"] == EXTERNAL:  # imported: nothing to distil or train
            continue
        cell = f"{dataset} ipc{settings['ipc']} (method '{settings['method']}'): "
        smallest = get_spec(dataset).min_class
        if smallest is not None:
            held = (validation_spec(config, dataset) or {}).get("per_class", 0)
            what = "the smallest class" + (f" after holding out {held} for validation" if held else "")
            check_class_size(settings["ipc"], smallest - held, what, cell)
        expert_files(config, dataset, settings)
        recipe = get_recipe(settings["recipe"], **expert_overrides(config, dataset))  # overrides checked for all
        if settings["kind"] == "trajectory":
            check_expert_epochs(recipe.epochs, expert_epochs_needed(settings["max_start_epoch"],
                                                                    settings["expert_epochs"]),
                                f"{cell}each expert ({settings['recipe']})")
