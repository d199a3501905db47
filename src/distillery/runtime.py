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
