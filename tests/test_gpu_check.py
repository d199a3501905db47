"""The GPU check (benchmarks/gpu_check.sh) rehearsed on the CPU at tiny sizes, so it cannot rot before a GPU comes:
every step runs, is time-boxed and recorded, without kornia or Snakemake, and what comes back fits the device tool."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_collect  # noqa: E402

STEPS = ["env", "tests", "distill_cifar10", "distill_tiny", "distill_128", "experts", "evaluate", "profile"]


def test_the_cpu_rehearsal_runs_and_records_every_step(tmp_path):
    out = tmp_path / "check"
    result = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), str(out), "--cpu", "--quick", "--python",
                             sys.executable], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((out / "gpu-check_cpu.json").read_text())
    assert report["ok"] and report["device"] == "cpu"
    assert [s["name"] for s in report["steps"]] == STEPS
    for s in report["steps"]:
        assert s["status"] == "ok" and 0 < s["seconds"] < s["limit_s"] and s["result"], s["name"]
    assert sum(s["limit_s"] for s in report["steps"]) <= 8 * 60  # under 8 minutes on the GPU, even at every limit
    steps = {s["name"]: s["result"] for s in report["steps"]}
    assert not steps["env"]["packages"]["kornia"] and not steps["env"]["packages"]["snakemake"]  # hidden, as there
    assert steps["tests"]["passed"] >= 20 and steps["tests"]["failures"] == steps["tests"]["errors"] == 0
    assert [row["case"]["memory"] for row in steps["distill_tiny"]["rows"]] == ["recompute"]
    compared = ("distill_cifar10", "distill_tiny", "distill_128", "experts", "evaluate")
    assert all("ratio_b_over_a" in row for name in compared for row in steps[name]["rows"])
    assert set(steps["profile"]["cases"]) == {"mtt_iteration", "mtt_floor", "experts_x1", "experts_x2"}
    assert len(report["summary"]) >= len(STEPS)
    # the device tool brings back at most 8 files, none deeper than two folders
    assert sorted(p.name for p in out.iterdir()) == ["check.log", "gpu-check_cpu.json", "steps.jsonl", "tests.xml"]
    assert len((out / "steps.jsonl").read_text().splitlines()) == len(STEPS)


def test_a_step_past_its_limit_is_recorded_as_timed_out_with_its_log(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    gpu_collect.step(tmp_path, "profile", 124, 60.4, 60, tmp_path / "missing.json", log, ["python", "x.py"])
    gpu_collect.step(tmp_path, "tests", 1, 3.0, 120, tmp_path / "missing.xml", log, ["pytest"])
    assert gpu_collect.finish(tmp_path, "cuda") == 1
    report = json.loads((tmp_path / "gpu-check_cuda.json").read_text())
    assert [(s["name"], s["status"], s["result"]) for s in report["steps"]] == [("profile", "timeout", None),
                                                                               ("tests", "failed", None)]
    assert report["steps"][0]["log_tail"][-1] == "line 99" and len(report["steps"][0]["log_tail"]) == 30
    assert report["summary"] == ["profile: timeout", "tests: failed"] and not report["ok"]
