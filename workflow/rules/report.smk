localrules:
    table,
    plot_images,
    plot_curves,


rule table:
    input:
        table_inputs,
    output:
        csv=PATHS["table_csv"],
        md=PATHS["table_md"],
    params:
        title=table_title,
    log:
        "results/logs/table/{table}.log",
    benchmark:
        "results/benchmarks/table/{table}.tsv"
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=0,
    script:
        "../../scripts/table.py"


rule plot_images:
    input:
        unpack(evaluate_inputs),
    output:
        PATHS["images"],
    log:
        "results/logs/plot_images/{method}/{dataset}/ipc{ipc}.log",
    benchmark:
        "results/benchmarks/plot_images/{method}/{dataset}/ipc{ipc}.tsv"
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=0,
    script:
        "../../scripts/plot_images.py"


rule plot_curves:
    input:
        PATHS["distill_log"],
    output:
        PATHS["curves"],
    log:
        "results/logs/plot_curves/{method}/{dataset}/ipc{ipc}.log",
    benchmark:
        "results/benchmarks/plot_curves/{method}/{dataset}/ipc{ipc}.tsv"
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=0,
    script:
        "../../scripts/plot_curves.py"
