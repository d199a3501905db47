localrules:
    table,
    table_figure,
    plot_images,
    plot_cell,
    cost,


# A trajectory or APM distillation's images and curves come from one job (plot_cell), the images of any other set
# (a coreset, a merge, an imported set) from plot_images.
ruleorder: plot_cell > plot_images


rule cost:
    output:
        html=report(PATHS["cost_html"], caption="../report/cost.rst", category="Cost"),
        csv=PATHS["cost_csv"],
        distill_csv=PATHS["cost_distill_csv"],
    params:
        config=config_digest(config),  # any config change recomputes the table
        device="gpu",
        name=config_name(workflow.config_settings.configfiles, Path.cwd(), Path(workflow.basedir).parent),
    log:
        "results/logs/cost.log",
    benchmark:
        "results/benchmarks/cost.tsv"
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=0,
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/cost.py"


rule table:
    input:
        results=table_inputs,
        reported=reported_files(),
    output:
        csv=PATHS["table_csv"],
        md=report(PATHS["table_md"], caption="../report/table.rst", category="Tables"),
        tex=PATHS["table_tex"],
    params:
        title=table_title,
        reported=table_option("reported", {}),
        measure=table_option("measure", "accuracy"),
        rules=lambda wildcards: table_selection(config, table_spec(config, wildcards.table))["rules"],
        weight=table_option("score_weight", 0.5),
        sources=lambda wildcards: table_sources(config, wildcards.table),
        notes=lambda wildcards: table_notes(config, wildcards.table),
    log:
        "results/logs/table/{table}.log",
    benchmark:
        "results/benchmarks/table/{table}.tsv"
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=0,
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/table.py"


rule table_figure:
    input:
        unpack(figure_inputs),
    output:
        png=report(PATHS["table_figure"], caption="../report/table_figure.rst", category="Tables"),
        pdf=pdf_twin(PATHS["table_figure"]),
    params:
        title=table_title,
        sources=lambda wildcards: figure_sources(config, wildcards.table, wildcards.figure),
    log:
        "results/logs/table_figure/{table}/{figure}.log",
    benchmark:
        "results/benchmarks/table_figure/{table}/{figure}.tsv"
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=0,
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/table_figure.py"


rule plot_images:
    input:
        unpack(evaluate_inputs),
    output:
        png=report(PATHS["images"], caption="../report/images.rst", category="Distilled images",
                   subcategory="{dataset}"),
        pdf=pdf_twin(PATHS["images"]),
    log:
        "results/logs/plot_images/{method}/{dataset}/ipc{ipc}.log",
    benchmark:
        "results/benchmarks/plot_images/{method}/{dataset}/ipc{ipc}.tsv"
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=0,
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/plot_images.py"


rule plot_cell:
    wildcard_constraints:
        method=logged_method_pattern(config),
    input:
        unpack(evaluate_inputs),
        log_csv=PATHS["distill_log"],
    output:
        images=report(PATHS["images"], caption="../report/images.rst", category="Distilled images",
                      subcategory="{dataset}"),
        images_pdf=pdf_twin(PATHS["images"]),
        curves=report(PATHS["curves"], caption="../report/curves.rst", category="Distillation curves",
                      subcategory="{dataset}"),
        curves_pdf=pdf_twin(PATHS["curves"]),
    log:
        "results/logs/plot_cell/{method}/{dataset}/ipc{ipc}.log",
    benchmark:
        "results/benchmarks/plot_cell/{method}/{dataset}/ipc{ipc}.tsv"
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=0,
    conda:
        "../../envs/distillery.yaml"
    script:
        "../../scripts/plot_cell.py"
