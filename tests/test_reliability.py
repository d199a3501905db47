"""Reliability, tested by breaking things: killed jobs resume bit for bit, corrupted or mismatched artifacts are
refused with the file named, and every run records its seeds."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distillery.checkpoint import Checkpoint, Preempted, checkpoint_path
from distillery.data import prepare
from distillery.distill.run import run_distillation
from distillery.evaluate import EvalConfig, evaluate_synset
from distillery.experts import ExpertSampler, load_expert, run_expert_training
from distillery.seeds import generator
from distillery.synset import load_synset

SRC = str(Path(__file__).resolve().parents[1] / "src")
MTT = dict(method="mtt", kind="trajectory", ipc=2, model="ConvNetD2W16", iterations=24, syn_steps=4,
           expert_epochs=1, max_start_epoch=2, lr_img=100.0, lr_lr=1e-6, lr_teacher=0.01, batch_syn=10)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Prepared digits and two 3-epoch experts."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("reliability")
    prepare("digits", root, root / "digits")
    experts = [root / f"expert{k}.pt" for k in range(2)]
    for k, path in enumerate(experts):
        run_expert_training(root / "digits", path, "ConvNetD2W16", "sgd", k, overrides={"epochs": 3, "batch": 64})
    return root / "digits", experts


def child(code: str) -> subprocess.Popen:
    """A Python subprocess running `code` with this checkout's library, its stderr captured."""
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)


def interrupt(code: str, checkpoint: Path, sig: int) -> subprocess.Popen:
    """Start `code`, wait for its first checkpoint, send `sig`, wait for it to end."""
    proc = child(code)
    deadline = time.monotonic() + 120
    while not checkpoint.exists():
        assert proc.poll() is None, f"the job ended before its first checkpoint: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc


def distill_code(prepared: Path, experts: list[Path], out: Path, every: int) -> str:
    return (f"import torch; torch.set_num_threads(1)\n"
            f"from distillery.progress import setup_logging; setup_logging()\n"
            f"from distillery.distill.run import run_distillation\n"
            f"run_distillation({MTT!r}, {str(prepared)!r}, {str(out)!r}, {str(out.with_suffix('.csv'))!r}, "
            f"expert_paths={[str(p) for p in experts]!r}, checkpoint_every={every})\n")


def log_rows(path: Path) -> list[dict]:
    import csv

    return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(open(path))]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_distillation_resumes_to_the_same_synthetic_set(digits, tmp_path, sig):
    prepared, experts = digits
    torch.set_num_threads(1)
    reference = tmp_path / "reference.pt"
    run_distillation(MTT, prepared, reference, reference.with_suffix(".csv"), expert_paths=experts,
                     checkpoint_every=1000)
    out = tmp_path / "synset.pt"
    ckpt = checkpoint_path(out)
    proc = interrupt(distill_code(prepared, experts, out, every=3), ckpt, sig)
    stderr = proc.stderr.read()
    assert proc.returncode != 0 and not out.exists(), "the job was stopped before writing its synthetic set"
    if sig == signal.SIGTERM:
        assert "Preempted: stopped by SIGTERM" in stderr, stderr[-2000:]
    step = torch.load(ckpt, weights_only=True)["state"]["step"]
    assert 3 <= step < MTT["iterations"]
    resumed = child(distill_code(prepared, experts, out, every=3))
    assert resumed.wait(timeout=300) == 0
    assert f"resuming from checkpoint {ckpt} at step {step}" in resumed.stderr.read()
    a, b = load_synset(reference), load_synset(out)
    assert torch.equal(a["images"], b["images"]) and a["lr"] == b["lr"], "bit for bit as the uninterrupted run"
    assert log_rows(reference.with_suffix(".csv")) == log_rows(out.with_suffix(".csv"))
    assert not ckpt.exists(), "the checkpoint is removed once the synthetic set is written"


