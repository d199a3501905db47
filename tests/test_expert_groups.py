"""experts.per_job: K experts trained in one job (vmap) write the files K one-expert jobs write, with trajectories
equal up to rounding; the planner groups only what batched training reproduces; a group job resumes."""
import re
from pathlib import Path

import pytest
import torch

from distillery.checkpoint import Checkpoint, Preempted
from distillery.data import load_split, prepare
from distillery.experts import get_recipe, load_expert, run_expert_group, run_expert_training, train_experts_batched
from distillery.plan import PATHS, expert_group_resources, expert_groups, load_config, parse_expert_path
from conftest import job_counts, snakemake

ROOT = Path(__file__).resolve().parents[1]
MODEL = "ConvNetD2W16"


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("groups")
    prepare("digits", root, root / "digits")
    return root / "digits"


def with_per_job(per_job: int, **experts) -> dict:
    config = load_config(ROOT)
    config["experts"] = {**config["experts"], "per_job": per_job, **experts}
    return config


def test_groups_cover_the_batchable_sets_in_runs_of_per_job():
    assert expert_groups(load_config(ROOT)) == []  # per_job 1, the default: one expert per job
    groups = expert_groups(with_per_job(2))
    # the default table reads sgd, gsam (FTD) and smooth (AST) experts; only plain SGD is batchable
    assert {(g["recipe"], g["model"]) for g in groups} == {("sgd", "ConvNetD2W32")}
    assert [g["seeds"] for g in groups] == [[0, 1], [2, 3], [4]]  # experts.count 5
    files = [f for g in groups for f in g["files"]]
    assert files == [PATHS["expert"].format(dataset="digits", norm="std", model="ConvNetD2W32", recipe="sgd", k=k)
                     for k in range(5)]
    assert [parse_expert_path(f)["k"] for f in files] == list(range(5))
    assert len({g["rule"] for g in groups}) == 3 and all(re.fullmatch(r"\w+", g["rule"]) for g in groups)
    assert len({g["log"] for g in groups} | {g["benchmark"] for g in groups}) == 6
    one, two = (expert_group_resources(with_per_job(2), {**groups[0], "seeds": seeds}) for seeds in ([0], [0, 1]))
    assert two["runtime"] == 2 * one["runtime"] and two["mem_mb"] > one["mem_mb"]  # one more trajectory on the host


def test_a_group_too_large_for_the_gpu_fails_before_any_job_naming_the_size_that_fits():
    config = with_per_job(16, count=16)
    config["tables"] = [{"name": "t", "cells": [{"method": "mtt", "dataset": "cifar10", "ipc": 1}]}]  # GPU jobs
    config["runtime"] = {**config["runtime"], "gpu_memory_gb": 8}
    with pytest.raises(ValueError, match=r"experts.per_job 16: 16 ConvNet experts of cifar10 \(sgd\) trained together "
                                         r"need .* GB with the margin .* more than runtime.gpu_memory_gb 8; set "
                                         r"experts.per_job to \d+ or less") as error:
        expert_groups(config)
    fits = int(re.search(r"to (\d+) or less", str(error.value))[1])
    config["experts"]["per_job"] = fits
    assert [len(g["seeds"]) for g in expert_groups(config)] == [fits, 16 - fits]
    config["experts"]["per_job"] = fits + 1
    with pytest.raises(ValueError, match=f"experts.per_job {fits + 1}:"):
        expert_groups(config)


def test_expert_paths_parse_back_to_their_wildcards():
    where = dict(dataset="tiny-imagenet", norm="zca", model="ConvNetD4", recipe="sgd_b512", k=17)
    assert parse_expert_path(PATHS["expert"].format(**where)) == where
    assert parse_expert_path("/scratch/run/" + PATHS["expert"].format(**where)) == where
    with pytest.raises(ValueError, match="is not an expert file path"):
        parse_expert_path("results/experts/digits/std/ConvNet/sgd/stats.json")


