"""What every parity case gets (the checkout, the shared data, the sizes, a scratch folder) and what a method
registers (its reference, sizes and cases); plus the run settings both sides share (default dtype, working folder)."""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from distillery.parity.compare import CaseResult
from distillery.parity.patches import Patch, Patches
from distillery.parity.reference import Reference
from distillery.parity.workspace import Workspace


@dataclass(frozen=True)
class SharedSizes:
    """The sizes every method's cases have (each method's Sizes adds its own): the network, the shared Fashion-MNIST
    subset, the seed."""

    model: str = "ConvNetW32"        # their get_network builds it at 28 px (im_size read as 32 with padding 3)
    train_per_class: int = 100
    test_per_class: int = 100
    seed: int = 0


@dataclass
class Context:
    """One harness run: the authors' checkout, the shared workspace, the method's sizes, a scratch folder, and
    every patch any case applied (name -> Patch), for the report."""

    reference: Path
    ws: Workspace
    sizes: Any
    scratch: Path
    patches: dict[str, Patch] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)  # inputs several cases reuse (an exported buffer)

    def folder(self, name: str) -> Path:
        """A new empty folder in the scratch space."""
        path = self.scratch / name
        path.mkdir(parents=True, exist_ok=False)
        return path

    def fresh(self, prefix: str) -> Path:
        """A new empty folder prefix-<n> in the scratch space, for one run of their script."""
        n = sum(1 for _ in self.scratch.glob(f"{prefix}-*"))
        return self.folder(f"{prefix}-{n}")

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        """`make()` the first time `key` is asked for, then the same value."""
        if key not in self.shared:
            self.shared[key] = make()
        return self.shared[key]


Case = Callable[[Context], CaseResult]


@dataclass(frozen=True)
class Method:
    """A method's parity: its authors' checkout, its default sizes (a dataclass; train_per_class and
    test_per_class size the shared data) and its cases, in the order they run."""

    reference: Reference
    sizes: Any
    cases: dict[str, Case]


def finish(result: CaseResult, patches: Patches, ctx: Context, started: float) -> CaseResult:
    """Stamp a case's result with the patches its authors' run applied (also kept for the report) and its time."""
    for patch in patches.applied:
        ctx.patches.setdefault(patch.name, patch)
    result.patches = [p.name for p in patches.applied]
    result.seconds = time.perf_counter() - started
    return result


def with_settings(sizes: Any, settings: dict[str, str]) -> Any:
    """`sizes` with `settings` (name -> text from the command line) converted to each field's type."""
    types = {f.name: type(getattr(sizes, f.name)) for f in fields(sizes)}
    unknown = sorted(set(settings) - set(types))
    if unknown:
        raise ValueError(f"unknown size(s) {', '.join(unknown)}; choose from: {', '.join(types)}")
    converted = {}
    for name, text in settings.items():
        kind = types[name]
        try:
            converted[name] = text.lower() in ("1", "true", "yes") if kind is bool else kind(text)
        except ValueError:
            raise ValueError(f"size {name}={text!r} is not a {kind.__name__}") from None
    return replace(sizes, **converted)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch's default dtype for the block (both sides make their learned lr and scalars in it)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[None]:
    """Run in `path` (their scripts write logged_files/ and the like to the working directory)."""
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)