def expert_code(prepared: Path, out: Path) -> str:
    return (f"import torch; torch.set_num_threads(1)\n"
            f"from distillery.progress import setup_logging; setup_logging()\n"
            f"from distillery.experts import run_expert_training\n"
            f"run_expert_training({str(prepared)!r}, {str(out)!r}, 'ConvNetD2W16', 'sgd', 7, "
            f"overrides={{'epochs': 12, 'batch': 32}}, checkpoint_every=2)\n")


def test_a_killed_expert_resumes_to_the_same_trajectory(digits, tmp_path):
    prepared, _ = digits
    torch.set_num_threads(1)
    reference = tmp_path / "reference.pt"
    run_expert_training(prepared, reference, "ConvNetD2W16", "sgd", 7, overrides={"epochs": 12, "batch": 32},
                        checkpoint_every=1000)
    out = tmp_path / "expert.pt"
    ckpt = checkpoint_path(out)
    proc = interrupt(expert_code(prepared, out), ckpt, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    resumed = child(expert_code(prepared, out))
    assert resumed.wait(timeout=300) == 0
    assert "resuming from checkpoint" in resumed.stderr.read()
    assert torch.equal(load_expert(reference)[0], load_expert(out)[0])
    assert not ckpt.exists()


class Killed(Exception):
    pass


class StopAfter(Checkpoint):
    """A checkpoint that 'kills' the job (raises) right after its n-th save, as SIGKILL would, in-process."""

    def __init__(self, path: Path, every: int, saves: int):
        super().__init__(path, every, identity={"test": 1})
        self.saves = saves

    def step(self, step, state):
        super().step(step, state)
        if self.path.exists() and step % self.every == 0:
            self.saves -= 1
            if self.saves == 0:
                raise Killed


def test_an_expert_stopped_mid_epoch_by_sigterm_resumes_from_that_batch(digits, tmp_path):
    """SIGTERM inside an epoch saves the epoch's order and position; the resumed run equals the uninterrupted one."""
    from distillery.data import load_split
    from distillery.experts import get_recipe, train_expert

    images, labels = load_split(digits[0], "train")
    recipe = get_recipe("sgd", epochs=2, batch=64)
    reference, _ = train_expert(images, labels, "ConvNetD2W16", 10, recipe, seed=3)
    seen = []

    def on_batch(idx, logits):
        seen.append(len(idx))
        if len(seen) == 5:  # inside the first epoch (1,347 images: 22 batches of 64)
            ckpt.terminated = True

    ckpt = Checkpoint(tmp_path / "ckpt", every=1000, identity={})
    with pytest.raises(Preempted):
        train_expert(images, labels, "ConvNetD2W16", 10, recipe, seed=3, on_batch=on_batch, checkpoint=ckpt)
    assert torch.load(tmp_path / "ckpt", weights_only=True)["state"]["position"] == 5 * 64
    resumed, _ = train_expert(images, labels, "ConvNetD2W16", 10, recipe, seed=3,
                              checkpoint=Checkpoint(tmp_path / "ckpt", every=1000, identity={}))
    assert torch.equal(reference, resumed)


@pytest.mark.parametrize("changes", [{}, {"ema_decay": 0.9, "perturb": "gaussian", "perturb_scale": 1e-3},
                                     {"match": "adaptive"}], ids=["mtt", "ftd-ema-robust", "att"])
def test_trajectory_variants_resume_bit_for_bit(digits, tmp_path, changes):
    from distillery.distill.config import DistillConfig
    from distillery.distill.run import load_training, match_trajectories

    prepared, experts = digits
    cfg = DistillConfig.from_dict({**MTT, **changes, "iterations": 9})
    meta, images, labels = load_training(cfg, prepared, None, "cpu")
    reference = match_trajectories(cfg, meta, images, labels, experts)
    with pytest.raises(Killed):
        match_trajectories(cfg, meta, images, labels, experts, StopAfter(tmp_path / "ckpt", every=4, saves=1))
    resumed = match_trajectories(cfg, meta, images, labels, experts, Checkpoint(tmp_path / "ckpt", 4, {"test": 1}))
    assert torch.equal(reference.images, resumed.images) and reference.lr == resumed.lr
    assert [r["loss"] for r in reference.history] == [r["loss"] for r in resumed.history]


def test_apm_resumes_bit_for_bit(digits, tmp_path):
    from distillery.distill.config import DistillConfig
    from distillery.distill.run import adversarial, load_training

    prepared, experts = digits
    cfg = DistillConfig(method="apm", kind="adversarial", ipc=1, model="ConvNetD2W16", iterations=6, lr_img=0.1,
                        student_epochs=3, checkpoints=1, mid_gap=1, student_batch=10)
    meta, images, labels = load_training(cfg, prepared, None, "cpu")
    reference = adversarial(cfg, meta, images, labels, experts)
    with pytest.raises(Killed):
        adversarial(cfg, meta, images, labels, experts, StopAfter(tmp_path / "ckpt", every=2, saves=1))
    resumed = adversarial(cfg, meta, images, labels, experts, Checkpoint(tmp_path / "ckpt", 2, {"test": 1}))
    assert torch.equal(reference.images, resumed.images)
    assert torch.equal(reference.soft_labels, resumed.soft_labels)


def test_a_checkpoint_of_other_settings_is_ignored(tmp_path, caplog):
    path = tmp_path / "ckpt"
    Checkpoint(path, 1, {"lr_img": 100}).step(1, lambda: {"step": 1})
    assert Checkpoint(path, 1, {"lr_img": 100}).resume() == {"step": 1}
    assert Checkpoint(path, 1, {"lr_img": 1000}).resume() is None
    assert "belongs to other settings" in caplog.text
    path.write_bytes(b"garbage")
    assert Checkpoint(path, 1, {"lr_img": 100}).resume() is None and "unreadable" in caplog.text


def test_a_truncated_expert_is_refused_with_its_name(digits, tmp_path):
    path = tmp_path / "0.pt"
    path.write_bytes(digits[1][0].read_bytes()[:-1000])
    with pytest.raises(ValueError, match=f"expert file {path} is unreadable .* rerun its train_expert job"):
        load_expert(path)


def test_a_modified_expert_fails_its_checksum(digits, tmp_path):
    blob = torch.load(digits[1][0], weights_only=True)
    blob["trajectory"][1, 5] += 1e-3
    path = tmp_path / "0.pt"
    torch.save(blob, path)
    with pytest.raises(ValueError, match=f"expert file {path}: the trajectory does not match its sha256"):
        load_expert(path)
    with pytest.raises(ValueError, match="does not match its sha256"):
        ExpertSampler([path], generator(0, "experts"))


@pytest.mark.parametrize("field,value,message", [
    ("zca", True, "has zca=True but this run needs False"),
    ("model", "ConvNet", "has model='ConvNet' but this run needs 'ConvNetD2W16'"),
    ("dataset_sha256", "0" * 64, "has dataset_sha256='0000"),
    ("num_params", 99, "disagrees with its metadata"),
])
def test_an_expert_with_a_flipped_metadata_field_is_refused(digits, tmp_path, field, value, message):
    prepared, experts = digits
    blob = torch.load(experts[0], weights_only=True)
    blob["meta"][field] = value
    bad = tmp_path / "bad.pt"
    torch.save(blob, bad)
    with pytest.raises(ValueError, match=f"expert file {bad}.*{message}"):
        run_distillation(MTT, prepared, tmp_path / "s.pt", tmp_path / "s.csv", expert_paths=[bad, experts[1]])
    assert not (tmp_path / "s.pt").exists()


def test_a_wrong_parameter_count_is_refused_before_compute(digits, tmp_path):
    from distillery.experts import save_expert

    prepared, experts = digits
    trajectory, meta = load_expert(experts[0])
    short = tmp_path / "short.pt"
    save_expert(short, trajectory[:, :-1], meta)  # a consistent, checksummed file of another architecture's size
    with pytest.raises(ValueError, match=f"expert file {short} has num_params=.* but this run needs"):
        run_distillation(MTT, prepared, tmp_path / "s.pt", tmp_path / "s.csv", expert_paths=[short])


def test_a_modified_or_foreign_synthetic_set_is_refused(digits, tmp_path):
    prepared, experts = digits
    path = tmp_path / "synset.pt"
    run_distillation({**MTT, "iterations": 2}, prepared, path, tmp_path / "log.csv", expert_paths=experts)
    synset = load_synset(path)
    assert synset["meta"]["seeds"]["dsa"] != synset["meta"]["seeds"]["init"], "seeds per role are recorded"
    foreign = dict(synset, meta={**synset["meta"], "dataset_sha256": "f" * 64})
    torch.save(foreign, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="foreign.pt has dataset_sha256='ffff.* rerun its distill job"):
        evaluate_synset(tmp_path / "foreign.pt", prepared, "ConvNetD2W16", 0, EvalConfig(epochs=1))
    synset["images"][0, 0, 0, 0] += 1
    torch.save(synset, tmp_path / "edited.pt")
    with pytest.raises(ValueError, match="edited.pt does not match its sha256"):
        load_synset(tmp_path / "edited.pt")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="synset.pt is unreadable"):
        load_synset(path)


