"""The GPU check's record keeper (benchmarks/gpu_check.sh): the machine's description, one line per finished step in
OUT/steps.jsonl (kept after every step, so a run cut short still leaves its steps), and at the end
OUT/gpu-check_<device>.json with every step and a summary of the figures. Only `env` imports torch.

    python benchmarks/gpu_collect.py env FILE DEVICE
    python benchmarks/gpu_collect.py step OUT NAME RC START END LIMIT PAYLOAD LOG -- COMMAND...
    python benchmarks/gpu_collect.py finish OUT DEVICE
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

TIMED_OUT = (124, 137)  # timeout(1): the limit was reached (137: killed after the grace period)


def importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def env(path: Path, device: str) -> None:
    """What ran the check: Python, torch, the device and its driver, the packages the steps could import."""
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
            "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count(),
            "packages": {name: importable(name)
                         for name in ("pytest", "numpy", "yaml", "PIL", "sklearn", "tqdm", "kornia", "snakemake")}}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gib=props.total_memory / 2**30, multiprocessors=props.multi_processor_count,
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    else:
        info["device_name"] = platform.processor() or platform.machine()
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        info["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip()
    path.write_text(json.dumps(info, indent=1) + "\n")
    if device == "cuda" and not info["cuda_available"]:
        raise SystemExit("no CUDA device is visible: run with --cpu to rehearse on the CPU")


def junit(path: Path) -> dict:
    """pytest's junit XML as counts and the failed tests with the start of their messages."""
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failed = []
    for case in suite.iter("testcase"):
        for problem in list(case.findall("failure")) + list(case.findall("error")):
            failed.append({"test": f"{case.get('classname')}::{case.get('name')}",
                           "message": (problem.get("message") or problem.text or "")[:2000]})
    return {**counts, "failed": failed}


def step(out: Path, name: str, rc: int, seconds: float, limit: float, payload: Path, log: Path,
         command: list[str]) -> None:
    """Append one finished step to OUT/steps.jsonl: its status, seconds, command, results and (if it failed) the
    end of its log."""
    status = "ok" if rc == 0 else "timeout" if rc in TIMED_OUT else "failed"
    record = {"name": name, "status": status, "rc": rc, "seconds": round(seconds, 2), "limit_s": limit,
              "command": " ".join(command), "result": None}
    if payload.is_file():
        try:
            record["result"] = junit(payload) if payload.suffix == ".xml" else json.loads(payload.read_text())
        except (ET.ParseError, json.JSONDecodeError) as error:
            record["result"] = {"unreadable": str(error)}
    if status != "ok" and log.is_file():
        record["log_tail"] = log.read_text(errors="replace").splitlines()[-30:]
    with open(out / "steps.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"{name}: {status} in {seconds:.1f} s (limit {limit:g} s)", file=sys.stderr)


def _mib(value) -> str:
    return "-" if value is None else f"{value:.0f} MiB"


def _model(metrics: dict) -> str:
    """The memory model's estimate beside a measured peak."""
    return _mib((metrics.get("memory_model") or {}).get("estimate_mib"))


def summary(steps: list[dict]) -> list[str]:
    """One line per figure the README quotes, from the steps' results."""
    lines = []
    for s in steps:
        try:
            lines += _lines(s)
        except (KeyError, TypeError, ValueError) as error:  # a result of another shape: the step is still kept
            lines.append(f"{s['name']}: no summary ({type(error).__name__}: {error})")
    return lines


def _lines(s: dict) -> list[str]:
    lines, result = [], s.get("result") or {}
    if s["status"] != "ok":
        lines.append(f"{s['name']}: {s['status']}")
    elif s["name"] == "tests":
        lines.append(f"tests: {result['passed']} passed, {result['failures'] + result['errors']} failed, "
                     f"{result['skipped']} skipped")
    elif s["name"].startswith("distill"):
        for row in result["rows"]:
            a, b, case = row["a"], row.get("b", {}), row["case"]
            lines.append(f"{s['name']} ({case['shape']}, {case['model']}, IPC {case['ipc']}, N {case['syn_steps']}, "
                         f"batch {a['batch']}, {case['memory']}): {a['seconds_per_iteration']:.4f} s/it "
                         f"(x{a['iteration_over_floor']:.2f} floor), TF32 {b.get('seconds_per_iteration', 0):.4f} "
                         f"s/it; peak {_mib(a.get('peak_mib'))} above the problem, {_mib(a.get('peak_total_mib'))} "
                         f"in all, memory model {_model(a)}")
    elif s["name"] == "experts":
        for row in result["rows"]:
            a, b, case = row["a"], row["b"], row["case"]
            lines.append(f"experts ({case['shape']}, {case['model']}, batch {case['batch']}, TF32 {case['tf32']}), "
                         f"K {case['experts']}: {a['images_per_second']:.0f} images/s one after another, "
                         f"{b['images_per_second']:.0f} batched (x{row['ratio_b_over_a']['images_per_second']:.2f}); "
                         f"peak {_mib(b.get('peak_mib'))} batched (memory model {_model(b)})")
    elif s["name"] == "evaluate":
        for row in result["rows"]:
            a, b, case = row["a"], row["b"], row["case"]
            lines.append(f"evaluate ({case['shape']}, {case['arch']}, IPC {case['ipc']}): {a['epochs_per_second']:.1f} "
                         f"epochs/s, TF32 {b['epochs_per_second']:.1f}; peak {_mib(a.get('peak_mib'))} "
                         f"(memory model {_model(a)})")
    elif s["name"] == "profile":
        for name, case in result["cases"].items():
            busy = "" if case["busy_share"] is None else f", device busy {100 * case['busy_share']:.0f}%"
            lines.append(f"profile {name}: {1e3 * case['seconds']:.2f} ms, {case['launches']:.0f} launches{busy}")
        for name, graph in result["cuda_graphs"].items():
            ratio = graph.get("eager_over_graph")
            lines.append(f"CUDA graph {name}: " + (graph["error"] if "error" in graph else
                                                   "not on CUDA" if ratio is None else f"eager / graph x{ratio:.2f}"))
    return lines


def finish(out: Path, device: str) -> int:
    """Write OUT/gpu-check_<device>.json from steps.jsonl; 0 if every step passed."""
    lines = (out / "steps.jsonl").read_text().splitlines() if (out / "steps.jsonl").is_file() else []
    steps = [json.loads(line) for line in lines]
    machine = next((s["result"] for s in steps if s["name"] == "env" and s["result"]), {})
    report = {"benchmark": "gpu_check", "device": device, "device_name": machine.get("device_name"),
              "torch": machine.get("torch"), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "ok": bool(steps) and all(s["status"] == "ok" for s in steps),
              "seconds": round(sum(s["seconds"] for s in steps), 1), "summary": summary(steps), "steps": steps}
    (out / f"gpu-check_{device}.json").write_text(json.dumps(report, indent=1) + "\n")
    print("\n".join(report["summary"]), file=sys.stderr)
    return 0 if report["ok"] else 1


def main(argv: list[str]) -> int:
    command, *rest = argv
    if command == "env":
        env(Path(rest[0]), rest[1])
    elif command == "step":
        split = rest.index("--")
        out, name, rc, start, end, limit, payload, log = rest[:split]
        step(Path(out), name, int(rc), float(end) - float(start), float(limit), Path(payload), Path(log),
             rest[split + 1:])
    elif command == "finish":
        return finish(Path(rest[0]), rest[1])
    else:
        raise SystemExit(f"unknown command {command!r}: env, step or finish")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
