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
