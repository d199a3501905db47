"""What every workflow job runs inside: its log file (its own error included), its thread pool, its device, a
clean stop on a stop signal or when its Snakemake ends, and the mark that it has not finished yet, which is also its
output's one-writer lock (distillery.interrupted)."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import threading
from pathlib import Path
from typing import Iterator, Sequence

import torch

from distillery.checkpoint import Preempted, on_stop_signals, restore_signals
from distillery.choices import TF32_MODES
from distillery.interrupted import running
from distillery.progress import setup_logging

log = logging.getLogger("distillery")


def resolve_device(name: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; an explicit CUDA request without one is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: '{name}' was requested but this machine has no visible CUDA device; set device: "
                         f"auto (each job uses a GPU where its machine has one) or cpu")
    return name


def _stop(signum, frame) -> None:
    raise Preempted(f"stopped by {signal.Signals(signum).name} outside a checkpointed loop; run the same snakemake "
                    f"command again to redo the job")


# The Snakemake process whose jobs this process's children are: "host:pid:start", set by the Snakefile.
WORKFLOW_PROCESS = "DISTILLERY_WORKFLOW_PROCESS"


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, …, start time at index 19), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def process_id(pid: int | None = None) -> str:
    """'host:pid:start' of a process (this one by default): its start time tells it from a later one given its PID."""
    pid = os.getpid() if pid is None else pid
    fields = _stat(pid)
    return f"{socket.gethostname()}:{pid}:{fields[19] if fields else ''}"


def announce_workflow_process() -> None:
    """Called where Snakemake reads the Snakefile: the jobs it starts inherit its identity and stop when it ends."""
    os.environ[WORKFLOW_PROCESS] = process_id()


def _alive(pid: int, start: str) -> bool:
    """Whether the process `pid` started at `start` still runs (not ended, not a zombie, not a later one)."""
    fields = _stat(pid)
    if fields is not None:
        return fields[0] != "Z" and (not start or fields[19] == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _ancestors() -> set[int]:
    """The PIDs above this process (its parent, theirs, …), as far as /proc shows them."""
    found, pid = set(), os.getppid()
    while pid > 1 and pid not in found:
        found.add(pid)
        fields = _stat(pid)
        if fields is None:
            return found
        pid = int(fields[1])
    return found


def _watched() -> tuple[int, str] | None:
    """The Snakemake process to watch: the one WORKFLOW_PROCESS names, if it is on this host, alive and above this
    process (an intermediate shell may stand between); else None (a job run by hand, or by another machine's)."""
    host, _, rest = os.environ.get(WORKFLOW_PROCESS, "").partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit() or not _alive(int(pid), start):
        return None
    if Path("/proc").is_dir() and int(pid) not in _ancestors():
        return None
    return int(pid), start


class Watchdog:
    """Stops this job as a stop signal would (SIGTERM to itself: a checkpoint, then Preempted) once the Snakemake
    process that started it has ended, e.g. killed with SIGKILL: a job never goes on as an orphan writing outputs
    that a rerun's job writes too. Polls every `interval` seconds in a daemon thread; does nothing outside a
    Snakemake job (see `_watched`)."""

    def __init__(self, interval: float = 1.0):
        self.target, self.interval = _watched(), interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True, name="snakemake-watchdog")

    def __enter__(self) -> "Watchdog":
        if self.target is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()

    def _watch(self) -> None:
        pid, start = self.target
        while not self.done.wait(self.interval):
            if not _alive(pid, start):
                log.warning("the Snakemake process that started this job (%d) has ended: stopping as on SIGTERM; "
                            "run `snakemake --unlock` with your options, then your command with --rerun-incomplete",
                            pid)
                os.kill(os.getpid(), signal.SIGTERM)
                return


