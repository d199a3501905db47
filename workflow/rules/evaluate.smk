rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        PATHS["eval"],
    params:
        evaluation=lambda wildcards: vars(eval_config(config, wildcards.protocol)),
        interrupted=interrupted(PATHS["eval"]),
    log:
        "results/logs/evaluate/{method}/{dataset}/ipc{ipc}/{arch}/{protocol}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{method}/{dataset}/ipc{ipc}/{arch}/{protocol}/seed{seed}.tsv"
    threads: res("evaluate", "threads")
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
        gpu=res("evaluate", "gpu"),
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/evaluate.py"


# On a dataset with a validation split the same evaluation also scores the held-out split (docs/evaluation.md).
rule evaluate_split:
    wildcard_constraints:
        dataset=split_pattern(),
    input:
        unpack(evaluate_split_inputs),
    output:
        PATHS["eval"],
    params:
        evaluation=lambda wildcards: vars(eval_config(config, wildcards.protocol)),
        interrupted=interrupted(PATHS["eval"]),
    log:
        "results/logs/evaluate/{method}/{dataset}/ipc{ipc}/{arch}/{protocol}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{method}/{dataset}/ipc{ipc}/{arch}/{protocol}/seed{seed}.tsv"
    threads: res("evaluate", "threads")
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
        gpu=res("evaluate", "gpu"),
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/evaluate_heldout.py"


ruleorder: evaluate_split > evaluate


# A snapshot of a distillation (distill/snapshots.py), evaluated as its final set is, for the selection rules.
rule evaluate_snapshot:
    input:
        unpack(snapshot_inputs),
    output:
        PATHS["snapshot_eval"],
    params:
        evaluation=lambda wildcards: vars(eval_config(config, wildcards.protocol)),
        interrupted=interrupted(PATHS["snapshot_eval"]),
    log:
        "results/logs/evaluate/{method}/{dataset}/ipc{ipc}/{arch}/{protocol}/it{iteration}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{method}/{dataset}/ipc{ipc}/{arch}/{protocol}/it{iteration}/seed{seed}.tsv"
    threads: res("evaluate", "threads")
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
        gpu=res("evaluate", "gpu"),
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/evaluate_heldout.py"


# The protocol on the whole real training split (hard labels), for DD-Ranking's hard-label recovery (report/scores.py).
rule evaluate_real:
    input:
        unpack(real_inputs),
    output:
        PATHS["real_eval"],
    params:
        evaluation=lambda wildcards: vars(eval_config(config, wildcards.protocol)),
        interrupted=interrupted(PATHS["real_eval"]),
    log:
        "results/logs/evaluate_real/{dataset}/{norm}/{arch}/{protocol}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate_real/{dataset}/{norm}/{arch}/{protocol}/seed{seed}.tsv"
    threads: res("evaluate_real", "threads")
    resources:
        mem_mb=res("evaluate_real", "mem_mb"),
        runtime=res("evaluate_real", "runtime"),
        gpu=res("evaluate_real", "gpu"),
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/evaluate_real.py"
