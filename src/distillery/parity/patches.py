"""Run-time patches: every change the harness makes to the authors' code, so it runs on this machine and sees the
inputs ours sees, is one named `Patch`, applied inside a `Patches` block and undone when the block ends. The block's
`applied` list is what the report prints. Nothing here knows a method; the MTT lineage's patches are in lineage.py.

The patches replace attributes of the authors' modules (a function such as `get_dataset`, or the `torch` their
module sees, through `proxy`) or a global such as `torch.Tensor.cuda`; the authors' files are never touched."""
from __future__ import annotations

import math
import types
from dataclasses import dataclass
from typing import Any, Callable, Iterator, MutableMapping

import torch
from torch import Tensor

_MISSING = object()


@dataclass(frozen=True)
class Patch:
    """One change to the authors' code: a short name and what it changes, in a line."""

    name: str
    what: str


class Patches:
    """A block of named attribute and item replacements; leaving it restores every original in reverse order."""

    def __init__(self) -> None:
        self.applied: list[Patch] = []
        self._undo: list[Callable[[], None]] = []

    def note(self, name: str, what: str) -> None:
        """Record a patch (once per name) without replacing anything, e.g. one applied through an argument."""
        if all(p.name != name for p in self.applied):
            self.applied.append(Patch(name, what))

    def absorb(self, other: "Patches") -> None:
        """Record the patches another (finished) block applied, e.g. each of a case's runs of their code."""
        for patch in other.applied:
            self.note(patch.name, patch.what)

    def set(self, owner: Any, attr: str, value: Any, name: str | None, what: str = "") -> None:
        """owner.attr = value until the block ends, recorded as patch `name` (None: recorded by the caller)."""
        old = owner.__dict__.get(attr, _MISSING) if isinstance(owner, (type, types.ModuleType)) \
            else getattr(owner, attr, _MISSING)
        self._undo.append(lambda: delattr(owner, attr) if old is _MISSING else setattr(owner, attr, old))
        setattr(owner, attr, value)
        if name is not None:
            self.note(name, what)

    def set_item(self, mapping: MutableMapping, key: Any, value: Any, name: str, what: str) -> None:
        """mapping[key] = value until the block ends (e.g. a stub in sys.modules)."""
        old = mapping.get(key, _MISSING)
        self._undo.append(lambda: mapping.pop(key, None) if old is _MISSING else mapping.__setitem__(key, old))
        mapping[key] = value
        self.note(name, what)

    def __enter__(self) -> "Patches":
        return self

    def __exit__(self, *exc: object) -> None:
        while self._undo:
            self._undo.pop()()


class ModuleProxy(types.ModuleType):
    """A stand-in for a module: the given attributes replaced, every other attribute read from the real module."""

    def __init__(self, real: types.ModuleType, overrides: dict[str, Any]):
        super().__init__(real.__name__)
        self.__dict__["_real"] = real
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_real"], name)


def proxy(real: types.ModuleType, overrides: dict[str, Any]) -> ModuleProxy:
    """`real` with `overrides` in place; a dotted key ("optim.SGD", "cuda.is_available") replaces an attribute of a
    submodule, which is proxied in turn, so `torch.optim.SGD` in the authors' module is ours and `torch.optim.Adam`
    is still torch's."""
    direct = {k: v for k, v in overrides.items() if "." not in k}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        if "." in key:
            head, rest = key.split(".", 1)
            nested.setdefault(head, {})[rest] = value
    for head, inner in nested.items():
        direct[head] = proxy(getattr(real, head), inner)
    return ModuleProxy(real, direct)


def _shape(size: tuple) -> tuple[int, ...]:
    """torch's *size convention: rand(2, 3), rand((2, 3)) and rand([2, 3]) are the same shape."""
    if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
        size = tuple(size[0])
    return tuple(int(s) for s in size)


def rand_from(g: torch.Generator) -> Callable[..., Tensor]:
    """torch.rand answered from `g`: the numbers drawn flat in the default dtype, as our code draws them
    (torch.rand(n, generator=g)), then shaped, cast and moved as the caller asked."""
    def rand(*size: Any, dtype: torch.dtype | None = None, device: Any = None, **_: Any) -> Tensor:
        shape = _shape(size)
        return torch.rand(math.prod(shape), generator=g).view(shape).to(device=device, dtype=dtype)
    return rand


def randint_from(g: torch.Generator) -> Callable[..., Tensor]:
    """torch.randint answered from `g` (randint(high, size) or randint(low, high, size), size as an argument or
    keyword), the numbers drawn flat as our code draws them, then shaped and moved."""
    def randint(*args: Any, size: Any = None, dtype: torch.dtype | None = None, device: Any = None,
                **_: Any) -> Tensor:
        if size is None:
            *args, size = args
        low, high = (0, args[0]) if len(args) == 1 else args
        shape = _shape((size,))
        drawn = torch.randint(int(low), int(high), (math.prod(shape),), generator=g).view(shape)
        return drawn.to(device=device, dtype=dtype)
    return randint


def randperm_from(g: torch.Generator) -> Callable[..., Tensor]:
    """torch.randperm answered from `g`, as our code draws a permutation."""
    def randperm(n: int, *_: Any, device: Any = None, **__: Any) -> Tensor:
        return torch.randperm(int(n), generator=g).to(device=device)
    return randperm


def given(values: Iterator[Any], what: str) -> Callable[..., Any]:
    """A random call of theirs that returns the next of `values` (state the harness injects); more calls than
    values is an error naming `what`."""
    def draw(*_: Any, **__: Any) -> Any:
        try:
            return next(values)
        except StopIteration:
            raise RuntimeError(f"the authors' code drew {what} more often than the harness injected it") from None
    return draw


def recording_sgd(records: list[dict]) -> type:
    """torch.optim.SGD that appends, at every step, each parameter's gradient before and value after the step."""
    class RecordingSGD(torch.optim.SGD):
        def step(self, closure: Callable | None = None) -> Any:  # type: ignore[override]
            params = [p for group in self.param_groups for p in group["params"]]
            grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
            out = super().step(closure)
            records.append({"optimizer": id(self), "grads": grads, "values": [p.detach().clone() for p in params]})
            return out
    return RecordingSGD


class Clock:
    """A stand-in for the `time` module whose time() counts up from `seed` in steps of 1 ms, one per call: code
    that reseeds from int(time·1000) gets a new seed per call, as from a real clock, but the same ones every run."""

    def __init__(self, seed: int):
        self.ticks = seed * 1000

    def __call__(self) -> float:
        self.ticks += 1
        return (self.ticks + 0.5) / 1000  # the half tick: int(t·1000) is the count despite rounding
