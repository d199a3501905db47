"""The SLURM profile (profiles/slurm): what each job asks SLURM for, and a real run on a one-node cluster.

The dry runs need no SLURM. The slow test starts a cluster on this machine with tests/slurm/cluster.sh (root;
it installs Debian's slurm-wlm, munge, slurmdbd and MariaDB with apt when missing) and stops it afterwards.
"""
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from distillery.plan import MODELLED_RULES, load_config, rule_resources

from conftest import ENV, ROOT, SNAKEMAKE, snakemake

PROFILE = ROOT / "profiles/slurm"
CLUSTER = ROOT / "tests/slurm/cluster.sh"
LOCAL_RULES = {"all", "table", "table_figure", "plot_images", "plot_cell", "stability_counts", "cost"}

# The default config at smoke scale, every rule kind of it in four dependent levels of submissions (data; experts
# and the random subsets; the MTT distillations; their evaluations, grouped) and the local rules after them.
SMOKE = {
    "experts": {"count": 2, "overrides": {"epochs": 2}},
    "distill": {"overrides": {"iterations": 3, "max_start_epoch": 1}},  # 2-epoch experts: start at epoch 0
    "evaluation": {"seeds": 1, "epochs": 2},
    "tables": [{"name": "digits", "figures": ["accuracy_vs_ipc"],
                "cells": [{"method": ["random", "mtt"], "dataset": "digits", "ipc": [1, 10]}]}],
}


