import json
import os

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


def test_a_stopped_job_leaves_none_of_its_outputs_so_the_same_command_reruns_it(tmp_path, restore_logging):
    """Ctrl-C while a job had written some outputs: Snakemake cancels it without removing them and would call them
    incomplete; the job removes what it wrote (a file and a folder here) before it exits."""
    import os
    import signal
    import time

    from distillery.runtime import job

    table, figures, never = tmp_path / "cost.csv", tmp_path / "figures", tmp_path / "cost.html"
    with pytest.raises(SystemExit) as stopped:
        with job(tmp_path / "job.log", [table, figures, never]):
            table.write_text("written")
            (figures / "a").mkdir(parents=True)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises at the next bytecode
    assert stopped.value.code == 1 and not table.exists() and not figures.exists() and not never.exists()
    text = (tmp_path / "job.log").read_text()
    assert "stopped by SIGINT" in text and f"removed the outputs this job had written: {table}, {figures}" in text


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


def _python(code: str, **kwargs):
    """A Python process running `code` with this checkout's library."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[1] / "src")
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": src}, text=True, **kwargs)


def test_a_job_stops_like_on_sigterm_once_the_snakemake_that_started_it_is_killed(tmp_path):
    """The job's parent is a shell (as a `script:` job's may be), the shell's parent the 'Snakemake' process that
    announced itself; SIGKILL of that process alone stops the job through its watchdog: logged, with its checkpoint."""
    import os
    import shlex
    import signal
    import sys
    import time

    log, out = tmp_path / "job.log", tmp_path / "out.pt"
    job_code = (f"import time\nfrom distillery.checkpoint import Checkpoint\nfrom distillery.runtime import job\n"
                f"with job({str(log)!r}, [{str(out)!r}]), Checkpoint({str(tmp_path / 'ckpt')!r}, 10**6, {{}}) as c:\n"
                f"    for step in range(1, 10**6):\n"
                f"        time.sleep(0.01)\n"
                f"        c.step(step, lambda: {{'step': step}})\n")
    snakemake_code = (f"import subprocess, sys, time\nfrom distillery.runtime import announce_workflow_process\n"
                      f"announce_workflow_process()\n"
                      f"subprocess.Popen(['bash', '-c', {shlex.quote(sys.executable)!r} + ' -c ' + "
                      f"{shlex.quote(job_code)!r} + '; true'])\n"
                      f"time.sleep(600)\n")
    parent = _python(snakemake_code)
    marker = tmp_path / ".out.pt.running"
    deadline = time.monotonic() + 120
    while not (marker.exists() and marker.read_text()):
        assert parent.poll() is None and time.monotonic() < deadline, "the job did not start"
        time.sleep(0.05)
    job_pid = json.loads(marker.read_text())["pid"]
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    while "job failed" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline + 60, "the job outlived its Snakemake"
        time.sleep(0.05)
    text = log.read_text()
    assert f"the Snakemake process that started this job ({parent.pid}) has ended: stopping as on SIGTERM" in text
    assert f"job failed: Preempted: stopped by SIGTERM; checkpoint {tmp_path / 'ckpt'} saved" in text
    assert torch.load(tmp_path / "ckpt", weights_only=True)["state"]["step"] >= 1
    assert job_pid != parent.pid


def test_no_watchdog_outside_a_snakemake_job(monkeypatch):
    """A job run by hand, or one whose announced Snakemake is another machine's or no ancestor, watches nothing."""
    import socket

    from distillery.runtime import WORKFLOW_PROCESS, Watchdog, process_id

    monkeypatch.delenv(WORKFLOW_PROCESS, raising=False)
    assert Watchdog().target is None
    monkeypatch.setenv(WORKFLOW_PROCESS, f"elsewhere:{os.getppid()}:")
    assert Watchdog().target is None
    sibling = _python("import time; time.sleep(60)")
    try:
        monkeypatch.setenv(WORKFLOW_PROCESS, process_id(sibling.pid))
        assert Watchdog().target is None, "not above this process"
    finally:
        sibling.kill()
        sibling.wait()
    monkeypatch.setenv(WORKFLOW_PROCESS, process_id(os.getppid()))
    assert Watchdog().target == (os.getppid(), process_id(os.getppid()).rsplit(":", 1)[1])
    assert socket.gethostname() == process_id().split(":")[0]


def test_a_second_writer_of_an_output_waits_for_the_first_naming_its_pid(tmp_path):
    """Two processes never write one output: the second job waits (logging the first's PID and host), then runs."""
    import subprocess
    import time

    out = tmp_path / "out.pt"
    first = _python(f"import sys\nfrom distillery.interrupted import running\n"
                    f"with running({str(out)!r}):\n    print('writing', flush=True)\n    sys.stdin.read()\n",
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert first.stdout.readline() == "writing\n"
    second = _python(f"from distillery.progress import setup_logging\nfrom distillery.runtime import job\n"
                     f"with job(None, [{str(out)!r}]):\n    print('second writes', flush=True)\n",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    waiting = f"{out} is being written by process {first.pid} on "
    deadline, seen = time.monotonic() + 120, ""
    while waiting not in seen:
        assert second.poll() is None and time.monotonic() < deadline, seen
        seen += second.stderr.readline()
    assert first.poll() is None, "the first still writes; the second waits"
    first.stdin.close()
    assert first.wait(timeout=60) == 0
    stdout, stderr = second.communicate(timeout=120)
    assert second.returncode == 0 and stdout == "second writes\n", stderr
    assert f"waited for process {first.pid} on " in stderr and not (tmp_path / ".out.pt.running").exists()