def remove_outputs(outputs: Sequence[str | Path]) -> None:
    """Remove the outputs a stopped or failed job had written (while it still holds their running mark), so that
    no partial set of them is left: Snakemake does the same for a failed job but not for one it cancels on Ctrl-C,
    whose outputs it then calls incomplete, and the same command would refuse to run."""
    removed = []
    for path in map(Path, outputs):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(str(path))
    if removed:
        log.info("removed the outputs this job had written: %s", ", ".join(removed))


@contextlib.contextmanager
def job(log_path: str | Path | None, outputs: Sequence[str | Path], threads: int = 1, device: str = "cpu",
        tf32: str = "all") -> Iterator[str]:
    """One workflow job: holds `outputs[0]`'s running mark (waiting while another process writes it; see
    distillery.interrupted.running), logs to `log_path`, sizes the thread pool and yields the resolved device (its
    TF32 mode set). A stop signal outside a checkpointed loop stops the job (checkpoints take them over inside
    theirs), and so does the end of the Snakemake process that started it (Watchdog). Any error is logged with its
    traceback, so the job's log holds it as well as stderr (the SLURM output), and the job exits with status 1,
    leaving none of its outputs (see remove_outputs)."""
    setup_logging(None)  # stderr only until the output is this process's: the log may still be another's
    previous = on_stop_signals(_stop)
    guard = running(outputs[0]) if outputs else contextlib.nullcontext()
    try:
        with Watchdog(), guard as waited:
            setup_logging(str(log_path) if log_path else None)
            if waited:
                log.info("waited for %s, which was writing %s, to end", waited, outputs[0])
            torch.set_num_threads(max(1, threads))
            resolved = resolve_device(device)
            if set_tf32(resolved, tf32):
                log.info("device %s, TF32 mode %s (runtime.tf32)", resolved, tf32)
            try:
                yield resolved
            except (Exception, KeyboardInterrupt):
                remove_outputs(outputs)
                raise
    except (Exception, KeyboardInterrupt) as error:
        log.exception("job failed: %s: %s", type(error).__name__, error)
        raise SystemExit(1) from None
    finally:
        restore_signals(previous)


# runtime.tf32: which CUDA kernels may use TF32 (about 10 mantissa bits instead of 23, several times faster on
# Ampere and later). "all" (cuDNN convolutions and matmuls) is what the references ran with: torch 1.11's
# defaults, pinned by MTT, FTD, AST and APM, and ATT's NGC container (docs/fidelity.md); "conv" is PyTorch's
# default since 1.12 (convolutions only); "none" is strict float32 everywhere.


def set_tf32(device: str, mode: str) -> bool:
    """Set TF32 for cuDNN convolutions and CUDA matmuls from `mode` (TF32_MODES), whatever torch's defaults;
    a no-op returning False off CUDA (the CPU has no TF32), True where the flags were set."""
    if mode not in TF32_MODES:
        raise ValueError(f"runtime.tf32={mode!r} is not one of {', '.join(TF32_MODES)}")
    if not str(device).startswith("cuda"):
        return False
    torch.backends.cudnn.allow_tf32 = mode in ("conv", "all")
    torch.backends.cuda.matmul.allow_tf32 = mode == "all"
    return True


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-D CUDA batch in NHWC (channels-last) layout, which cuDNN's tensor-core convolutions prefer;
    anything else (CPU tensors, other ranks) is returned unchanged. Values are identical, only strides differ."""
    if x.is_cuda and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def to_device(t: torch.Tensor, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`t` on `device` (and `dtype`): from the CPU to CUDA through pinned memory, asynchronously, so the host
    does not wait for the GPU's queue (a pageable copy would); elsewhere a plain `.to`."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, dtype, non_blocking=True)
    return t.to(device, dtype)


def host_read(*values: torch.Tensor) -> list[float]:
    """The scalars a loop needs on the host, in one device-to-host copy (as float64, exact for float32 values and
    integers below 2^53). On CUDA this is where a loop waits for the GPU: every deliberate host read of the
    distillation and evaluation loops goes through here, and tests/test_cuda.py fails on any other."""
    return torch.stack([v.detach().reshape(()).to(torch.float64) for v in values]).tolist()
