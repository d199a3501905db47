localrules:
    nas_table,


# One architecture trained on one source. Grouped: a cluster runs `--group-components nas=N` of them per job.
rule nas_train:
    input:
        unpack(nas_train_inputs),
    output:
        PATHS["nas_result"],
    params:
        evaluation=lambda wildcards: vars(nas_eval_config(config, wildcards.study, wildcards.source)),
        seed=config["seed"],
        interrupted=interrupted(PATHS["nas_result"]),
    log:
        "results/logs/nas_train/{study}/{source}/{arch}.log",
    benchmark:
        "results/benchmarks/nas_train/{study}/{source}/{arch}.tsv"
    group:
        "nas"
    threads: res("nas_train", "threads", nas_spec)
    resources:
        mem_mb=res("nas_train", "mem_mb", nas_spec),
        runtime=res("nas_train", "runtime", nas_spec),
        gpu=res("nas_train", "gpu", nas_spec),
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/nas_train.py"


rule nas_table:
    input:
        unpack(nas_table_inputs),
    output:
        csv=PATHS["nas_csv"],
        md=report(PATHS["nas_md"], caption="../report/nas.rst", category="NAS"),
        accuracies=PATHS["nas_accuracies"],
    params:
        sources=lambda wildcards: nas_spec(config, wildcards.study)["sources"],
        top=lambda wildcards: nas_spec(config, wildcards.study).get("top", []),
        title=lambda wildcards: nas_spec(config, wildcards.study).get("title", wildcards.study),
        ground_truth=lambda wildcards: nas_spec(config, wildcards.study).get("ground_truth"),
    log:
        "results/logs/nas_table/{study}.log",
    benchmark:
        "results/benchmarks/nas_table/{study}.tsv"
    resources:
        mem_mb=res("report", "mem_mb", nas_spec),
        runtime=res("report", "runtime", nas_spec),
        gpu=0,
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/nas_table.py"
