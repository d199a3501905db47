"""Jobs that did not finish, so that the next run redoes them.

Snakemake 9 records a failed job's outputs as complete although it removed them (snakemake/snakemake#3808): a
later run then redoes nothing while the files made from those outputs still exist (a preempted rerun with new
settings left the old table). So a job marks its first output while it runs (`.<file>.running`, removed when it
succeeds); when a run ends with a failure, the workflow's `onerror` hook adds one to `.<file>.interrupted` for each
marker left behind. That count is a param of the job: it changed, so the next run redoes the job (resuming from its
checkpoint) and everything made from its output. A later success keeps the count, so nothing reruns twice.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from distillery.io import atomic_write, beside

RUNNING, COUNT = "running", "interrupted"


def interruptions(output: str | Path) -> int:
    """How many runs left the job writing `output` unfinished (0 for none): the job's `interrupted` param."""
    path = beside(output, COUNT)
    return int(path.read_text()) if path.is_file() else 0


def mark_running(output: str | Path) -> None:
    """Mark the job writing `output` as started (host, pid and time, for `record_interruptions` and for people)."""
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write(beside(output, RUNNING), lambda f: f.write(json.dumps(record).encode()))


def clear_running(output: str | Path) -> None:
    """The job writing `output` succeeded."""
    beside(output, RUNNING).unlink(missing_ok=True)


def _still_running(marker: Path) -> bool:
    """Whether the marker's job is a live process on this host (a job of another Snakemake run in this directory)."""
    try:
        record = json.loads(marker.read_text())
        if record["host"] != socket.gethostname():
            return False
        os.kill(int(record["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return False
    return True


def record_interruptions(root: str | Path) -> list[Path]:
    """After a failed run: count one more interruption for every output under `root` whose job started and did not
    finish (its marker left, its process gone), and remove the marker; returns those outputs."""
    found = []
    for marker in sorted(Path(root).rglob(f".*.{RUNNING}")):
        if _still_running(marker):
            continue
        output = marker.with_name(marker.name[1:-len(RUNNING) - 1])
        count = interruptions(output) + 1
        atomic_write(beside(output, COUNT), lambda f: f.write(str(count).encode()))
        marker.unlink(missing_ok=True)
        found.append(output)
    return found
