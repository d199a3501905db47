"""What every workflow job runs inside: its log file (its own error included), its thread pool, its device, a
clean stop on SIGTERM, and the mark that it has not finished yet (distillery.interrupted)."""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path
from typing import Iterator, Sequence

import torch

from distillery.checkpoint import Preempted
from distillery.choices import TF32_MODES
from distillery.interrupted import clear_running, mark_running
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
    raise Preempted("stopped by SIGTERM outside a checkpointed loop; run the same snakemake command again to redo "
                    "the job")


@contextlib.contextmanager
def job(log_path: str | Path | None, outputs: Sequence[str | Path], threads: int = 1, device: str = "cpu",
        tf32: str = "all") -> Iterator[str]:
    """One workflow job: logs to `log_path`, marks `outputs[0]` unfinished until the body succeeds, sizes the thread
    pool and yields the resolved device (its TF32 mode set). SIGTERM outside a checkpointed loop stops the job
    (checkpoints take SIGTERM over inside theirs). Any error is logged with its traceback, so the job's log holds it
    as well as stderr (the SLURM output), and the job exits with status 1."""
    setup_logging(str(log_path) if log_path else None)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if main else None
    try:
        if outputs:
            mark_running(outputs[0])
        torch.set_num_threads(max(1, threads))
        resolved = resolve_device(device)
        if set_tf32(resolved, tf32):
            log.info("device %s, TF32 mode %s (runtime.tf32)", resolved, tf32)
        yield resolved
    except (Exception, KeyboardInterrupt) as error:
        log.exception("job failed: %s: %s", type(error).__name__, error)
        raise SystemExit(1) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if outputs:
        clear_running(outputs[0])


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