def dry_run(workdir: Path, *args: str, profile: str = str(PROFILE), env: dict | None = None) -> str:
    """A dry run with the profile: in this process, or through the CLI in `env` (where the environment is tested)."""
    if env is None:
        result = snakemake(workdir, None, "-n", "--profile", profile, *args)
    else:
        command = SNAKEMAKE + ["-n", "--profile", profile, "--directory", str(workdir), *args]
        result = subprocess.run(["timeout", "-k", "10", "300", *command], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def planned_jobs(output: str) -> list[dict]:
    """One dict per job of a dry run: rule, wildcards, resources and whether it sits in a group job."""
    jobs, group = [], False
    for line in output.splitlines():
        if "Group job" in line:
            group = True
        elif m := re.match(r"(\s*)(?:local)?rule (\w+):$", line):
            group = group and bool(m[1])          # group members are printed indented
            jobs.append({"rule": m[2], "wildcards": {}, "resources": {}, "grouped": group})
        elif m := re.match(r"\s+(wildcards|resources): (.*)$", line):
            pairs = (item.split("=", 1) for item in m[2].split(", "))
            jobs[-1][m[1]] = {key: value for key, value in pairs}
    return jobs


def requested(job: dict) -> tuple[int, int, int]:
    return tuple(int(job["resources"][key]) for key in ("mem_mb", "runtime", "gpu"))


def modelled(config: dict, job: dict) -> tuple[int, int, int]:
    """What the library's memory and time models give a job of a GPU rule (plan.rule_resources with its
    wildcards): the dry run must ask SLURM for exactly that."""
    chosen = rule_resources(config, job["rule"], job["wildcards"].get("dataset"), job=job["wildcards"])
    return chosen["mem_mb"], chosen["runtime"], chosen["gpu"]


def test_profile_keys():
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["retries"] == 1 and profile["rerun-incomplete"]
    assert set(profile["default-resources"]) == {"slurm_account", "slurm_partition"}   # what a user edits
    assert "slurm_extra" not in profile["default-resources"] and "set-resources" not in profile  # GPUs: `gpu`
    local = yaml.safe_load((ROOT / "profiles/local/config.yaml").read_text())
    assert "executor" not in local and "gpu" in local["resources"]


def test_default_config_requests_per_rule(tmp_path):
    jobs = planned_jobs(dry_run(tmp_path))
    counts = {}
    for job in jobs:
        counts[job["rule"]] = counts.get(job["rule"], 0) + 1
    assert counts == {"all": 1, "cost": 1, "prepare_data": 1, "train_expert": 15, "distill": 10, "evaluate": 30,
                      "table": 1, "table_figure": 1, "plot_images": 2, "plot_cell": 8}
    config = load_config(ROOT)
    for job in jobs:
        if job["rule"] == "all":
            continue
        assert job["resources"]["slurm_account"] == "" and job["resources"]["slurm_partition"] == ""
        # digits is "small" scale: no GPU; the GPU rules' memory and time from the models (on the CPU, then), the
        # other rules the default row and the cheap local rules the `report` row
        if job["rule"] in MODELLED_RULES:
            assert requested(job) == modelled(config, job) and requested(job)[2] == 0, job
        else:
            assert requested(job) == ((2000, 10, 0) if job["rule"] in LOCAL_RULES else (4000, 60, 0)), job
        assert job["grouped"] == (job["rule"] == "evaluate")
    assert sum(job["grouped"] for job in jobs) == 30


# (rule, dataset) -> (mem_mb, runtime, gpu) from config/config.yaml's `resources:`; None: a GPU rule, whose
# mem_mb and runtime come from the memory and time models
MTT_TABLE1 = {
    ("prepare_data", "cifar10"): (4000, 60, 0), ("prepare_data", "cifar100"): (4000, 60, 0),
    ("prepare_data", "tiny-imagenet"): (4000, 60, 0),
    ("fit_zca", "cifar10"): (8000, 30, 0), ("fit_zca", "cifar100"): (8000, 30, 0),
    ("train_expert", "cifar10"): None, ("train_expert", "cifar100"): None, ("train_expert", "tiny-imagenet"): None,
    ("distill", "cifar10"): None, ("distill", "cifar100"): None, ("distill", "tiny-imagenet"): None,
    ("evaluate", "cifar10"): None, ("evaluate", "cifar100"): None, ("evaluate", "tiny-imagenet"): None,
    ("table", None): (2000, 10, 0),
}


def test_mtt_table1_requests_per_rule_and_scale(tmp_path):
    # targets before --configfile, which takes every word after it as a config file
    output = dry_run(tmp_path, "results/tables/mtt/table1.md", "--configfile", str(ROOT / "config/paper/mtt.yaml"))
    config, seen, distill = load_config(ROOT, ROOT / "config/paper/mtt.yaml"), {}, {}
    for job in planned_jobs(output):
        key = (job["rule"], job["wildcards"].get("dataset"))
        assert key in MTT_TABLE1, key
        if MTT_TABLE1[key] is None:
            assert requested(job) == modelled(config, job) and requested(job)[2] == 1, (key, job["wildcards"])
        else:
            assert requested(job) == MTT_TABLE1[key], (key, job["wildcards"])
        if job["rule"] == "distill":
            distill[job["wildcards"]["method"], job["wildcards"]["dataset"], job["wildcards"]["ipc"]] = requested(job)
        seen[key] = seen.get(key, 0) + 1
    assert set(seen) == set(MTT_TABLE1)
    # a long unroll asks for more time than a coreset; Tiny ImageNet's 4.9 GB split for more host memory
    assert distill["mtt", "cifar100", "50"][1] > distill["random", "cifar100", "50"][1]
    assert distill["mtt", "tiny-imagenet", "10"][0] > distill["mtt", "cifar100", "10"][0]
    assert seen[("evaluate", "cifar10")] + seen[("evaluate", "cifar100")] + seen[("evaluate", "tiny-imagenet")] == 180
    assert output.count("Group job evaluate") == 180 // 5


def test_resources_grow_with_the_attempt_and_the_table_overrides_the_model():
    config = load_config(ROOT)
    job = {"method": "mtt", "dataset": "cifar10", "ipc": "10", "arch": "ConvNet", "protocol": "default", "seed": "0"}
    one = rule_resources(config, "evaluate", "cifar10", job=job)
    assert one["gpu"] == 1 and (one["mem_mb"], one["runtime"]) != (4000, 60)   # from the models
    assert rule_resources(config, "evaluate", "cifar10", attempt=2, job=job) == {
        "mem_mb": 2 * one["mem_mb"], "runtime": 2 * one["runtime"], "gpu": 1, "threads": 1}
    assert rule_resources(config, "evaluate", "cifar10") == {"mem_mb": 4000, "runtime": 60, "gpu": 1,
                                                             "threads": 1}  # table only
    assert rule_resources(config, "prepare_data", "digits", attempt=2) == {"mem_mb": 8000, "runtime": 120, "gpu": 0,
                                                                           "threads": 1}
    config["resources"]["evaluate"]["cifar"]["runtime"] = 600   # a value in the table wins over the model
    assert rule_resources(config, "evaluate", "cifar10", job=job) == {**one, "runtime": 600}


def test_a_jobs_threads_come_from_the_resources_table_and_not_the_attempt():
    config = load_config(ROOT)
    assert {rule_resources(config, rule, "digits")["threads"] for rule in MODELLED_RULES} == {1}   # the default row
    config["resources"]["distill"] = {**config["resources"]["distill"], "threads": 8}
    config["resources"]["evaluate"]["small"] = {"threads": 4}
    assert rule_resources(config, "distill", "digits", attempt=2)["threads"] == 8
    assert rule_resources(config, "evaluate", "digits")["threads"] == 4
    assert rule_resources(config, "evaluate", "cifar10")["threads"] == 1


def test_profile_installed_under_its_name_works_from_anywhere(tmp_path):
    """The README's install: a copy in ~/.config/snakemake/distillery-slurm ($XDG_CONFIG_HOME here)."""
    shutil.copytree(PROFILE, tmp_path / "xdg/snakemake/distillery-slurm")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**ENV, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}   # ENV: this checkout's library
    output = dry_run(tmp_path / "elsewhere", "results/tables/digits.md", profile="distillery-slurm", env=env)
    assert "distillery-slurm" in output and "Group job evaluate" in output


