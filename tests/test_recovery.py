"""Recovery as a user meets it, through Snakemake's CLI on digits: a preempted, lost, killed or failed job is redone
by the next run of the same command (from its checkpoint) and so is everything made from its output; run-time
settings rerun nothing; a CUDA request this machine cannot meet fails before any job; every recovery command an
error prints regenerates exactly the file it names."""
import csv
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from distillery.data import load_split
from distillery.distill import DistillConfig
from distillery.distill.run import run_distillation
from distillery.plan import load_config, resolve_method
from distillery.synset import load_synset
from distillery.experts import load_expert
from conftest import ENV, ROOT, SNAKEMAKE, job_counts, snakemake

pytestmark = pytest.mark.slow

BASE = {
    "experts": {"count": 1, "overrides": {"epochs": 2}},
    "evaluation": {"seeds": 1, "epochs": 2},
    "distill": {"overrides": {"iterations": 10, "syn_steps": 4, "max_start_epoch": 1, "expert_epochs": 1}},
    "tables": [{"name": "t", "cells": [{"method": "mtt", "dataset": "digits", "ipc": 1}]},
               {"name": "c", "cells": [{"method": "random", "dataset": "digits", "ipc": 1}]}],
}
DATA = ["results/data/digits/train.pt", "results/data/digits/test.pt", "results/data/digits/meta.json"]
EXPERT = "results/experts/digits/std/ConvNetD2W32/sgd/0.pt"
SYNSET, SYNSET_LOG = "results/synsets/mtt/digits/ipc1/synset.pt", "results/synsets/mtt/digits/ipc1/log.csv"
EVAL = "results/evals/mtt/digits/ipc1/ConvNetD2W32/default/seed0.json"
TABLE = "results/tables/t.csv"
LOGS = {"train_expert": "results/logs/train_expert/digits/std/ConvNetD2W32/sgd/0.log",
        "distill": "results/logs/distill/mtt/digits/ipc1.log"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run of BASE: data, one expert, one distillation and a random subset, their evaluations, tables and
    figures."""
    workdir = tmp_path_factory.mktemp("finished")
    run = snakemake(workdir, BASE, "--cores", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    return workdir


def copy_of(finished: Path, tmp_path: Path) -> Path:
    """The finished run's directory, .snakemake's records and file times included."""
    return Path(shutil.copytree(finished, tmp_path / "run", symlinks=True))


def beside(output: str, suffix: str) -> str:
    """The hidden file a job keeps beside its output: .ckpt (checkpoint), .running (distillery.interrupted)."""
    path = Path(output)
    return str(path.with_name(f".{path.name}.{suffix}"))


def start(workdir: Path, config: dict, *args: str) -> subprocess.Popen:
    """Snakemake in the background in a process group of its own, as SLURM runs and signals a job step."""
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return subprocess.Popen(SNAKEMAKE + ["--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
                                         *args], stdout=open(workdir / "background.out", "w"), stderr=subprocess.STDOUT,
                            env=ENV, start_new_session=True)


def wait_for(condition, proc: subprocess.Popen, what: str, workdir: Path) -> None:
    deadline = time.monotonic() + 300
    while not condition():
        assert proc.poll() is None, f"snakemake ended before {what}: {(workdir / 'background.out').read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what}"
        time.sleep(0.02)


def checkpoint_step(workdir: Path, output: str) -> int:
    path = workdir / beside(output, "ckpt")
    return torch.load(path, weights_only=True)["state"]["step"] if path.exists() else 0


def file_times(workdir: Path) -> dict[str, int]:
    """Every file under results/ but the logs and benchmarks (which every job rewrites), with its mtime."""
    return {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in (workdir / "results").rglob("*")
            if p.is_file() and p.relative_to(workdir).parts[1] not in ("logs", "benchmarks")}


def run_printed(message: str, workdir: Path) -> set[str]:
    """Run the command quoted in an error `message`, with this run's options after it as the message says; returns
    the files it wrote (or removed)."""
    printed = shlex.split(re.search(r"`(snakemake [^`]*)`", message).group(1))
    before = file_times(workdir)
    result = subprocess.run(SNAKEMAKE[:3] + printed[1:] + SNAKEMAKE[3:] + [
        "--directory", str(workdir), "--configfile", str(workdir / "config.yaml")],
        capture_output=True, text=True, timeout=900, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    after = file_times(workdir)
    return {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}


# Settings a user changes for a rerun: longer experts, checkpointed every epoch; then a longer distillation too.
LONGER_EXPERTS = {**BASE, "experts": {"count": 1, "overrides": {"epochs": 100}},
                  "reliability": {"checkpoint_every": 5, "expert_checkpoint_every": 1}}
LONGER = {**LONGER_EXPERTS, "distill": {"overrides": {**BASE["distill"]["overrides"], "iterations": 300}}}
COMMAND = ("--cores", "2", "--retries", "1")


def tabled_since(run: Path, since_ns: int) -> dict:
    """The synthetic set, written after `since_ns`, with the evaluation and the table made from it, in that order."""
    synset, evaluation = load_synset(run / SYNSET), json.loads((run / EVAL).read_text())
    times = [(run / path).stat().st_mtime_ns for path in (SYNSET, EVAL, TABLE)]
    assert since_ns < times[0] <= times[1] <= times[2], "redone, in order"
    assert evaluation["lr"] == synset["lr"], "the evaluation is of this synthetic set"
    assert pd.read_csv(run / TABLE)["mean"].tolist() == [round(100 * evaluation["accuracy"], 4)], "and the table"
    return synset


def test_lost_preempted_and_killed_jobs_are_redone_by_the_same_command_from_their_checkpoints(finished, tmp_path):
    run = copy_of(finished, tmp_path)
    table = (run / TABLE).stat().st_mtime_ns
    # 1. Rerun with longer experts. The expert's process is SIGKILLed (its node is lost; Snakemake lives on) and the
    #    retry resumes it; then the run is preempted: SIGTERM to its process group, as SLURM sends.
    proc = start(run, LONGER_EXPERTS, *COMMAND)
    wait_for(lambda: checkpoint_step(run, EXPERT) > 0, proc, "an expert checkpoint", run)
    os.kill(json.loads((run / beside(EXPERT, "running")).read_text())["pid"], signal.SIGKILL)
    time.sleep(0.5)  # gone: its last checkpoint is final
    lost_at = checkpoint_step(run, EXPERT)
    wait_for(lambda: checkpoint_step(run, EXPERT) > lost_at, proc, "a checkpoint of the retry", run)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=300) != 0
    expert_log = (run / LOGS["train_expert"]).read_text()
    assert f"resuming from checkpoint {beside(EXPERT, 'ckpt')} at step {lost_at}" in expert_log, "the retry resumed"
    assert "job failed: Preempted: stopped by SIGTERM" in expert_log and "Traceback" in expert_log
    assert "run the same snakemake command again to resume from it" in expert_log
    preempted_at = checkpoint_step(run, EXPERT)
    assert not (run / EXPERT).exists() and (run / TABLE).stat().st_mtime_ns == table
    # 2. The same command resumes the expert, and redoes the distillation, evaluation and table made from it.
    since = time.time_ns()
    resumed = snakemake(run, LONGER_EXPERTS, *COMMAND)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (f"resuming from checkpoint {beside(EXPERT, 'ckpt')} at step {preempted_at}"
            in (run / LOGS["train_expert"]).read_text())
    assert load_expert(run / EXPERT)[1]["epochs"] == 100
    tabled_since(run, since)
    assert (run / "results/figures/mtt/digits/ipc1/images.png").stat().st_mtime_ns > since, "and its figures"
    # 3. Rerun with a longer distillation, for one table (targets first: --configfile takes every word after it),
    #    preempted: the case, where the table kept the old run's number and the next run did nothing.
    command = (*COMMAND, "results/tables/t.md")
    table = (run / TABLE).stat().st_mtime_ns
    proc = start(run, LONGER, *command)
    wait_for(lambda: checkpoint_step(run, SYNSET) > 0, proc, "a distillation checkpoint", run)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=300) != 0
    assert "job failed: Preempted: stopped by SIGTERM" in (run / LOGS["distill"]).read_text()
    assert not (run / SYNSET).exists() and (run / TABLE).stat().st_mtime_ns == table
    # 4. The same command redoes the distillation and what was made from it (not the expert); here Snakemake is
    #    SIGKILLed with it (the whole process group) after its next checkpoint.
    dry = snakemake(run, LONGER, "-n", *command)
    assert job_counts(dry.stdout) == {"distill": 1, "evaluate": 1, "table": 1}, dry.stdout[-3000:]
    step = checkpoint_step(run, SYNSET)
    proc = start(run, LONGER, *command)
    wait_for(lambda: checkpoint_step(run, SYNSET) > step, proc, "a newer distillation checkpoint", run)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    killed_at = checkpoint_step(run, SYNSET)
    # 5. A SIGKILLed Snakemake leaves its lock: --unlock, then the same command finishes from the checkpoint.
    locked = snakemake(run, LONGER, *command)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    assert snakemake(run, LONGER, "--unlock").returncode == 0
    since = time.time_ns()
    done = snakemake(run, LONGER, *command)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (f"resuming from checkpoint {beside(SYNSET, 'ckpt')} at step {killed_at}"
            in (run / LOGS["distill"]).read_text())
    assert tabled_since(run, since)["meta"]["iterations"] == 300
    assert "Nothing to be done" in snakemake(run, LONGER, "-n", *command).stdout


def readme_commands(row: str, options: list[str], command: list[str]) -> list[list[str]]:
    """The commands in docs/cluster.md's interruption table's row `row`, as printed, with `<your options>` and
    `<your command>` filled in."""
    readme = (ROOT / "docs" / "cluster.md").read_text()
    line = next(line for line in readme.splitlines() if line.strip().startswith(f"| {row}"))
    printed = re.findall(r"`([^`]*)`", line.rsplit("|", 2)[1])
    filled = []
    for text in printed:
        words = []
        for word in shlex.split(text.replace("<your options>", "OPTIONS").replace("<your command>", "COMMAND")):
            words += {"OPTIONS": options, "COMMAND": command}.get(word, [word])
        filled.append(words)
    return filled


def uninterrupted(run: Path, tmp_path: Path, config: dict) -> dict:
    """The synthetic set of `config`'s distillation, computed at once by the library with the job's settings."""
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(config))
    settings = DistillConfig.from_dict(resolve_method(load_config(ROOT, tmp_path / "my.yaml"), "mtt", "digits", 1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the job (resources.default.threads)
    try:
        run_distillation(settings.job_params(), run / "results/data/digits", tmp_path / "ref.pt", tmp_path / "ref.csv",
                         expert_paths=[run / EXPERT], checkpoint_every=1000)
    finally:
        torch.set_num_threads(threads)
    return load_synset(tmp_path / "ref.pt")


def log_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def distilled(run: Path) -> int:
    """The last iteration of STOPPED that the distillation's log reports (0 before any)."""
    log = run / LOGS["distill"]
    steps = re.findall(r"ipc1 (\d+)/90 ", log.read_text()) if log.exists() else []
    return int(steps[-1]) if steps else 0


# A distillation long enough to interrupt twice, checkpointed only when stopped.
STOPPED = {**BASE, "distill": {"overrides": {**BASE["distill"]["overrides"], "iterations": 90}},
           "reliability": {"checkpoint_every": 1000}}


def test_ctrl_c_and_a_killed_snakemake_stop_their_jobs_which_the_readme_commands_finish_as_if_uninterrupted(
        finished, tmp_path):
    run = copy_of(finished, tmp_path)
    options = ["--configfile", str(run / "config.yaml")]
    command = ["snakemake", "--cores", "2", *options]  # as the user typed it
    # 1. Ctrl-C: SIGINT to the terminal's foreground group, Snakemake and its job. The job checkpoints and stops.
    proc = start(run, STOPPED, *command[1:3])
    wait_for(lambda: distilled(run) >= 8, proc, "distillation progress", run)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=300) != 0
    assert "Preempted: stopped by SIGINT; checkpoint" in (run / LOGS["distill"]).read_text()
    interrupted_at = checkpoint_step(run, SYNSET)
    assert 8 <= interrupted_at < 90 and not (run / SYNSET).exists()
    # 2. The same command resumes from that checkpoint; this time Snakemake alone is SIGKILLed. Its job is held
    #    (SIGSTOP) so that the rerun below starts while it still runs: the rerun's job must wait for it.
    proc = start(run, STOPPED, *command[1:3])
    wait_for(lambda: distilled(run) >= interrupted_at + 8, proc, "the resumed distillation", run)
    assert f"resuming from checkpoint {beside(SYNSET, 'ckpt')} at step {interrupted_at}" in (
        run / LOGS["distill"]).read_text()
    orphan = json.loads((run / beside(SYNSET, "running")).read_text())["pid"]
    os.kill(orphan, signal.SIGSTOP)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    # 3. docs/cluster.md's commands for this row, as printed: --unlock, then the command with --rerun-incomplete.
    unlock, again = readme_commands("SIGKILL of Snakemake alone", options, command)
    assert unlock[:2] == ["snakemake", "--unlock"] and again == [*command, "--rerun-incomplete"]
    unlocked = snakemake(run, None, *unlock[1:])
    assert unlocked.returncode == 0, unlocked.stderr[-3000:]
    since = time.time_ns()
    rerun = subprocess.Popen(SNAKEMAKE + ["--directory", str(run)] + again[1:], stdout=open(run / "rerun.out", "w"),
                             stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
    waiting = f"is being written by process {orphan} on "
    deadline = time.monotonic() + 300
    while waiting not in (run / "rerun.out").read_text():
        assert rerun.poll() is None and time.monotonic() < deadline, (run / "rerun.out").read_text()[-3000:]
        time.sleep(0.05)
    os.kill(orphan, signal.SIGCONT)  # its watchdog finds its Snakemake gone: it checkpoints and stops
    assert rerun.wait(timeout=300) == 0, (run / "rerun.out").read_text()[-3000:]
    assert not Path(f"/proc/{orphan}").exists(), "the orphan ended"
    log = (run / LOGS["distill"]).read_text()
    assert f"waited for process {orphan} on " in log, "one writer at a time"
    resumed_at = int(re.search(r"resuming from checkpoint \S+ at step (\d+)", log).group(1))
    assert interrupted_at < resumed_at < 90, "from the checkpoint the orphan saved when it stopped"
    # 4. The finished run: the synthetic set and its log equal an uninterrupted run's; what was made from it follows.
    synset, reference = tabled_since(run, since), uninterrupted(run, tmp_path, STOPPED)
    assert torch.equal(synset["images"], reference["images"]) and synset["lr"] == reference["lr"]
    assert log_rows(run / SYNSET_LOG) == log_rows(tmp_path / "ref.csv")
    assert not (run / beside(SYNSET, "ckpt")).exists() and not (run / beside(SYNSET, "running")).exists()
    assert "Nothing to be done" in snakemake(run, STOPPED, "-n").stdout


def test_run_time_settings_rerun_nothing_and_an_unmet_cuda_request_fails_before_any_job(finished, tmp_path):
    run = copy_of(finished, tmp_path)
    run_time = {**BASE, "device": "cpu", "data_dir": "elsewhere", "runtime": {"tf32": "none"},
                "reliability": {"checkpoint_every": 7, "expert_checkpoint_every": 2, "max_bad_iterations": 3},
                "resources": {"default": {"threads": 2}, "distill": {"small": {"threads": 2}}}}
    dry = snakemake(run, run_time, "-n", "--cores", "1", "--set-threads", "train_expert=2", "distill=2")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout, dry.stdout[-3000:]
    nested = snakemake(run, BASE, "-n", "--config", "reliability={checkpoint_every: 7}", "data_dir=elsewhere",
                       "resources={default: {threads: 3}}")  # the same as the command line sets them
    assert nested.returncode == 0 and "Nothing to be done" in nested.stdout, nested.stdout[-3000:]
    # A distillation setting reruns the distillation, what was made from it and the cost table: not the random subset
    # of table c, which reads none.
    longer = {**BASE, "distill": {"overrides": {**BASE["distill"]["overrides"], "iterations": 11, "lr_lr": 1e-6}}}
    assert job_counts(snakemake(run, longer, "-n").stdout) == {"distill": 1, "evaluate": 1, "table": 1,
                                                               "plot_cell": 1, "cost": 1, "all": 1}
    # runtime.gpu_memory_gb plans the cells' memory again: these keep theirs, and only the cost table (of that GPU) is
    # redone.
    smaller = snakemake(run, {**BASE, "runtime": {"gpu_memory_gb": 40}}, "-n")
    assert job_counts(smaller.stdout) == {"cost": 1, "all": 1}, smaller.stdout[-3000:]
    # The same checkout elsewhere: no job param or input names where it lives.
    moved = tmp_path / "moved"
    for part in ("workflow", "config", "scripts", "envs"):
        shutil.copytree(ROOT / part, moved / part)
    elsewhere = snakemake(run, BASE, "-n", "-s", str(moved / "workflow/Snakefile"))
    assert elsewhere.returncode == 0 and "Nothing to be done" in elsewhere.stdout, elsewhere.stdout[-3000:]
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: device cuda can be met")
    expert = (run / EXPERT).stat().st_mtime_ns
    cuda = snakemake(run, {**BASE, "device": "cuda"}, "--cores", "1", "--force", EXPERT)
    output = cuda.stdout + cuda.stderr
    assert cuda.returncode != 0 and "device: 'cuda' was requested but this machine has no visible CUDA device" in output
    assert "rule train_expert" not in output and (run / EXPERT).stat().st_mtime_ns == expert, "no job, no deletion"


def test_every_printed_recovery_command_regenerates_exactly_its_file(finished, tmp_path, monkeypatch):
    run = copy_of(finished, tmp_path)
    monkeypatch.chdir(run)  # the library sees the paths a job sees, relative to the working directory
    # A corrupted expert fails the distillation that reads it (rerun for new settings), naming the command.
    blob = torch.load(run / EXPERT, weights_only=True)
    blob["trajectory"][1, 0] += 1.0
    torch.save(blob, run / EXPERT)
    longer = {**BASE, "distill": {"overrides": {**BASE["distill"]["overrides"], "iterations": 12, "batch_syn": 500}}}
    failed = snakemake(run, longer, "--cores", "2")
    assert failed.returncode != 0 and not (run / SYNSET).exists()
    log = (run / LOGS["distill"]).read_text()
    assert f"job failed: ValueError: expert file {EXPERT}: the trajectory does not match its sha256" in log
    assert "Traceback" in log
    assert run_printed(log, run) == {EXPERT}
    # The same command then redoes the failed distillation, and the evaluation and table made from it.
    since = time.time_ns()
    again = snakemake(run, longer, "--cores", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    synset = tabled_since(run, since)
    assert synset["meta"]["iterations"] == 12 and synset["meta"]["batch_syn"] == 10, "recorded as used"
    assert "batch_syn=500 is larger than the synthetic set (IPC 1 x 10 classes = 10 images): using 10" in (
        run / LOGS["distill"]).read_text()
    # A modified synthetic set, and a truncated prepared split.
    torch.save(dict(synset, images=synset["images"] + 1), SYNSET)
    with pytest.raises(ValueError) as bad_synset:
        load_synset(SYNSET)
    assert run_printed(str(bad_synset.value), run) == {SYNSET, SYNSET_LOG}
    dry = snakemake(run, longer, "-n", "--cores", "2")
    assert job_counts(dry.stdout) == {"evaluate": 1, "table": 1, "plot_cell": 1, "all": 1}, \
        "then the usual command redoes what was made from the regenerated set"
    Path(DATA[0]).write_bytes(Path(DATA[0]).read_bytes()[:1000])
    with pytest.raises(ValueError) as bad_split:
        load_split("results/data/digits", "train")
    assert run_printed(str(bad_split.value), run) == set(DATA)
    load_split("results/data/digits", "train")  # all sound again
    load_synset(SYNSET)
    load_expert(EXPERT)
