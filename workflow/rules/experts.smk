rule train_expert:
    input:
        unpack(expert_inputs),
    output:
        PATHS["expert"],
    params:
        overrides=lambda wildcards: expert_overrides(config, wildcards.dataset),
        interrupted=interrupted(PATHS["expert"]),
    log:
        "results/logs/train_expert/{dataset}/{norm}/{model}/{recipe}/{k}.log",
    benchmark:
        "results/benchmarks/train_expert/{dataset}/{norm}/{model}/{recipe}/{k}.tsv"
    threads: res("train_expert", "threads")
    resources:
        mem_mb=res("train_expert", "mem_mb"),
        runtime=res("train_expert", "runtime"),
        gpu=res("train_expert", "gpu"),
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/train_expert.py"


# experts.per_job > 1: one job per group of experts (plan.expert_groups), writing the same files as train_expert.
# Their outputs name no wildcards, so Snakemake prefers these rules to train_expert for those files.
for group in expert_groups(config):

    rule:
        name:
            group["rule"]
        input:
            **expert_data(group["dataset"], group["norm"]),
        output:
            group["files"],
        params:
            overrides=expert_overrides(config, group["dataset"]),
            interrupted=interrupted(group["files"][0]),
        log:
            group["log"],
        benchmark:
            group["benchmark"]
        threads: group_res(group, "threads")
        resources:
            mem_mb=group_res(group, "mem_mb"),
            runtime=group_res(group, "runtime"),
            gpu=group_res(group, "gpu"),
        conda:
            "../../envs/distillery.yaml"
        script:
            "../../scripts/train_experts.py"


rule expert_stats:
    input:
        unpack(expert_stats_inputs),
    output:
        PATHS["expert_stats"],
    params:
        interrupted=interrupted(PATHS["expert_stats"]),
    log:
        "results/logs/expert_stats/{dataset}/{norm}/{model}/{recipe}.log",
    benchmark:
        "results/benchmarks/expert_stats/{dataset}/{norm}/{model}/{recipe}.tsv"
    threads: res("expert_stats", "threads")
    resources:
        mem_mb=res("expert_stats", "mem_mb"),
        runtime=res("expert_stats", "runtime"),
        gpu=res("expert_stats", "gpu"),
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/expert_stats.py"
