rule train_expert:
    input:
        unpack(expert_inputs),
    output:
        PATHS["expert"],
    params:
        overrides=config["experts"]["overrides"],
        device=config["device"],
    log:
        "results/logs/train_expert/{dataset}/{norm}/{model}/{recipe}/{k}.log",
    benchmark:
        "results/benchmarks/train_expert/{dataset}/{norm}/{model}/{recipe}/{k}.tsv"
    threads: 1
    resources:
        mem_mb=res("train_expert", "mem_mb"),
        runtime=res("train_expert", "runtime"),
        gpu=res("train_expert", "gpu"),
    script:
        "../../scripts/train_expert.py"
