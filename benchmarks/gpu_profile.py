"""Where the device's time goes: one MTT iteration and an expert's training steps under torch.profiler, and the
same fixed work eager and replayed as a CUDA graph.

- `busy_share`: the union of the device's activity intervals (kernels, copies) over the unprofiled wall time of the
  same work; 1 − busy_share is time the device waited, for kernel launches or the host. `launches`: kernel launch
  calls per iteration (per step for experts). `top`: the ten ops with the most device time (CPU time on the CPU).
- CUDA graphs: the floor's N+1 forward/backward passes of one fixed batch, and the N-step unroll of the whole
  synthetic set with the matching loss and its gradient to the images and lr (no DSA, no minibatch draw: a graph
  replays fixed work), each timed eager and as one graph replay; `eager_over_graph` is what capturing saves (on
  the CPU: the eager time only).

    PYTHONPATH=src python benchmarks/gpu_profile.py --device cuda --out results.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

import harness
from distill import Case, Problem
from distillery.data import get_spec
from distillery.distill.matching import matching_loss
from distillery.distill.memory import step_gradient
from distillery.experts import get_recipe, train_expert, train_experts_batched
from distillery.runtime import set_tf32
from distillery.seeds import generator


def seconds(fn: Callable[[], object], device: str, repeat: int) -> float:
    """Median seconds of `fn` (one warm-up call first)."""
    fn()
    return statistics.median(harness.timed(fn, device) for _ in range(repeat))


def union_us(intervals: list[tuple[float, float]]) -> float:
    """Microseconds covered by at least one of the intervals."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def profile(fn: Callable[[], object], device: str, calls: int, repeat: int) -> dict:
    """Device busy share, launches per call and the top ops of `calls` calls of `fn` under torch.profiler."""
    wall = seconds(fn, device, repeat)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        harness.synchronize(device)
    events = prof.events()
    on_device = [e for e in events if str(getattr(e, "device_type", "")).endswith("CUDA")]
    busy = union_us([(e.time_range.start, e.time_range.end) for e in on_device]) / 1e6 / calls
    launches = sum(1 for e in events if e.name.startswith(("cudaLaunch", "cuLaunch")))
    key = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"

    def own(avg) -> float:  # older torch names the device time self_cuda_time_total
        value = getattr(avg, key, None)
        return getattr(avg, "self_cuda_time_total", 0.0) if value is None else value

    top = sorted(prof.key_averages(), key=own, reverse=True)[:10]
    return {"seconds": wall, "device_busy_seconds": busy if device == "cuda" else None,
            "busy_share": busy / wall if device == "cuda" else None, "launches": launches / calls,
            "top": [{"name": a.key, "self_ms": own(a) / calls / 1e3, "count": a.count / calls} for a in top]}


def graphed(work: Callable[[], object], device: str, repeat: int) -> dict:
    """`work` (device ops on fixed tensors only) timed eager and, on CUDA, as a captured CUDA graph."""
    eager = seconds(work, device, repeat)
    if device != "cuda":
        return {"eager_seconds": eager, "graph_seconds": None, "eager_over_graph": None}
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
        for _ in range(3):
            work()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        work()
    replay = seconds(graph.replay, "cuda", repeat)
    return {"eager_seconds": eager, "graph_seconds": replay, "eager_over_graph": eager / replay}


def graph_cases(problem: Problem, repeat: int) -> dict:
    """The floor and the unroll of `problem` (its student, images and a trajectory row) eager vs graphed."""
    student, cfg, device = problem.student, problem.cfg, problem.device
    theta = problem.trajectory[0].to(device).requires_grad_(True)
    target = problem.trajectory[cfg.expert_epochs].to(device)
    x, y = problem.images.detach()[:problem.batch], problem.labels[:problem.batch]
    images = problem.images.detach().clone().requires_grad_(True)
    lr = problem.lr.detach().clone().requires_grad_(True)

    def floor() -> None:
        for _ in range(cfg.syn_steps + 1):
            torch.autograd.grad(F.cross_entropy(student(theta, x), y), theta)

    def unroll() -> None:
        step = theta
        for _ in range(cfg.syn_steps):
            step = step - lr * step_gradient(student, step, images, problem.labels, 1.0, None, create_graph=True)
        torch.autograd.grad(matching_loss(step, theta, target), (images, lr))

    out = {}
    for name, work in (("floor", floor), ("unroll", unroll)):
        try:
            out[name] = graphed(work, device, repeat)
        except Exception as error:  # e.g. an op that cannot be captured: recorded, the other case still runs
            out[name] = {"error": f"{type(error).__name__}: {error}"}
    return out


def expert_steps(shape: str, model: str, batch: int, steps: int, experts: int, device: str) -> Callable[[], object]:
    """`steps` minibatches of plain-SGD expert training on random tensors of `shape` (one epoch), K experts."""
    spec = get_spec(shape)
    images = torch.randn(batch * steps, spec.channels, spec.size, spec.size, generator=generator(0, "bench"))
    images = images.to(device)
    labels = (torch.arange(len(images)) % spec.num_classes).to(device)
    recipe = get_recipe("sgd", epochs=1, batch=batch)
    if experts == 1:
        return lambda: train_expert(images, labels, model, spec.num_classes, recipe, 0)
    return lambda: train_experts_batched(images, labels, model, spec.num_classes, recipe, list(range(experts)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--shape", default="cifar10", help="a dataset name: its channels, size and classes")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--syn-steps", type=int, default=30)
    p.add_argument("--model", default="ConvNet")
    p.add_argument("--expert-batch", type=int, default=256)
    p.add_argument("--expert-steps", type=int, default=20)
    p.add_argument("--batched", type=int, default=8, help="K experts of the batched case")
    p.add_argument("--calls", type=int, default=3, help="profiled calls per case")
    p.add_argument("--repeat", type=int, default=5, help="timed calls per case (the median is kept)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = p.parse_args()
    harness.devices(args.device)
    torch.set_num_threads(args.threads)
    set_tf32(args.device, "none")
    problem = Problem(Case(shape=args.shape, ipc=args.ipc, syn_steps=args.syn_steps, model=args.model), args.device)
    cases = {"mtt_iteration": profile(problem.step, args.device, args.calls, args.repeat),
             "mtt_floor": profile(problem.floor, args.device, args.calls, args.repeat)}
    for k in (1, args.batched):
        work = expert_steps(args.shape, args.model, args.expert_batch, args.expert_steps, k, args.device)
        result = profile(work, args.device, 1, max(1, args.repeat // 2))
        result["launches"] /= args.expert_steps  # per minibatch step
        cases[f"experts_x{k}"] = result
    graphs = graph_cases(problem, args.repeat)
    out = {"benchmark": "gpu_profile", "command": " ".join(["python", *sys.argv]), "torch": torch.__version__,
           "device": args.device, "device_name": harness.device_name(args.device), "tf32": "none",
           "case": {"shape": args.shape, "ipc": args.ipc, "syn_steps": args.syn_steps, "model": args.model,
                    "num_params": problem.student.num_params, "images": len(problem.images),
                    "expert_batch": args.expert_batch, "expert_steps": args.expert_steps, "batched": args.batched},
           "cases": cases, "cuda_graphs": graphs, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for name, case in cases.items():
        share = "" if case["busy_share"] is None else f", device busy {100 * case['busy_share']:.0f}%"
        print(f"{name}: {case['seconds'] * 1e3:.1f} ms, {case['launches']:.0f} launches{share}", file=sys.stderr)
    print(json.dumps(graphs), file=sys.stderr)


if __name__ == "__main__":
    main()
