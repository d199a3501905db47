"""`python -m distillery.plan`: the planner's command line (README, dvc.yaml)."""
from __future__ import annotations

import argparse
from pathlib import Path

from distillery.budget import calibrate
from distillery.choices import DEVICE_CLASSES
from distillery.plan.checks import check_config
from distillery.plan.cost import config_cost
from distillery.plan.costtable import write_cost
from distillery.plan.settings import SCHEMA, check_schema, load_config
from distillery.plan.targets import expert_set_files, expert_sets

PAPERS = ("mtt", "ftd", "ast", "att", "apm")  # config/paper/<name>.yaml, whose costs calibration.json covers


def main(argv: list[str] | None = None) -> None:
    """From the repository root, CONFIG merged over the default config as Snakemake does:
    `python -m distillery.plan check CONFIG...` checks the config files as the workflow does before any job, and
    names the file and line of a YAML error (Snakemake reads --configfile before the workflow can, and does not);
    `python -m distillery.plan expert-sets CONFIG` prints the `dvc_experts` entries of CONFIG's expert sets;
    `python -m distillery.plan expert-files CONFIG DATASET NORM MODEL RECIPE` prints that set's files;
    `python -m distillery.plan cost CONFIG... [--gpu-memory-gb N] [--device gpu|cpu] [--csv FILE]` prints every
    table's jobs with their estimated GPU memory and hours (plan/cost.py) and writes them as CSV;
    `python -m distillery.plan calibrate` rewrites budget/calibration.json with what costing the default and paper
    configs probes."""
    parser = argparse.ArgumentParser(prog="python -m distillery.plan", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check").add_argument("config", nargs="+")
    commands.add_parser("expert-sets").add_argument("config")
    files = commands.add_parser("expert-files")
    for name in ("config", "dataset", "norm", "model", "recipe"):
        files.add_argument(name)
    cost = commands.add_parser("cost")
    cost.add_argument("config", nargs="+", help="config files, each merged over the ones before it")
    cost.add_argument("--gpu-memory-gb", type=float, help="the GPU's memory (default: runtime.gpu_memory_gb)")
    cost.add_argument("--device", choices=DEVICE_CLASSES, default="gpu", help="device class of the time model")
    cost.add_argument("--csv", default="cost.csv", help="summary CSV (distillations: <stem>_distillations.csv)")
    commands.add_parser("calibrate")
    args = parser.parse_args(argv)
    try:
        if args.command == "calibrate":
            calibrate.write_table(lambda: calibration_probes(Path.cwd()), "python -m distillery.plan calibrate")
            return
        if args.command == "check":
            config = load_config(Path.cwd(), *args.config)
            check_schema(config, Path.cwd() / SCHEMA)
            check_config(config, Path.cwd())
            print(f"{' '.join(args.config)}: the config is valid")
            return
        config = load_config(Path.cwd(), *(args.config if args.command == "cost" else [args.config]))
        if args.command == "cost":
            if args.gpu_memory_gb is not None:
                config["runtime"] = {**config.get("runtime", {}), "gpu_memory_gb": args.gpu_memory_gb}
            csv_path = Path(args.csv)
            print(write_cost(config, args.device, " + ".join(args.config), csv_path,
                             csv_path.with_name(f"{csv_path.stem}_distillations.csv")))
        elif args.command == "expert-sets":
            for where in expert_sets(config):
                fields = ", ".join(f"{k}: {v}" for k, v in where.items())
                print(f"  {'-'.join(where.values())}:\n    {{config: {args.config}, {fields}}}")
        else:
            print("\n".join(expert_set_files(config, args.dataset, args.norm, args.model, args.recipe)))
    except (OSError, ValueError) as error:
        parser.error(str(error))


def calibration_probes(root: Path) -> None:
    """Cost the default config and every paper config on both device classes, probing what they need."""
    for extra in [[], *([f"config/paper/{paper}.yaml"] for paper in PAPERS)]:
        for device in DEVICE_CLASSES:
            config_cost(load_config(root, *extra), device=device)


if __name__ == "__main__":
    main()
