"""Explicit seeds per role (init, expert sampling, augmentation, evaluation): no global RNG state is shared."""
from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator

import torch


def role_seed(seed: int, role: str) -> int:
    """A 63-bit seed derived from (seed, role), so roles never share a random stream."""
    digest = hashlib.sha256(f"{seed}:{role}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, role: str) -> torch.Generator:
    """A CPU generator for one role; random draws are made on the CPU and moved to the device."""
    return torch.Generator().manual_seed(role_seed(seed, role))


@contextlib.contextmanager
def seeded(seed: int, role: str) -> Iterator[None]:
    """Run a block (e.g. model construction) under a seeded global CPU RNG, restoring the old state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(role_seed(seed, role))
        yield


SEED_ROLES = ("init", "init-expert", "experts", "start-epoch", "batches", "dsa", "perturb", "apm-select")


def role_seeds(seed: int, roles: tuple[str, ...]) -> dict[str, int]:
    """The derived seed of each role, for an artifact's metadata."""
    return {role: role_seed(seed, role) for role in roles}
