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
