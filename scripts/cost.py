"""Snakemake adapter: the config's jobs with their estimated GPU memory and hours (distillery.plan.cost) ->
results/cost/cost.{html,csv} and distillations.csv, for the report."""
import _library  # the checkout's src/ on sys.path (--sdm conda); the job wrapper
from distillery.plan.costtable import write_cost

with _library.job(snakemake, device="cpu"):
    write_cost(snakemake.config, snakemake.params.device, snakemake.params.name, snakemake.output.csv,
               snakemake.output.distill_csv, snakemake.output.html)
