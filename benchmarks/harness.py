"""What the benchmarks share: devices, a case grid with an optional `--compare` variant, interleaved timing,
peak memory, and the JSON record (printed and written to benchmarks/results/<name>_<device>.json).

Timing: the two configurations of a comparison are built in the same process and timed in alternating
order (A B B A ...), so machine load drifts hit both alike; the medians' ratio b/a is the reported number.

Memory:
- `saved_mib`: bytes of the distinct storages autograd saves for backward during one step (saved_tensors_hooks;
  each is held to the end of the step, so no address is reused and counted twice), less the problem's
  persistent tensors: the part of memory that grows with the unroll, nearly the same on every device.
- `peak_mib`: on CUDA, torch.cuda.max_memory_allocated during one step above the allocation before it
  (`peak_total_mib`: the whole allocation at that peak, the problem's persistent tensors included). On
  the CPU, the rise of the peak resident set over one step (Linux VmHWM, reset through /proc/self/clear_refs)
  above the resident set before it, in a fresh 'spawn' process that built the problem and ran one step first,
  with glibc's mmap threshold fixed at 64 KiB (MALLOC_MMAP_THRESHOLD_) so that freed tensors go back to the
  OS instead of being reused unseen. Not ru_maxrss: a child inherits its parent's high-water mark across
  fork and exec. Small allocations below the threshold can still be reused: a slight underestimate.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import multiprocessing as mp
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import yaml

RESULTS = Path(__file__).resolve().parent / "results"


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes; each script adds its grid axes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", choices=["all", "cpu", "cuda"], default="all",
                   help="all: the CPU, then CUDA when a GPU is visible")
    p.add_argument("--compare", nargs="+", default=[], metavar="KEY=VALUE",
                   help="a second configuration: every case with these settings changed (ratios b/a)")
    p.add_argument("--repeat", type=int, default=3, help="timed rounds per configuration (the median is kept)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable ratios on a shared machine)")
    p.add_argument("--no-rss", action="store_true", help="skip the CPU peak-RSS child processes")
    p.add_argument("--no-save", action="store_true", help="print the JSON only")
    p.add_argument("--name", help="results file benchmarks/results/<name>_<device>.json (default: the script's)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of the results file (default benchmarks/results)")
    return p


def devices(choice: str) -> list[str]:
    """The devices to run on; an explicit 'cuda' without a GPU is an error."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    if choice == "all":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [choice]


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's model name and core count."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({mp.cpu_count()} cores)"


def parse_overrides(pairs: list[str], case_type: type) -> dict[str, Any]:
    """KEY=VALUE strings -> {field: value} for the dataclass `case_type` (values parsed as YAML: 10, null, true)."""
    allowed = {f.name for f in dataclasses.fields(case_type)}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in allowed:
            raise SystemExit(f"--compare {pair!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(allowed))}")
        out[key] = yaml.safe_load(value)
    return out


def grid(case_type: type, axes: dict[str, list]) -> list:
    """Every combination of the axes' values, as `case_type` instances."""
    keys = list(axes)
    return [case_type(**dict(zip(keys, values))) for values in itertools.product(*axes.values())]


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> float:
    """Seconds of one call, the device drained before and after."""
    synchronize(device)
    tic = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - tic


def interleaved(fns: dict[str, Callable[[], Any]], device: str, repeat: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternating order (A B, then B A, ...)."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeat):
        for name in (names if r % 2 == 0 else names[::-1]):
            samples[name].append(timed(fns[name], device))
    return {name: statistics.median(s) for name, s in samples.items()}


def saved_mib(fn: Callable[[], Any], existing: Iterable[torch.Tensor] = ()) -> float:
    """MiB of the distinct storages autograd saves for backward while `fn` runs, except those of `existing`
    tensors (the problem's persistent state: parameters, data, expert trajectory), which cost nothing extra."""
    skip = {t.untyped_storage().data_ptr() for t in existing}
    storages: dict[int, torch.UntypedStorage] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            storages[storage.data_ptr()] = storage  # held, so its address cannot be reused within `fn`
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(s.nbytes() for s in storages.values()) / 2**20


def cuda_peaks(fn: Callable[[], Any]) -> dict[str, float]:
    """torch.cuda.max_memory_allocated during `fn`: above the allocation before it (`peak_mib`) and in all
    (`peak_total_mib`, the problem's persistent tensors included)."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return {"peak_mib": (peak - base) / 2**20, "peak_total_mib": peak / 2**20}


def memory_model(estimate: Callable[[], Any], without: Iterable[str] = ("train split", "test split")) -> dict:
    """The memory model's estimate (a distillery.budget.memory Estimate, where the checkout has the model) to set
    beside a measured peak: MiB in all and per part, without the parts the benchmark does not hold (the dataset's
    splits: its tensors are random ones of their own size)."""
    try:
        parts = {k: v / 2**20 for k, v in estimate().parts.items() if k not in set(without)}
    except Exception as error:  # no model in this checkout, or another interface than this was written against
        return {"estimate_mib": None, "why": f"{type(error).__name__}: {error}"}
    return {"estimate_mib": sum(parts.values()), "parts_mib": parts}


def _resident_mib() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # kB
    return fields


def _rss_child(build: Callable, case, threads: int) -> float | None:
    torch.set_num_threads(threads)
    step = build(case, "cpu")
    step()  # one-time allocations (oneDNN, caches) are not the step's
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current VmRSS
    except OSError:
        return None
    base = _resident_mib()["VmRSS"]
    step()
    return _resident_mib()["VmHWM"] - base


def cpu_peak_mib(build: Callable, case, threads: int) -> float | None:
    """Peak RSS rise of one `build(case, 'cpu')()` call in a fresh process (see the module notes); None where
    Linux's /proc/self/clear_refs is not available."""
    old = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # read by glibc when the child starts
    try:
        with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
            return pool.apply(_rss_child, (build, case, threads))
    finally:
        if old is None:
            del os.environ["MALLOC_MMAP_THRESHOLD_"]
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = old


def ratios(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """b/a for every numeric metric both have (a zero a gives no ratio)."""
    return {k: b[k] / a[k] for k in a if isinstance(a[k], (int, float)) and isinstance(b.get(k), (int, float))
            and not isinstance(a[k], bool) and a[k]}


def record(name: str, device: str, args: argparse.Namespace, rows: list[dict]) -> dict:
    """Print the run as one JSON line and (unless --no-save) write it to <--out>/<name>_<device>.json."""
    out = {"benchmark": name, "command": shlex.join(["python", *sys.argv]), "torch": torch.__version__,
           "device": device, "device_name": device_name(device), "threads": torch.get_num_threads(),
           "python": platform.python_version(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "repeat": args.repeat, "warmup": args.warmup, "compare": args.compare, "rows": rows}
    print(json.dumps(out), flush=True)  # one line per device: JSON Lines on stdout
    if not args.no_save:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{name}_{device}.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def run(name: str, args: argparse.Namespace, cases: list, measure: Callable[[list, str], list[dict]]) -> None:
    """For each device: `measure(pairs, device)` with pairs [(case a, case b or None)], then record the rows."""
    torch.set_num_threads(args.threads)
    overrides = parse_overrides(args.compare, type(cases[0]))
    pairs = [(case, dataclasses.replace(case, **overrides) if overrides else None) for case in cases]
    for device in devices(args.device):
        rows = measure(pairs, device)
        for row in rows:
            if "b" in row:
                row["ratio_b_over_a"] = ratios(row["a"], row["b"])
        record(args.name or name, device, args, rows)
