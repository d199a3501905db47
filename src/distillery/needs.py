"""What a distillation needs of its inputs, each check with its one message: used by the planner before any job
(from the dataset registry and the expert recipe) and by the jobs themselves (from the data and files they read)."""
from __future__ import annotations


def expert_epochs_needed(max_start_epoch: int, expert_epochs: int) -> int:
    """The last epoch an expert must reach: the last start (max_start_epoch − 1) plus M = expert_epochs."""
    return max_start_epoch - 1 + expert_epochs


def check_expert_epochs(epochs: int, needed: int, what: str) -> None:
    """`what` (an expert file, trajectory or set) of `epochs` epochs must reach epoch `needed`."""
    if epochs < needed:
        raise ValueError(f"{what} has {epochs} epochs but this run needs {needed} (max_start_epoch - 1 + "
                         f"expert_epochs); train longer experts (experts.overrides epochs) or lower max_start_epoch")


def check_class_size(ipc: int, images: int, which: str, where: str = "") -> None:
    """A class (`which`, e.g. "class 3" or "the smallest class") of `images` training images must hold `ipc`
    images; `where` prefixes the message with the cell."""
    if images < ipc:
        raise ValueError(f"{where}IPC {ipc} is larger than {which}'s {images} training images; lower the IPC to at "
                         f"most {images}")
