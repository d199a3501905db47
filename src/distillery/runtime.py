"""What every workflow job does first: log to its log file, size its thread pool, pick its device."""
from __future__ import annotations

import logging

import torch

from distillery.progress import setup_logging

log = logging.getLogger("distillery")


def resolve_device(name: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; an explicit CUDA request without one is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' was requested but no CUDA device is visible; set device: auto or cpu")
    return name


# runtime.tf32: which CUDA kernels may use TF32 (about 10 mantissa bits instead of 23, several times faster on
# Ampere and later). "all" (cuDNN convolutions and matmuls) is what the references ran with: torch 1.11's
# defaults, pinned by MTT, FTD, AST and APM, and ATT's NGC container (docs/fidelity.md); "conv" is PyTorch's
# default since 1.12 (convolutions only); "none" is strict float32 everywhere.
TF32_MODES = ("all", "conv", "none")


def job_setup(log_path: str | None, threads: int, device: str = "auto", tf32: str = "all") -> str:
    """Log to the job's log file, size the thread pool, resolve the device and set its TF32 mode explicitly."""
    setup_logging(log_path)
    torch.set_num_threads(max(1, threads))
    resolved = resolve_device(device)
    if set_tf32(resolved, tf32):
        log.info("device %s, TF32 mode %s (runtime.tf32)", resolved, tf32)
    return resolved


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
