rule prepare_data:
    output:
        train=PATHS["train"],
        test=PATHS["test"],
        meta=PATHS["meta"],
    params:
        data_dir=data_dir,
        interrupted=interrupted(PATHS["train"]),
    log:
        "results/logs/prepare_data/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_data/{dataset}.tsv"
    threads: res("prepare_data", "threads")
    resources:
        mem_mb=res("prepare_data", "mem_mb"),
        runtime=res("prepare_data", "runtime"),
        gpu=res("prepare_data", "gpu"),
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/prepare_data.py"


rule fit_zca:
    input:
        train=PATHS["train"],
        meta=PATHS["meta"],
    output:
        PATHS["zca"],
    params:
        interrupted=interrupted(PATHS["zca"]),
    log:
        "results/logs/fit_zca/{dataset}.log",
    benchmark:
        "results/benchmarks/fit_zca/{dataset}.tsv"
    threads: res("fit_zca", "threads")
    resources:
        mem_mb=res("fit_zca", "mem_mb"),
        runtime=res("fit_zca", "runtime"),
        gpu=res("fit_zca", "gpu"),
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/fit_zca.py"


# A dataset with a validation split (config `validation`): the same preparation, holding the split out of train.pt
# into val.pt (distillery.data.prepare). Only defined when the config holds one out, so other runs plan as before.
if split_datasets(config):

    rule prepare_data_split:
        wildcard_constraints:
            dataset=split_pattern(),
        output:
            train=PATHS["train"],
            test=PATHS["test"],
            meta=PATHS["meta"],
            validation=PATHS["validation"],
        params:
            data_dir=data_dir,
            validation=lambda wildcards: validation_spec(config, wildcards.dataset),
            interrupted=interrupted(PATHS["train"]),
        log:
            "results/logs/prepare_data/{dataset}.log",
        benchmark:
            "results/benchmarks/prepare_data/{dataset}.tsv"
        threads: res("prepare_data", "threads")
        resources:
            mem_mb=res("prepare_data", "mem_mb"),
            runtime=res("prepare_data", "runtime"),
            gpu=res("prepare_data", "gpu"),
        conda:
            "../../envs/distillery.yaml"
        script:
            "../../scripts/prepare_data_split.py"

    ruleorder: prepare_data_split > prepare_data
