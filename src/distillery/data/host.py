"""Where a split lives while a job runs: whole on the device as float (small splits: the fast path), or on the host
as uint8 and moved a batch at a time (ImageNet-1K: 58.7 GB as float, 14.7 GB as uint8). One rule decides, for the jobs
(data.load_split) and the memory model (budget.memory) alike."""
from __future__ import annotations

import torch
from torch import Tensor

from distillery.runtime import to_device
from .transform import to_float

LOAD_BYTES_PER_PIXEL = 12  # loading a split whole: its float copy and the normalised one while the float one lives
DEVICE_SHARE = 0.25        # the share of the declared GPU that loading a split whole may take


def split_on_device(images: int, pixels: int, gpu_memory_gb: float | None) -> bool:
    """True when a split of `images` images of `pixels` values each is loaded whole to the device: loading it
    (12 bytes a pixel) takes at most a quarter of the GPU's `gpu_memory_gb` (runtime.gpu_memory_gb, GB = 2^30
    bytes), leaving the rest to the compute; None: always (no GPU size declared)."""
    return gpu_memory_gb is None or images * pixels * LOAD_BYTES_PER_PIXEL <= DEVICE_SHARE * gpu_memory_gb * 2**30


class HostSplit:
    """A split's uint8 images kept in host memory, indexed like the float tensor load_split puts on the device:
    `split[idx]` (a 1-D index tensor or a slice) gathers those rows on the host, copies them to `device` (pinned and
    asynchronous on CUDA) and normalises them there, to the same float values. `len`, `shape`, `dtype` and `device`
    are the device tensor's."""

    dtype = torch.float32

    def __init__(self, images_uint8: Tensor, meta: dict, zca: dict | None, device: str | torch.device) -> None:
        if images_uint8.dtype != torch.uint8 or images_uint8.device.type != "cpu":
            raise ValueError(f"HostSplit holds uint8 images on the CPU, got {images_uint8.dtype} on "
                             f"{images_uint8.device}")
        self.images, self.meta, self.device = images_uint8, meta, torch.device(device)
        self.shape = images_uint8.shape
        # the whitening matrix moves to the device once, not with every batch
        self.zca = None if zca is None else {key: value.to(self.device) if isinstance(value, Tensor) else value
                                             for key, value in zca.items()}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: Tensor | slice) -> Tensor:
        if isinstance(index, Tensor) and index.dim() == 1:
            rows = self.images[index.cpu()]  # a device index makes the host wait for the GPU: see index_device
        elif isinstance(index, slice):
            rows = self.images[index]
        else:
            raise TypeError(f"a HostSplit is indexed by a 1-D index tensor or a slice, got {type(index).__name__}")
        return to_float(to_device(rows, self.device), self.meta, self.zca)


def index_device(images: Tensor | HostSplit) -> torch.device:
    """Where a loop should keep the indices it draws into `images`: the CPU for a HostSplit (which gathers there, so
    the host need not wait for the GPU at every batch), else the images' own device."""
    return torch.device("cpu") if isinstance(images, HostSplit) else images.device
