# Config validation and input functions. Everything that computes lives in the distillery library.
import re
import sys
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import validate

from distillery.choices import EXPERT_MEASURES, FIGURES, LOGGED_KINDS, NORMS, STABILITY_PARAMETERS
from distillery.data import reads_data_dir
from distillery.distill.config import DistillConfig
from distillery.interrupted import interruptions, record_interruptions
from distillery.plan import (
    PATHS,
    check_config,
    check_schema,
    config_name,
    eval_config,
    expert_files,
    expert_group_resources,
    expert_groups,
    expert_overrides,
    expert_seeds,
    figure_sources,
    group_files,
    initial_share_warnings,
    logged_method_pattern,
    nas_eval_config,
    nas_results,
    nas_settings,
    nas_spec,
    nas_synset,
    resolve_method,
    rule_resources,
    shown_path,
    stability_settings,
    stability_spec,
    stability_trials,
    table_cells,
    table_notes,
    table_sources,
    table_spec,
    type_cli_values,
)
from distillery.plan.cost import config_digest
from distillery.plan.honest import split_datasets, table_selection, validation_spec
from distillery.plan.targets import snapshot_distillations
from distillery.runtime import announce_workflow_process, resolve_device


type_cli_values(config, dict(workflow.config_settings.config))  # nested --config values as their YAML types
check_schema(config, f"{workflow.basedir}/schemas/config.schema.yaml")  # errors naming the field
validate(config, schema="../schemas/config.schema.yaml")  # fills in the defaults
check_config(config, Path(workflow.basedir).parent)  # reported_files are relative to the repository
for warning in initial_share_warnings(config):
    logger.warning(f"Warning: {warning}")
resolve_device(config["device"])  # a CUDA request this machine cannot meet fails here, before any job or deletion
announce_workflow_process()  # jobs stop when this Snakemake process ends (distillery.runtime.Watchdog)


onerror:
    # Snakemake records a failed job as finished: count it, so the next run redoes it (distillery.interrupted).
    for output in record_interruptions("results"):
        print(f"{output}: its job did not finish; the next run redoes it", file=sys.stderr)


wildcard_constraints:
    dataset="[a-z0-9-]+",
    method="(external:)?[A-Za-z0-9_]+",  # external:<name>: a set imported by distillery.interop (not distilled)
    ipc="[0-9]+",
    arch="[A-Za-z0-9_]+",
    seed="[0-9]+",
    group="[0-9]+",
    protocol="[A-Za-z0-9_.]+(~[a-z]+)*",  # ~hard, ~noaug: a protocol's twins (plan.settings.PROTOCOL_VARIANTS)
    iteration="[0-9]+",
    k="[0-9]+",
    norm="|".join(NORMS),
    table="[A-Za-z0-9_/-]+",
    study="[A-Za-z0-9_/-]+",
    source="[A-Za-z0-9_]+",
    parameter="|".join(STABILITY_PARAMETERS),
    multiplier="[0-9.e+-]+",
    figure="|".join(FIGURES),


def res(rule_name, key, study_spec=stability_spec):
    """A resource of a rule's job (distillery.plan.rule_resources): by rule, dataset scale and attempt, and for
    the GPU rules from the memory and time models of the job its wildcards name; a job with a {study} takes its
    dataset from `study_spec` (stability_spec, or nas_spec for NAS rules)."""

    def value(wildcards, attempt):
        dataset = wildcards.get("dataset")
        if dataset is None and "study" in wildcards.keys():
            dataset = study_spec(config, wildcards.study)["dataset"]
        return rule_resources(config, rule_name, dataset, attempt, job=dict(wildcards.items()))[key]

    return value


def interrupted(path):
    """A job param: how many runs left the job writing `path` unfinished (distillery.interrupted), so a job that
    failed is redone by the next run although Snakemake recorded it as finished."""
    return lambda wildcards: interruptions(path.format(**wildcards))


def settings(wildcards):
    return resolve_method(config, wildcards.method, wildcards.dataset, int(wildcards.ipc))


def data_dir(wildcards):
    """data_dir for a dataset that reads its raw files there, None for one that never does (digits): a param, so
    changing data_dir prepares again only what reads it."""
    return config["data_dir"] if reads_data_dir(wildcards.dataset) else None


def data_files(dataset, zca):
    files = {name: PATHS[name].format(dataset=dataset) for name in ("train", "test", "meta")}
    if zca:
        files["zca"] = PATHS["zca"].format(dataset=dataset)
    return files


def buffers(files):
    """Expert buffers as inputs: ancient, so buffers fetched by `dvc pull` (fresh mtimes) rerun nothing downstream."""
    return [ancient(f) for f in files]


def expert_data(dataset, norm):
    """An expert's data, ancient too: in a fresh clone the data is prepared after `dvc pull`, newer than the
    buffers. (A job still to write an input reruns its consumers, ancient or not: prepare the data first,
    `--until prepare_data fit_zca`, as the README says.)"""
    files = data_files(dataset, norm == "zca")
    return dict(zip(files, buffers(files.values())))


def expert_inputs(wildcards):
    return expert_data(wildcards.dataset, wildcards.norm)


def group_res(group, key):
    """A resource of an expert group's job (plan.expert_group_resources), by attempt."""
    return lambda wildcards, attempt: expert_group_resources(config, group, attempt)[key]


def expert_stats_inputs(wildcards):
    experts = [PATHS["expert"].format(**wildcards, k=k) for k in expert_seeds(config)]
    return {**data_files(wildcards.dataset, wildcards.norm == "zca"), "experts": buffers(experts)}


def distill_inputs(wildcards):
    return distill_inputs_of(wildcards.method, wildcards.dataset, wildcards.ipc)