# ---------------------------------------------------------------------------------------------- real SLURM


def slurm_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root: tests/slurm/cluster.sh starts munged, slurmdbd, slurmctld and slurmd on this machine"
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        return "needs SLURM installed, or apt-get to install Debian's slurm-wlm"
    return None


@pytest.fixture
def cluster():
    reason = slurm_unavailable()
    if reason:
        pytest.skip(reason)
    up = subprocess.run([str(CLUSTER), "up"], capture_output=True, text=True, timeout=600)
    if up.returncode != 0 and "not written by this script" in up.stderr:
        pytest.skip("an /etc/slurm/slurm.conf of another SLURM installation is present; not replacing it")
    assert up.returncode == 0, up.stderr[-3000:]
    try:
        yield
    finally:
        subprocess.run([str(CLUSTER), "down"], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_default_config_runs_through_slurm(cluster, tmp_path):
    (tmp_path / "smoke.yaml").write_text(yaml.safe_dump(SMOKE))
    command = SNAKEMAKE + [
        "--profile", str(PROFILE), "--directory", str(tmp_path), "--configfile", str(tmp_path / "smoke.yaml"),
        # test-only: status polls 1 s after a submission and after a poll that saw a job finish, instead of 10 and
        # 40 s (the plugin adds 10 s to the wait after each poll that saw none finish)
        "--seconds-between-status-checks", "1", "--slurm-init-seconds-before-status-checks", "1",
    ]
    start = time.monotonic()
    # -k: snakemake may wait for running jobs after SIGTERM; SIGKILL follows 10 s later
    result = subprocess.run(["timeout", "-k", "10", "540", *command], capture_output=True, text=True, timeout=600,
                            env=ENV)   # this checkout's library
    log = result.stdout + result.stderr
    slurm_ids = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    try:
        assert result.returncode == 0, log[-5000:]
        print(f"SLURM run: {time.monotonic() - start:.0f} s, {len(slurm_ids)} sbatch submissions")
        # prepare_data 1, train_expert 2, distill 4 on their own; the 4 evaluations in one group (up to 5 a group)
        assert len(slurm_ids) == 8
        # each job's SLURM log goes below the workdir (and is deleted when the job succeeds)
        logs = re.findall(r"has been submitted with SLURM jobid \d+ \(log: (\S+)\)", log)
        assert len(logs) == 8 and all(path.startswith(f"{tmp_path}/.snakemake/slurm_logs/") for path in logs)
        accounting = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-j", ",".join(slurm_ids), "--format=JobIDRaw,State,Partition,Account"],
            capture_output=True, text=True, timeout=60)
        rows = [row.split("|") for row in accounting.stdout.split()]
        assert sorted(row[0] for row in rows) == sorted(slurm_ids), accounting.stdout + accounting.stderr
        assert {tuple(row[1:]) for row in rows} == {("COMPLETED", "debug", "root")}
        # the cheap rules ran on this machine, not through sbatch
        submitted_rules = {re.search(r"slurm_logs/(?:rule|group)_(\w+?)/", path)[1] for path in logs}
        assert submitted_rules == {"prepare_data", "train_expert", "distill", "evaluate_evaluate"}
        table = pd.read_csv(tmp_path / "results/tables/digits.csv")
        assert len(table) == 4 and (table["n"] == 1).all()
        assert sorted(map(tuple, table[["method", "ipc"]].values.tolist())) == sorted(
            (method, ipc) for method in ["random", "mtt"] for ipc in [1, 10])
        assert table["mean"].between(0, 100).all()
        figures = tmp_path / "results/figures"   # and every local rule: plots, the table's figure, the cost table
        for png in ["random/digits/ipc1/images.png", "mtt/digits/ipc10/images.png", "mtt/digits/ipc10/curves.png",
                    "tables/digits/accuracy_vs_ipc.png"]:
            assert (figures / png).read_bytes()[:4] == b"\x89PNG", png
        assert (tmp_path / "results/cost/cost.csv").exists()
    finally:
        if slurm_ids:   # after a timeout, leave no job of this run behind
            subprocess.run(["scancel", *slurm_ids], capture_output=True, timeout=60)
