"""Reliability, tested by breaking things: killed jobs resume bit for bit, corrupted or mismatched artifacts are
refused with the file named, and every run records its seeds."""
import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distillery.checkpoint import Checkpoint, LoopState, Preempted, checkpoint_path
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


class Recorder(Checkpoint):
    """A checkpoint that also keeps every capture its loop hands it, by step: the loop's whole declared state."""

    def __init__(self, path: Path | None = None, every: int = 1000, identity: dict | None = None):
        super().__init__(path, every, identity={"test": 1} if identity is None else identity)
        self.states: dict[int, dict] = {}

    def step(self, step, state):
        self.states[step] = state()
        super().step(step, state)


def assert_same(expected, actual, where: str) -> None:
    """Equal bit for bit: tensors (dtype and values), containers entry by entry, plain values; the wall-clock
    `seconds` of history rows aside."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and expected.dtype == actual.dtype, where
        assert torch.equal(expected, actual), where
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and expected.keys() == actual.keys(), where
        for key in expected:
            if key != "seconds":
                assert_same(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(expected) == len(actual), where
        for i, (x, y) in enumerate(zip(expected, actual)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert expected == actual, f"{where}: {expected!r} != {actual!r}"


def assert_same_states(reference: Recorder, resumed: Recorder) -> None:
    """Every entry the loop declares in its LoopState equal at every step the resumed run took: an entry added to a
    declaration is compared here without a change to this test."""
    assert resumed.states, "the resumed run took at least one step"
    for step, state in resumed.states.items():
        assert state.keys() == reference.states[step].keys()
        for name in state:
            assert_same(reference.states[step][name], state[name], f"step {step}: {name}")


def test_an_expert_stopped_mid_epoch_by_sigterm_resumes_from_that_batch(digits, tmp_path):
    """SIGTERM inside an epoch saves the epoch's order and position; the resumed run equals the uninterrupted one."""
    from distillery.data import load_split
    from distillery.experts import get_recipe, train_expert

    images, labels = load_split(digits[0], "train")
    recipe = get_recipe("sgd", epochs=2, batch=64)
    recorded = Recorder(identity={})
    reference, _ = train_expert(images, labels, "ConvNetD2W16", 10, recipe, seed=3, checkpoint=recorded)
    seen = []

    def on_batch(idx, logits):
        seen.append(len(idx))
        if len(seen) == 5:  # inside the first epoch (1,347 images: 22 batches of 64)
            ckpt.terminated = True

    ckpt = Checkpoint(tmp_path / "ckpt", every=1000, identity={})
    with pytest.raises(Preempted):
        train_expert(images, labels, "ConvNetD2W16", 10, recipe, seed=3, on_batch=on_batch, checkpoint=ckpt)
    assert torch.load(tmp_path / "ckpt", weights_only=True)["state"]["position"] == 5 * 64
    again = Recorder(tmp_path / "ckpt", identity={})
    resumed, _ = train_expert(images, labels, "ConvNetD2W16", 10, recipe, seed=3, checkpoint=again)
    assert torch.equal(reference, resumed)
    assert_same_states(recorded, again)


@pytest.mark.parametrize("changes", [{}, {"ema_decay": 0.9, "perturb": "gaussian", "perturb_scale": 1e-3},
                                     {"match": "adaptive"},
                                     {"learn_labels": True, "lr_y": 2.0, "init": "correct", "threshold": 1.0,
                                      "min_start_epoch": 0, "current_max_start_epoch": 1, "expansion_end_epoch": 4}],
                         ids=["mtt", "ftd-ema-robust", "att", "datm"])
def test_trajectory_variants_resume_bit_for_bit(digits, tmp_path, changes):
    from distillery.distill.config import DistillConfig
    from distillery.distill.run import load_training, match_trajectories

    prepared, experts = digits
    cfg = DistillConfig.from_dict({**MTT, **changes, "iterations": 9})
    meta, images, labels = load_training(cfg, prepared, None, "cpu")
    recorded, again = Recorder(), Recorder(tmp_path / "ckpt", 4)
    reference = match_trajectories(cfg, meta, images, labels, experts, recorded)
    with pytest.raises(Killed):
        match_trajectories(cfg, meta, images, labels, experts, StopAfter(tmp_path / "ckpt", every=4, saves=1))
    resumed = match_trajectories(cfg, meta, images, labels, experts, again)
    assert torch.equal(reference.images, resumed.images) and reference.lr == resumed.lr
    assert [r["loss"] for r in reference.history] == [r["loss"] for r in resumed.history]
    assert_same_states(recorded, again)


