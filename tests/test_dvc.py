"""DVC shares the expert buffers (dvc.yaml): push them from one clone, pull them into another, retrain nothing."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distillery.plan import expert_sets, load_config
from conftest import job_counts

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent     # the venv: python, snakemake and dvc for the stages' commands
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
SET = dict(dataset="digits", norm="std", model="ConvNetD2W32", recipe="sgd")
BUFFERS = "results/experts/digits/std/ConvNetD2W32/sgd"
SMOKE = {  # two experts of two epochs; MTT and a random subset on digits IPC 1
    "experts": {"count": 2, "overrides": {"epochs": 2}},
    "evaluation": {"seeds": 1, "epochs": 2},
    "distill": {"overrides": {"iterations": 2, "syn_steps": 2, "expert_epochs": 2, "max_start_epoch": 1}},
    "tables": [{"name": "smoke", "cells": [{"method": ["random", "mtt"], "dataset": "digits", "ipc": 1}]}],
}


def run(cwd: Path, *command: str) -> subprocess.CompletedProcess:
    result = subprocess.run(list(command), cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "dvc", *args)


def snakemake(cwd: Path, *args: str) -> str:
    result = run(cwd, sys.executable, "-m", "snakemake", "--configfile", "smoke.yaml", *args)
    return result.stdout + result.stderr


def test_dvc_stages_are_the_expert_sets_of_the_default_config():
    listed = dvc(ROOT, "stage", "list").stdout
    names = re.findall(r"^(\S+)\s+Outputs (\S+)$", listed, re.M)
    expected = [(f"experts@{'-'.join(s.values())}", "results/experts/{dataset}/{norm}/{model}/{recipe}".format(**s))
                for s in expert_sets(load_config(ROOT))]
    assert names == expected   # the default config's sets, each once
    assert "experts@digits-std-ConvNetD2W32-sgd" in dvc(ROOT, "dag").stdout


def test_a_stage_targets_exactly_its_buffer_files():
    files = run(ROOT, sys.executable, "-m", "distillery.plan", "expert-files", "config/config.yaml",
                *SET.values()).stdout.split()
    assert files == [f"{BUFFERS}/{k}.pt" for k in range(load_config(ROOT)["experts"]["count"])]


def working_tree_repo(path: Path) -> None:
    """A git repository holding the checkout's working tree (tracked and untracked, not ignored), committed."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, path / name)
    run(path, "git", "init", "-q")
    commit(path, "working tree")


def commit(path: Path, message: str) -> None:
    run(path, "git", "add", "-A")
    run(path, "git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q", "-m", message)


@pytest.mark.slow
def test_pushed_buffers_are_pulled_back_and_into_a_fresh_clone_and_not_retrained(tmp_path):
    here, there = tmp_path / "distillery", tmp_path / "colleague"
    here.mkdir()
    working_tree_repo(here)
    # Share only the smoke config's set, trained under it.
    (here / "smoke.yaml").write_text(yaml.safe_dump(SMOKE))
    config = yaml.safe_load((here / "config/config.yaml").read_text())
    config["dvc_experts"] = {"-".join(SET.values()): {"config": "smoke.yaml", **SET}}
    (here / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    commit(here, "smoke")

    # A cluster run makes the buffers; DVC records them and uploads them to the default remote, ../distillery-buffers.
    snakemake(here, "--cores", "2", f"{BUFFERS}/0.pt", f"{BUFFERS}/1.pt")
    dvc(here, "commit", "-f")
    assert "up to date" in dvc(here, "status").stdout
    dvc(here, "push")
    assert any(p.is_file() for p in (tmp_path / "distillery-buffers").rglob("*"))
    commit(here, "buffers")
    # The tables, then buffers and cache deleted and pulled again (fresh mtimes): nothing reruns.
    assert "train_expert" not in job_counts(snakemake(here, "--cores", "2"))
    (here / BUFFERS / "stats.json").write_text("{}")   # as rule expert_stats writes: left out by .dvcignore
    assert "up to date" in dvc(here, "status").stdout
    shutil.rmtree(here / BUFFERS)
    shutil.rmtree(here / ".dvc/cache")
    dvc(here, "pull")
    # Real buffers are over Snakemake's checksum limit (1 MB), so only their mtime counts: so here too.
    assert "Nothing to be done" in snakemake(here, "-n", "--cores", "2", "--max-checksum-file-size", "1000")

    # A colleague: clone (no results/, no cache), pull, prepare the data, and plan the tables: no expert training.
    run(tmp_path, "git", "clone", "-q", str(here), str(there))
    dvc(there, "pull")
    assert sorted(p.name for p in (there / BUFFERS).iterdir()) == ["0.pt", "1.pt"]
    assert "up to date" in dvc(there, "status").stdout
    snakemake(there, "--cores", "2", "--until", "prepare_data", "fit_zca")
    jobs = job_counts(snakemake(there, "-n", "--cores", "2"))
    assert "train_expert" not in jobs
    assert jobs["distill"] == 2 and jobs["evaluate"] == 2 and jobs["table"] == 1

    # The set grown by one expert: `dvc repro` keeps the pulled ones (persist), Snakemake trains only the new one.
    smoke = yaml.safe_load((there / "smoke.yaml").read_text())
    smoke["experts"]["count"] = 3
    (there / "smoke.yaml").write_text(yaml.safe_dump(smoke))
    before = (there / BUFFERS / "0.pt").read_bytes()
    assert "experts@digits-std-ConvNetD2W32-sgd" in dvc(there, "repro").stdout
    assert sorted(p.name for p in (there / BUFFERS).iterdir()) == ["0.pt", "1.pt", "2.pt"]
    assert (there / BUFFERS / "0.pt").read_bytes() == before
    assert [p.name for p in (there / "results/logs/train_expert").rglob("*.log")] == ["2.log"]
