rule distill:
    wildcard_constraints:
        method="[A-Za-z0-9_]+",  # not external:<name>, whose synset is imported, never distilled
    input:
        unpack(distill_inputs),
    output:
        synset=PATHS["synset"],
        log_csv=PATHS["distill_log"],
    params:
        settings=distill_params,
        interrupted=interrupted(PATHS["synset"]),
    log:
        "results/logs/distill/{method}/{dataset}/ipc{ipc}.log",
    benchmark:
        "results/benchmarks/distill/{method}/{dataset}/ipc{ipc}.tsv"
    threads: res("distill", "threads")
    resources:
        mem_mb=res("distill", "mem_mb"),
        runtime=res("distill", "runtime"),
        gpu=res("distill", "gpu"),
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/distill.py"


rule distill_group:
    input:
        unpack(distill_inputs),
    output:
        synset=PATHS["group_synset"],
        log_csv=PATHS["group_log"],
    params:
        settings=group_params,
        interrupted=interrupted(PATHS["group_synset"]),
    log:
        "results/logs/distill_group/{method}/{dataset}/ipc{ipc}/group{group}.log",
    benchmark:
        "results/benchmarks/distill_group/{method}/{dataset}/ipc{ipc}/group{group}.tsv"
    threads: res("distill_group", "threads")
    resources:
        mem_mb=res("distill_group", "mem_mb"),
        runtime=res("distill_group", "runtime"),
        gpu=res("distill_group", "gpu"),
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/distill.py"


# A distillation that keeps snapshots (a table's or cell's snapshot_every, plan.snapshot_distillations): one rule
# per distillation, since its outputs (the snapshots) are known only per cell. Their outputs name no wildcards, so
# Snakemake prefers them to rule distill for those files.
for job in snapshot_distillations(config):
    where = {key: job[key] for key in ("method", "dataset", "ipc")}

    rule:
        name:
            job["rule"]
        input:
            **distill_inputs_of(**where),
        output:
            synset=PATHS["synset"].format(**where),
            log_csv=PATHS["distill_log"].format(**where),
            snapshots=job["snapshots"],
        params:
            settings=DistillConfig.from_dict(resolve_method(config, **where)).job_params(),
            snapshot_every=job["every"],
            interrupted=interrupted(PATHS["synset"].format(**where)),
        log:
            "results/logs/distill/{method}/{dataset}/ipc{ipc}.log".format(**where),
        benchmark:
            "results/benchmarks/distill/{method}/{dataset}/ipc{ipc}.tsv".format(**where)
        threads: distill_res(where, "threads")
        resources:
            mem_mb=distill_res(where, "mem_mb"),
            runtime=distill_res(where, "runtime"),
            gpu=distill_res(where, "gpu"),
        conda:
            "../../envs/distillery.yaml"
        script:
            "../../scripts/distill.py"