def test_apm_resumes_bit_for_bit(digits, tmp_path):
    from distillery.distill.config import DistillConfig
    from distillery.distill.run import adversarial, load_training

    prepared, experts = digits
    cfg = DistillConfig(method="apm", kind="adversarial", ipc=1, model="ConvNetD2W16", iterations=6, lr_img=0.1,
                        student_epochs=3, checkpoints=1, mid_gap=1, student_batch=10)
    meta, images, labels = load_training(cfg, prepared, None, "cpu")
    recorded, again = Recorder(), Recorder(tmp_path / "ckpt", 2)
    reference = adversarial(cfg, meta, images, labels, experts, recorded)
    with pytest.raises(Killed):
        adversarial(cfg, meta, images, labels, experts, StopAfter(tmp_path / "ckpt", every=2, saves=1))
    resumed = adversarial(cfg, meta, images, labels, experts, again)
    assert torch.equal(reference.images, resumed.images)
    assert torch.equal(reference.soft_labels, resumed.soft_labels)
    assert_same_states(recorded, again)


def test_a_batched_group_resumes_every_declared_entry_bit_for_bit(digits, tmp_path):
    from distillery.data import load_split
    from distillery.experts import get_recipe, train_experts_batched

    images, labels = (t[:256] for t in load_split(digits[0], "train"))
    recipe = get_recipe("sgd_momentum", epochs=3, batch=128)  # momentum: a rebound value that must survive
    recorded, again = Recorder(), Recorder(tmp_path / "ckpt", 1)
    reference = train_experts_batched(images, labels, "ConvNetD2W16", 10, recipe, [0, 1], checkpoint=recorded)
    with pytest.raises(Killed):
        train_experts_batched(images, labels, "ConvNetD2W16", 10, recipe, [0, 1],
                              checkpoint=StopAfter(tmp_path / "ckpt", every=1, saves=1))
    resumed = train_experts_batched(images, labels, "ConvNetD2W16", 10, recipe, [0, 1], checkpoint=again)
    assert torch.equal(reference, resumed) and sorted(again.states) == [2, 3]
    assert_same_states(recorded, again)


class Counter:
    """An object with state() and load_state(), as Batches and ExpertSampler are."""

    def __init__(self, n: int):
        self.n = n

    def state(self) -> dict:
        return {"n": self.n}

    def load_state(self, state: dict) -> None:
        self.n = state["n"]


def test_a_loop_state_round_trips_every_entry_kind_through_a_checkpoint_without_aliasing(tmp_path):
    weights = torch.arange(3.0, requires_grad=True)
    opt = torch.optim.SGD([weights], lr=0.1, momentum=0.9)

    def train_a_little() -> None:  # changes the weights, the momentum buffer and the BatchNorm statistics
        weights.grad = torch.ones(3)
        opt.step()
        module(torch.arange(12.0).view(4, 3) * weights.detach())

    module = torch.nn.BatchNorm1d(3)
    streams = [generator(1, "a"), generator(2, "b")]
    counter = Counter(5)
    train_a_little()
    loop = LoopState("cpu", kept=dict(weights=weights, opt=opt, module=module, stream=generator(0, "c"),
                                      streams=streams, counter=counter, absent=None),
                     values=dict(step=3, history=[{"loss": 1.5}], theta=torch.ones(2), none=None))
    Checkpoint(tmp_path / "ckpt", 1, {"test": 1}).step(3, loop.capture)
    captured = loop.capture()
    expected = copy.deepcopy(captured)
    train_a_little()
    for g in streams + [loop._kept["stream"]]:
        torch.rand(1, generator=g)
    counter.n = 6
    loop.theta.add_(1)
    loop.history.append({"loss": 2.0})
    loop.step = 4
    assert_same(expected, captured, "a capture")  # it copied every tensor and container: nothing moved with the loop
    assert not torch.equal(weights.detach(), expected["weights"]) and counter.n == 6
    assert loop.resume(Checkpoint(tmp_path / "ckpt", 1, {"test": 1}))
    assert_same(expected, loop.capture(), "restored")
    assert loop.step == 3 and loop.history == [{"loss": 1.5}] and loop.none is None and counter.n == 5
    assert opt.param_groups[0]["params"][0] is weights and weights.requires_grad, "restored in place"
    assert sorted(expected) == sorted(loop.names()) == ["absent", "counter", "history", "module", "none", "opt",
                                                        "step", "stream", "streams", "theta", "weights"]


def test_a_loop_state_refuses_what_it_cannot_keep_and_a_checkpoint_of_other_entries(tmp_path, caplog):
    with pytest.raises(TypeError, match="loop state entry 'experts': a list_iterator cannot be checkpointed"):
        LoopState("cpu", kept=dict(experts=iter([])), values={}).resume(Checkpoint(None, 1, {}))
    LoopState("cpu", kept=dict(experts=iter([])), values={}).resume(None)  # no checkpoint: nothing to keep
    with pytest.raises(ValueError, match=r"entries \['capture', 'step'\]: a name is declared twice"):
        LoopState("cpu", kept=dict(step=torch.zeros(1)), values=dict(step=0, capture=1))
    path = tmp_path / "ckpt"
    Checkpoint(path, 1, {}).step(1, lambda: {"step": 1, "images": torch.zeros(1)})
    loop = LoopState("cpu", kept=dict(images=torch.ones(1)), values=dict(step=0, bad=0))
    assert not loop.resume(Checkpoint(path, 1, {})) and loop.step == 0
    assert "holds the entries ['images', 'step'], not this loop's ['bad', 'images', 'step']" in caplog.text


