"""Snakemake adapter: a table's sources (evaluation JSONs, expert stats or distillation logs) + paper numbers ->
results/tables/<table>.{csv,md,tex}."""
import _library  # the checkout's src/ on sys.path (--sdm conda); the job wrapper
from distillery.report.tables import write_table

reported = snakemake.params.reported
with _library.job(snakemake, device="cpu"):
    write_table(snakemake.params.sources, snakemake.output.csv, snakemake.output.md, snakemake.params.title,
                reported_paths=snakemake.input.reported, paper=reported.get("paper"), table_name=reported.get("table"),
                tex_path=snakemake.output.tex, measure=snakemake.params.measure, notes=snakemake.params.notes,
                rules=snakemake.params.rules, weight=snakemake.params.weight)