def test_a_group_job_writes_what_one_expert_jobs_write(digits, tmp_path):
    overrides = {"epochs": 2, "batch": 128}
    group = [tmp_path / "group0.pt", tmp_path / "group1.pt"]
    metas = run_expert_group(digits, group, MODEL, "sgd", [3, 4], overrides=overrides)
    for path, seed, meta in zip(group, [3, 4], metas):
        single = tmp_path / f"single{seed}.pt"
        expected = run_expert_training(digits, single, MODEL, "sgd", seed, overrides=overrides)
        (batched, batched_meta), (serial, serial_meta) = load_expert(path), load_expert(single)
        torch.testing.assert_close(batched, serial, rtol=1e-4, atol=1e-5)
        assert (batched[-1] - batched[0]).norm() > 1e-2  # the experts moved
        assert batched_meta.keys() == serial_meta.keys() and meta == {k: batched_meta[k] for k in meta}
        for key in ("recipe", "seed", "model", "zca", "dataset_sha256", "dataset", "seeds", "epochs", "num_params"):
            assert batched_meta[key] == serial_meta[key], key
        assert abs(batched_meta["test_accuracy"] - expected["test_accuracy"]) < 0.01
    with pytest.raises(ValueError, match="one output path per seed; got 1 paths for seeds \\[0, 1\\]"):
        run_expert_group(digits, group[:1], MODEL, "sgd", [0, 1])


def test_a_group_stopped_mid_epoch_by_sigterm_resumes_to_the_same_trajectories(digits, tmp_path):
    images, labels = (t[:768] for t in load_split(digits, "train"))
    recipe = get_recipe("sgd_momentum", epochs=2, batch=128)  # momentum: its buffer must survive the restart
    reference = train_experts_batched(images, labels, MODEL, 10, recipe, [0, 1])

    class StopAtBatch(Checkpoint):
        polls = 0

        def poll(self, state):
            self.polls += 1
            self.terminated = self.terminated or self.polls == 3  # SIGTERM during the first epoch
            super().poll(state)

    with pytest.raises(Preempted):
        train_experts_batched(images, labels, MODEL, 10, recipe, [0, 1], checkpoint=StopAtBatch(tmp_path / "c", 99, {}))
    assert torch.load(tmp_path / "c", weights_only=True)["state"]["position"] == 3 * 128
    resumed = train_experts_batched(images, labels, MODEL, 10, recipe, [0, 1],
                                    checkpoint=Checkpoint(tmp_path / "c", 99, {}))
    assert torch.equal(reference, resumed)


def snakemake_dry_run(workdir: Path, config: dict) -> str:
    result = snakemake(workdir, config, "-n", "--cores", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_dry_run_plans_one_job_per_group(tmp_path):
    stdout = snakemake_dry_run(tmp_path, {"experts": {"count": 4, "per_job": 2}})
    counts = job_counts(stdout)
    groups = {rule: n for rule, n in counts.items() if rule.startswith("train_experts_")}
    assert groups == {"train_experts_digits_std_ConvNetD2W32_sgd_0_1": 1,
                      "train_experts_digits_std_ConvNetD2W32_sgd_2_3": 1}  # 4 sgd experts, 2 per job
    assert counts["train_expert"] == 8  # gsam and smooth: not batchable, one expert per job
    assert "results/experts/digits/std/ConvNetD2W32/sgd/3.pt" in stdout


@pytest.mark.slow
def test_a_group_job_runs_through_the_workflow(tmp_path):
    config = {"experts": {"count": 2, "per_job": 2, "overrides": {"epochs": 3}},
              "distill": {"overrides": {"max_start_epoch": 2}}}
    files = [PATHS["expert"].format(dataset="digits", norm="std", model="ConvNetD2W32", recipe="sgd", k=k)
             for k in range(2)]
    result = snakemake(tmp_path, config, "--cores", "1", *files)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train_experts_digits_std_ConvNetD2W32_sgd_0_1" in result.stdout + result.stderr
    trajectories = [load_expert(tmp_path / f)[0] for f in files]
    assert [t.shape[0] for t in trajectories] == [4, 4] and not torch.equal(trajectories[0], trajectories[1])
    log = tmp_path / "results/logs/train_expert/digits/std/ConvNetD2W32/sgd/0-1.log"
    assert "expert 0..1 (x2) 3/3" in log.read_text()