def test_a_checkpoint_of_other_settings_is_ignored(tmp_path, caplog):
    path = tmp_path / "ckpt"
    Checkpoint(path, 1, {"lr_img": 100}).step(1, lambda: {"step": 1})
    assert Checkpoint(path, 1, {"lr_img": 100}).resume() == {"step": 1}
    assert Checkpoint(path, 1, {"lr_img": 1000}).resume() is None
    assert "belongs to other settings" in caplog.text
    path.write_bytes(b"garbage")
    assert Checkpoint(path, 1, {"lr_img": 100}).resume() is None and "unreadable" in caplog.text


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP, signal.SIGTERM], ids=["SIGINT", "SIGHUP", "SIGTERM"])
def test_every_stop_signal_saves_a_checkpoint_and_names_itself(tmp_path, sig):
    """Ctrl-C (SIGINT) and a closed terminal (SIGHUP) stop a loop as SLURM's SIGTERM does: state saved, then Preempted."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)}
    path = tmp_path / "ckpt"
    with pytest.raises(Preempted, match=f"stopped by {sig.name}; checkpoint {path} saved; run the same snakemake "
                                        f"command again to resume from it"):
        with Checkpoint(path, 1000, {"job": 1}) as checkpoint:
            for step in range(1, 10):
                if step == 3:
                    os.kill(os.getpid(), sig)
                checkpoint.step(step, lambda: {"step": step})
    assert torch.load(path, weights_only=True) == {"identity": {"job": 1}, "state": {"step": 3}}
    assert {s: signal.getsignal(s) for s in before} == before, "the handlers are put back"


def test_a_stop_signal_the_process_was_started_ignoring_stays_ignored():
    """Under nohup (SIGHUP) or as a background job (SIGINT) the signal is ignored, and a job must not start to act on
    it; SIGTERM is always handled."""
    from distillery.checkpoint import on_stop_signals, restore_signals

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)}
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        previous = on_stop_signals(lambda *args: None)
        assert set(previous) == {signal.SIGINT, signal.SIGTERM} and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        restore_signals(previous)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_a_full_disk_is_named_as_such_with_the_file_not_as_torchs_archive_error(tmp_path):
    """torch.save turns ENOSPC into `RuntimeError: [enforce fail at inline_container.cc] . unexpected pos …`; the
    write names ENOSPC and the file, and leaves nothing behind."""
    import errno

    from distillery.io import write_temp

    class FullDisk:
        """A file that takes `room` bytes and then fails as a full disk does."""

        def __init__(self, f, room):
            self.f, self.room = f, room

        def write(self, data):
            if len(data) > self.room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.room -= len(data)
            return self.f.write(data)

        def flush(self):
            self.f.flush()

    with pytest.raises(RuntimeError, match="unexpected pos"):  # what torch itself says
        torch.save({"x": torch.zeros(4096)}, FullDisk(open(tmp_path / "raw", "wb"), 1000))
    with pytest.raises(OSError) as full:
        write_temp(tmp_path / "out", "expert.pt", lambda f: torch.save({"x": torch.zeros(4096)}, FullDisk(f, 1000)))
    assert full.value.errno == errno.ENOSPC
    assert str(full.value).startswith(f"[Errno {errno.ENOSPC}] ENOSPC (No space left on device) while writing "
                                      f"{tmp_path / 'out' / 'expert.pt'} (")
    assert list((tmp_path / "out").iterdir()) == [], "no temp file left"


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
    from distillery.interrupted import interruptions, record_interruptions, running

    results = tmp_path / "results"
    output = results / "experts" / "0.pt"
    output.parent.mkdir(parents=True)
    marker = output.with_name(".0.pt.running")
    with running(output):  # a job of another Snakemake run in the same directory, still running (its lock held)
        assert json.loads(marker.read_text())["pid"] == os.getpid()
        assert record_interruptions(results) == [] and interruptions(output) == 0
    assert not marker.exists(), "removed when the job succeeds"
    with pytest.raises(RuntimeError):
        with running(output):
            raise RuntimeError("the job failed")
    assert marker.exists(), "left, unlocked, when it fails"
    assert record_interruptions(results) == [output] and interruptions(output) == 1
    assert not marker.exists() and record_interruptions(results) == [], "counted once"
    with running(output):
        pass  # the redone job succeeded
    assert interruptions(output) == 1 and record_interruptions(results) == []
