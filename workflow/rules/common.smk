# Config validation and input functions. Everything that computes lives in the distillery library.
from pathlib import Path

from snakemake.utils import validate

from distillery.plan import (
    PATHS,
    check_config,
    eval_config,
    eval_seeds,
    expert_files,
    resolve_method,
    table_cells,
)


validate(config, schema="../schemas/config.schema.yaml")
check_config(config)


wildcard_constraints:
    dataset="[a-z0-9-]+",
    method="[A-Za-z0-9_]+",
    ipc="[0-9]+",
    arch="[A-Za-z0-9_]+",
    seed="[0-9]+",
    protocol="[A-Za-z0-9_.]+",
    k="[0-9]+",
    norm="zca|std",
    table="[A-Za-z0-9_/-]+",
    figure="accuracy_vs_ipc|cross_arch",


def res(rule_name, key):
    """A resource of a rule from config `resources`, falling back to `resources.default`."""
    resources = config["resources"]
    return resources.get(rule_name, {}).get(key, resources["default"][key])


def settings(wildcards):
    return resolve_method(config, wildcards.method, wildcards.dataset, int(wildcards.ipc))


def data_files(dataset, zca):
    files = {name: PATHS[name].format(dataset=dataset) for name in ("train", "test", "meta")}
    if zca:
        files["zca"] = PATHS["zca"].format(dataset=dataset)
    return files


def expert_inputs(wildcards):
    return data_files(wildcards.dataset, wildcards.norm == "zca")


def distill_inputs(wildcards):
    chosen = settings(wildcards)
    return {**data_files(wildcards.dataset, chosen["zca"]), "experts": expert_files(config, wildcards.dataset, chosen)}


def evaluate_inputs(wildcards):
    synset = PATHS["synset"].format(method=wildcards.method, dataset=wildcards.dataset, ipc=wildcards.ipc)
    return {**data_files(wildcards.dataset, settings(wildcards)["zca"]), "synset": synset}


def table_inputs(wildcards):
    return [
        PATHS["eval"].format(method=c.method, dataset=c.dataset, ipc=c.ipc, arch=c.arch, protocol=c.protocol, seed=seed)
        for c in table_cells(config, wildcards.table)
        for seed in eval_seeds(config)
    ]


def table_spec(wildcards):
    return next(t for t in config["tables"] if t["name"] == wildcards.table)


def table_title(wildcards):
    return table_spec(wildcards).get("title", wildcards.table)


def reported_files():
    """Paper-reported numbers (config `reported_files`), relative to the repository when not absolute."""
    return [str(Path(workflow.basedir).parent / f) for f in config.get("reported_files", [])]


def pdf_twin(png):
    return png[: -len(".png")] + ".pdf"


def all_targets():
    targets = []
    for table in config["tables"]:
        targets += [PATHS[kind].format(table=table["name"]) for kind in ("table_csv", "table_md", "table_tex")]
        targets += [PATHS["table_figure"].format(table=table["name"], figure=f) for f in table.get("figures", [])]
    for cell in table_cells(config):
        where = dict(method=cell.method, dataset=cell.dataset, ipc=cell.ipc)
        targets.append(PATHS["images"].format(**where))
        if resolve_method(config, cell.method, cell.dataset, cell.ipc)["kind"] != "coreset":
            targets.append(PATHS["curves"].format(**where))
    return list(dict.fromkeys(targets))
