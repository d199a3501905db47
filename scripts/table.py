"""Snakemake adapter: a table's sources (evaluation JSONs, expert stats or distillation logs) + paper numbers ->
results/tables/<table>.{csv,md,tex}."""
import _library  # noqa: F401  (the checkout's src/ on sys.path under --sdm conda)
from distillery.report import write_table
from distillery.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads, "cpu")
reported = snakemake.params.reported
write_table(snakemake.params.sources, snakemake.output.csv, snakemake.output.md, snakemake.params.title,
            reported_paths=snakemake.input.reported, paper=reported.get("paper"), table_name=reported.get("table"),
            tex_path=snakemake.output.tex, measure=snakemake.params.measure, notes=snakemake.params.notes)
