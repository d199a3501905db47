import pytest
import torch

from distillery.runtime import TF32_MODES, channels_last, set_tf32


def _flags():
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def test_tf32_is_a_no_op_on_the_cpu_and_bad_modes_are_named():
    before = _flags()
    for mode in TF32_MODES:
        assert set_tf32("cpu", mode) is False
    assert _flags() == before
    with pytest.raises(ValueError, match="runtime.tf32='fast' is not one of all, conv, none"):
        set_tf32("cpu", "fast")
    x = torch.randn(2, 3, 4, 4)
    assert channels_last(x) is x


def test_the_default_config_sets_tf32_as_the_references_torch_did():
    from pathlib import Path

    from distillery.plan import load_config

    assert load_config(Path(__file__).resolve().parents[1])["runtime"]["tf32"] == "all"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tf32_modes_set_both_flags_explicitly_and_channels_last_keeps_values():
    before = _flags()
    try:
        for mode, flags in (("conv", (True, False)), ("all", (True, True)), ("none", (False, False))):
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = not flags[0], not flags[1]
            assert set_tf32("cuda:0", mode) is True
            assert _flags() == flags
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
    x = torch.randn(2, 3, 4, 4, device="cuda")
    y = channels_last(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, y)


def test_to_device_moves_and_casts_like_to_on_the_cpu():
    from distillery.runtime import to_device

    v = torch.tensor([1.5, 2.5])
    assert to_device(v, "cpu") is v
    assert torch.equal(to_device(v, "cpu", torch.long), v.to(torch.long))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_device_to_cuda_is_asynchronous_and_exact():
    from distillery.runtime import to_device

    v = torch.randn(1000)
    moved = to_device(v, "cuda", torch.float64)
    assert moved.is_cuda and torch.equal(moved.cpu(), v.double())


@pytest.fixture
def restore_logging():
    """job() points the root logger at its log file, as a job process does: put pytest's handlers back after."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level = handlers, level


def test_a_failing_job_writes_its_traceback_to_its_log_and_exits_1_marked_unfinished(tmp_path, restore_logging):
    from distillery.runtime import job

    log_file, output = tmp_path / "job.log", tmp_path / "out.pt"
    with pytest.raises(SystemExit) as stopped:
        with job(log_file, [output]):
            raise ValueError("boom")
    assert stopped.value.code == 1
    text = log_file.read_text()
    assert "job failed: ValueError: boom" in text and "Traceback (most recent call last)" in text
    assert 'raise ValueError("boom")' in text, "the traceback reaches the failing line"
    assert (tmp_path / ".out.pt.running").is_file(), "left unfinished: counted if the run ends failed"
    with job(log_file, [output]) as device:
        assert device == "cpu"
    assert not (tmp_path / ".out.pt.running").exists()


def test_a_job_runs_torch_on_the_threads_snakemake_gives_it(tmp_path, restore_logging):
    from distillery.runtime import job

    before = torch.get_num_threads()
    try:
        with job(tmp_path / "job.log", [tmp_path / "out.pt"], threads=3):
            assert torch.get_num_threads() == 3
        with job(tmp_path / "job.log", [tmp_path / "out.pt"], threads=0):
            assert torch.get_num_threads() == 1       # at least one
    finally:
        torch.set_num_threads(before)


def test_sigterm_outside_a_checkpointed_loop_stops_the_job_with_a_logged_preemption(tmp_path, restore_logging):
    import os
    import signal
    import time

    from distillery.runtime import job

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit):
        with job(tmp_path / "job.log", [tmp_path / "out.json"]):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises at the next bytecode
    assert "job failed: Preempted: stopped by SIGTERM outside a checkpointed loop" in (tmp_path / "job.log").read_text()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_cuda_request_without_a_gpu_names_the_setting(monkeypatch):
    from distillery.runtime import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="device: 'cuda:1' was requested but this machine has no visible CUDA device; "
                                         "set device: auto .* or cpu"):
        resolve_device("cuda:1")


def test_progress_logs_at_least_once_a_minute_with_an_eta_also_within_a_step(monkeypatch, caplog):
    import logging

    from distillery.progress import Progress

    clock = [0.0]
    monkeypatch.setattr("distillery.progress.time.perf_counter", lambda: clock[0])
    caplog.set_level(logging.INFO, logger="distillery")
    progress = Progress(100, "expert 0")  # a line every 5 steps, and at least every 60 s

    def at(seconds: float, step: float) -> str:
        clock[0] = seconds
        caplog.clear()
        progress.update(step)
        return caplog.text

    assert at(30, 0.5) == ""
    assert "expert 0 1/100  elapsed 0:01:01 eta 1:40:39" in at(61, 1)        # 61 s a step, 99 to go
    assert at(62, 1.5) == ""
    assert "expert 0 1.90/100  elapsed 0:02:02 eta 1:44:59" in at(122, 1.9)  # 122 / 1.9 s a step, 98.1 to go
    assert "expert 0 5/100" in at(130, 5)                                      # every 5 steps, whatever the time
    clock[0] = 0
    resumed = Progress(100, "distill", done=50)
    clock[0] = 60
    caplog.clear()
    resumed.update(51)
    assert "distill 51/100  elapsed 0:01:00 eta 0:49:00" in caplog.text         # this run's pace, not 51 steps in 60 s
