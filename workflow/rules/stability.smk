localrules:
    stability_counts,


rule stability_trial:
    input:
        unpack(stability_inputs),
    output:
        PATHS["stability_trial"],
    params:
        settings=stability_params,
        iterations=lambda wildcards: stability_spec(config, wildcards.study)["iterations"],
        interrupted=interrupted(PATHS["stability_trial"]),
    log:
        "results/logs/stability_trial/{study}/{method}/{parameter}_x{multiplier}/seed{seed}.log",
    benchmark:
        "results/benchmarks/stability_trial/{study}/{method}/{parameter}_x{multiplier}/seed{seed}.tsv"
    threads: res("stability_trial", "threads")
    resources:
        mem_mb=res("stability_trial", "mem_mb"),
        runtime=res("stability_trial", "runtime"),
        gpu=res("stability_trial", "gpu"),
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/stability_trial.py"


rule stability_counts:
    input:
        lambda wildcards: [t["path"] for t in stability_trials(config, wildcards.study)],
    output:
        csv=PATHS["stability_csv"],
        md=report(PATHS["stability_md"], caption="../report/stability.rst", category="Stability"),
        png=report(PATHS["stability_figure"], caption="../report/stability.rst", category="Stability"),
        pdf=pdf_twin(PATHS["stability_figure"]),
    params:
        title=lambda wildcards: stability_spec(config, wildcards.study).get("title", wildcards.study),
    log:
        "results/logs/stability_counts/{study}.log",
    benchmark:
        "results/benchmarks/stability_counts/{study}.tsv"
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=0,
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/stability_counts.py"
