"""How a parity case compares our numbers with the authors': per quantity the largest absolute difference and that
difference relative to the largest magnitude of the authors' value, against a stated tolerance; and, for runs that
only agree in distribution, both sides' mean ± std and whether they differ by more than their spread.

A tensor quantity passes when max|ours − theirs| ≤ atol + rtol · max|theirs| (a tolerance relative to the
tensor's scale, so entries near zero do not make a tiny rounding difference look large); an integer or exact
quantity only when equal. A case passes when every quantity does."""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Tolerance:
    """rtol relative to the largest magnitude of the authors' value, plus atol; (0, 0) means bit for bit."""

    rtol: float = 0.0
    atol: float = 0.0


EXACT = Tolerance()


@dataclass
class Quantity:
    """One compared value: its name, shape, largest absolute and relative difference, and the verdict."""

    name: str
    shape: list[int]
    max_abs: float
    max_rel: float
    scale: float
    passed: bool


def as_tensor(value: Any) -> Tensor:
    """A quantity as a CPU tensor: a tensor as it is, an integer as int64, any other number as float64 (never
    rounded to the default dtype on the way)."""
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, (bool, int, np.integer)):
        return torch.tensor(int(value))
    return torch.as_tensor(np.asarray(value, dtype=np.float64))


def compare(name: str, ours: Any, theirs: Any, tol: Tolerance) -> Quantity:
    """Compare one quantity (tensor, number or int); shapes must agree, values within `tol`."""
    a, b = as_tensor(ours), as_tensor(theirs)
    if a.shape != b.shape:
        return Quantity(name, list(b.shape), math.inf, math.inf, math.nan, False)
    if not (a.is_floating_point() or b.is_floating_point()):
        equal = bool(torch.equal(a, b))
        gap = float((a - b).abs().max()) if a.numel() else 0.0
        scale = float(b.abs().max()) if b.numel() else 0.0
        return Quantity(name, list(b.shape), gap, 0.0 if equal else math.inf, scale, equal)
    a, b = a.double(), b.double()
    gap = float((a - b).abs().max()) if a.numel() else 0.0
    scale = float(b.abs().max()) if b.numel() else 0.0
    rel = gap / scale if scale > 0 else (0.0 if gap == 0 else math.inf)
    finite = bool(torch.isfinite(a).all() and torch.isfinite(b).all())
    return Quantity(name, list(b.shape), gap, rel, scale, finite and gap <= tol.atol + tol.rtol * scale)


@dataclass
class CaseResult:
    """One parity case: its quantities (or statistics), tolerance, verdict, the patches its authors' run used,
    notes (what was forced, what differs by design) and seconds."""

    name: str
    passed: bool
    tolerance: Tolerance | None = None
    quantities: list[Quantity] = field(default_factory=list)
    statistics: dict | None = None
    patches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def max_abs(self) -> float:
        return max((q.max_abs for q in self.quantities), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((q.max_rel for q in self.quantities), default=0.0)

    def to_dict(self) -> dict:
        """JSON-ready: the largest differences over the quantities added, non-finite numbers as strings."""
        out = asdict(self)
        if self.quantities:
            out["max_abs"], out["max_rel"] = self.max_abs, self.max_rel
            out["failed"] = [q.name for q in self.quantities if not q.passed]
        return _finite(out)


def _finite(obj: Any) -> Any:
    """`obj` with inf and nan floats as "inf", "-inf", "nan" (JSON has no such numbers)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def compare_all(name: str, ours: dict[str, Any], theirs: dict[str, Any], tol: Tolerance,
                exact: Sequence[str] = ()) -> CaseResult:
    """A case from two dicts of the same quantities: `exact` names are compared bit for bit, the others to `tol`.
    A quantity missing on either side fails, named."""
    quantities = []
    for key in list(theirs) + [k for k in ours if k not in theirs]:
        if key not in ours or key not in theirs:
            quantities.append(Quantity(key, [], math.inf, math.inf, math.nan, False))
            continue
        quantities.append(compare(key, ours[key], theirs[key], EXACT if key in exact else tol))
    return CaseResult(name, all(q.passed for q in quantities), tol, quantities)


def spread_test(ours: Sequence[float], theirs: Sequence[float]) -> dict:
    """Both sides' mean ± std (sample std) and whether the means differ by more than their spread: passed when
    |mean_ours − mean_theirs| ≤ √(std_ours² + std_theirs²), the std of the difference of one run from each side."""
    if len(ours) < 2 or len(theirs) < 2:
        raise ValueError(f"a spread needs at least 2 runs a side (got {len(ours)} and {len(theirs)})")
    mo, mt = statistics.fmean(ours), statistics.fmean(theirs)
    so, st = statistics.stdev(ours), statistics.stdev(theirs)
    spread = math.hypot(so, st)
    return {"ours": {"mean": mo, "std": so, "values": list(ours)},
            "theirs": {"mean": mt, "std": st, "values": list(theirs)},
            "difference": mo - mt, "spread": spread, "differ": abs(mo - mt) > spread}
