"""What every workflow job does first: log to its log file, size its thread pool, pick its device."""
from __future__ import annotations

import torch

from distillery.progress import setup_logging


def resolve_device(name: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; an explicit CUDA request without one is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' was requested but no CUDA device is visible; set device: auto or cpu")
    return name


def job_setup(log_path: str | None, threads: int, device: str = "auto") -> str:
    setup_logging(log_path)
    torch.set_num_threads(max(1, threads))
    return resolve_device(device)


def cuda_speedups(device: str, tf32: bool = True) -> bool:
    """Let matmuls and cuDNN convolutions use TF32 on Ampere+ GPUs (about 10 mantissa bits instead of 23,
    several times faster) and let cuDNN pick its fastest kernels for fixed shapes. Optional: results change
    in the last bits, so runs that must match a CPU reference leave it off. No-op (returns False) on the CPU;
    returns whether the CUDA settings were applied. `tf32=False` turns TF32 and cuDNN autotuning off (strict
    float32 everywhere), the 'off' side of a benchmark comparison."""
    if not str(device).startswith("cuda"):
        return False
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = tf32
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