def test_same_seed_same_expert_synset_and_accuracy(digits, tmp_path):
    prepared, experts = digits
    torch.set_num_threads(1)  # the same thread count: reductions may differ between counts
    for name in ("once", "again"):
        run_expert_training(prepared, tmp_path / f"{name}.pt", "ConvNetD2W16", "sgd", 5, overrides={"epochs": 2})
    assert torch.equal(load_expert(tmp_path / "once.pt")[0], load_expert(tmp_path / "again.pt")[0])
    assert set(load_expert(tmp_path / "once.pt")[1]["seeds"]) == {"expert-init", "expert-shuffle", "expert-dsa"}
    runs = []
    for k in range(2):
        out = tmp_path / f"s{k}.pt"
        run_distillation({**MTT, "iterations": 3}, prepared, out, tmp_path / f"s{k}.csv", expert_paths=experts)
        runs.append(evaluate_synset(out, prepared, "ConvNetD2W16", 1, EvalConfig(epochs=3)))
        runs[-1]["synset"] = load_synset(out)["images"]
    assert torch.equal(runs[0].pop("synset"), runs[1].pop("synset"))
    assert json.dumps(runs[0], sort_keys=True) == json.dumps(runs[1], sort_keys=True)
    assert runs[0]["seeds"]["eval-init"] != runs[0]["seeds"]["eval-dsa"]


def test_a_job_left_unfinished_is_counted_once_and_its_success_keeps_the_count(tmp_path):
    """distillery.interrupted: what the workflow's onerror hook records, and what a job's `interrupted` param reads."""
    import socket

    from distillery.interrupted import clear_running, interruptions, mark_running, record_interruptions

    results = tmp_path / "results"
    output = results / "experts" / "0.pt"
    output.parent.mkdir(parents=True)
    mark_running(output)  # by this live process: a job of another Snakemake run in the same directory
    assert record_interruptions(results) == [] and interruptions(output) == 0
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    marker = output.with_name(".0.pt.running")
    marker.write_text(json.dumps({"host": socket.gethostname(), "pid": gone.pid, "started": "then"}))
    assert record_interruptions(results) == [output] and interruptions(output) == 1
    assert not marker.exists() and record_interruptions(results) == [], "counted once"
    mark_running(output)
    clear_running(output)  # the redone job succeeded
    assert interruptions(output) == 1 and record_interruptions(results) == []
