"""Snakemake adapter: the config's jobs with their estimated GPU memory and hours (distillery.budget.cost) ->
results/cost/cost.{html,csv} and distillations.csv, for the report."""
import _library  # noqa: F401  (the checkout's src/ on sys.path under --sdm conda)
from distillery.budget.cost import write_cost
from distillery.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads, "cpu")
write_cost(snakemake.config, snakemake.params.device, snakemake.params.name, snakemake.output.csv,
           snakemake.output.distill_csv, snakemake.output.html)