def distill_inputs_of(method, dataset, ipc):
    chosen = resolve_method(config, method, dataset, int(ipc))
    return {**data_files(dataset, chosen["zca"]), "experts": buffers(expert_files(config, dataset, chosen)),
            "groups": group_files(dataset, chosen)}


def distill_params(wildcards):
    """The distillation's settings that differ from the defaults (DistillConfig.job_params)."""
    return DistillConfig.from_dict(settings(wildcards)).job_params()


def group_params(wildcards):
    """A group of a parallel distillation: its params with the seed moved by the group number."""
    chosen = settings(wildcards)
    return DistillConfig.from_dict({**chosen, "seed": chosen["seed"] + int(wildcards.group)}).job_params()


def stability_params(wildcards):
    return DistillConfig.from_dict(stability_settings(config, wildcards.study, wildcards.method)).job_params()


def stability_inputs(wildcards):
    spec = stability_spec(config, wildcards.study)
    chosen = stability_settings(config, wildcards.study, wildcards.method)
    return {**data_files(spec["dataset"], chosen["zca"]),
            "experts": buffers(expert_files(config, spec["dataset"], chosen))}


def evaluate_inputs(wildcards):
    synset = PATHS["synset"].format(method=wildcards.method, dataset=wildcards.dataset, ipc=wildcards.ipc)
    return {**data_files(wildcards.dataset, settings(wildcards)["zca"]), "synset": synset}


def split_pattern():
    """A regex matching exactly the datasets the config holds a validation split out of (plan.honest)."""
    return "|".join(re.escape(dataset) for dataset in split_datasets(config)) or "(?!)"


def held_out(dataset):
    """The dataset's held-out validation split as an input (plan.honest), or none."""
    return {"validation": PATHS["validation"].format(dataset=dataset)} if validation_spec(config, dataset) else {}


def evaluate_split_inputs(wildcards):
    return {**evaluate_inputs(wildcards), **held_out(wildcards.dataset)}


def snapshot_inputs(wildcards):
    snapshot = PATHS["snapshot"].format(method=wildcards.method, dataset=wildcards.dataset, ipc=wildcards.ipc,
                                        iteration=wildcards.iteration)
    return {**evaluate_split_inputs(wildcards), "synset": snapshot}


def real_inputs(wildcards):
    return {**data_files(wildcards.dataset, wildcards.norm == "zca"), **held_out(wildcards.dataset)}


def distill_res(where, key):
    """A resource of a concrete distill rule (one distillation that keeps snapshots), by attempt."""
    return lambda wildcards, attempt: rule_resources(config, "distill", where["dataset"], attempt, job=where)[key]


def nas_train_inputs(wildcards):
    """The study's data (ZCA when the source was distilled in that domain) and the source's synset, if any."""
    chosen = nas_settings(config, wildcards.study, wildcards.source)
    files = data_files(nas_spec(config, wildcards.study)["dataset"], chosen is not None and chosen["zca"])
    synset = nas_synset(config, wildcards.study, wildcards.source)
    return {**files, "synset": [synset] if synset else []}


def nas_table_inputs(wildcards):
    """Every architecture's result, and the ground-truth file when the study has one and it exists (when it does
    not, the table job runs alone and fails saying what to supply)."""
    spec = nas_spec(config, wildcards.study)
    truth = spec.get("ground_truth")
    return {"results": [r["path"] for r in nas_results(config, wildcards.study)],
            "ground_truth": [truth] if truth and Path(truth).is_file() else []}


def table_inputs(wildcards):
    return list(dict.fromkeys(source["path"] for source in table_sources(config, wildcards.table)))


def table_option(key, default):
    return lambda wildcards: table_spec(config, wildcards.table).get(key, default)


def table_title(wildcards):
    return table_spec(config, wildcards.table).get("title", wildcards.table)


def figure_inputs(wildcards):
    sources = figure_sources(config, wildcards.table, wildcards.figure)
    return {"csv": PATHS["table_csv"].format(table=wildcards.table), "sources": [s["path"] for s in sources.values()]}


def reported_files():
    """Paper-reported numbers (config `reported_files`), relative to the repository when not absolute; named relative
    to the working directory where they lie under it (a moved checkout reruns no table)."""
    return [shown_path(Path(workflow.basedir).parent / f, Path.cwd()) for f in config.get("reported_files", [])]


def pdf_twin(png):
    return png[: -len(".png")] + ".pdf"


def synset_cells():
    """Cells of the tables whose numbers come from distilled sets (not those describing only the experts)."""
    return [cell for table in config["tables"] if table.get("measure", "accuracy") not in EXPERT_MEASURES
            for cell in table_cells(config, table["name"])]


def all_targets():
    targets = []
    for table in config["tables"]:
        targets += [PATHS[kind].format(table=table["name"]) for kind in ("table_csv", "table_md", "table_tex")]
        targets += [PATHS["table_figure"].format(table=table["name"], figure=f) for f in table.get("figures", [])]
    for cell in synset_cells():
        where = dict(method=cell.method, dataset=cell.dataset, ipc=cell.ipc)
        targets.append(PATHS["images"].format(**where))
        if resolve_method(config, cell.method, cell.dataset, cell.ipc)["kind"] in LOGGED_KINDS:
            targets.append(PATHS["curves"].format(**where))
    for study in config.get("stability") or []:
        targets += [PATHS[kind].format(study=study["name"]) for kind in ("stability_csv", "stability_md",
                                                                          "stability_figure")]
    for study in config.get("nas") or []:
        targets += [PATHS[kind].format(study=study["name"]) for kind in ("nas_csv", "nas_md", "nas_accuracies")]
    targets.append(PATHS["cost_html"])
    return list(dict.fromkeys(targets))
