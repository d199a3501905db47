"""Jobs that did not finish, so that the next run redoes them; and one writer per output.

Snakemake 9 records a failed job's outputs as complete although it removed them (snakemake/snakemake#3808): a
later run then redoes nothing while the files made from those outputs still exist (a preempted rerun with new
settings left the old table). So a job marks its first output while it runs (`.<file>.running`, removed when it
succeeds); when a run ends with a failure, the workflow's `onerror` hook adds one to `.<file>.interrupted` for each
marker left behind. That count is a param of the job: it changed, so the next run redoes the job (resuming from its
checkpoint) and everything made from its output. A later success keeps the count, so nothing reruns twice.

The running job holds an exclusive lock on its marker (flock), so two processes never write one output at once: a
second job for the same output (a rerun started while a job of a killed Snakemake was still stopping) waits for the
first to end, logging its PID, and then resumes from the checkpoint the first left.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from distillery.io import atomic_write, beside

log = logging.getLogger("distillery")
RUNNING, COUNT = "running", "interrupted"


def interruptions(output: str | Path) -> int:
    """How many runs left the job writing `output` unfinished (0 for none): the job's `interrupted` param."""
    path = beside(output, COUNT)
    return int(path.read_text()) if path.is_file() else 0


def _holder(fd: int) -> str:
    """Who holds a marker, from its record: 'process <pid> on <host> (started <time>)'."""
    try:
        record = json.loads(os.pread(fd, 4096, 0))
        return f"process {record['pid']} on {record['host']} (started {record['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _lock(marker: Path, what: str) -> tuple[int, str | None]:
    """Open `marker` (created if missing) and lock it exclusively, waiting while another process holds it; returns the
    descriptor and whom it waited for. A file system without locks is logged and writes unguarded."""
    waited, announced = None, 0.0
    while True:
        fd = os.open(marker, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                log.warning("%s: cannot lock %s (%s): a second process writing it at once would not be stopped",
                            what, marker, error)
                return fd, waited
            waited = _holder(fd)
            os.close(fd)
            if time.monotonic() - announced > 60:  # at once, then once a minute
                announced = time.monotonic()
                log.warning("%s is being written by %s; waiting for it to end before writing it here (a job whose "
                            "Snakemake was killed stops at its next checkpoint poll)", what, waited)
            time.sleep(0.5)
            continue
        try:
            current = os.stat(marker).st_ino == os.fstat(fd).st_ino  # not a marker its finished job removed
        except FileNotFoundError:
            current = False
        if current:
            return fd, waited
        os.close(fd)


@contextlib.contextmanager
def running(output: str | Path) -> Iterator[str | None]:
    """Mark the job writing `output` as running while the body runs, holding the marker's lock: yields whom it waited
    for (another process writing `output`, see `_lock`), or None. Removed when the body succeeds; left, unlocked, when
    it fails, for `record_interruptions`."""
    marker = beside(output, RUNNING)
    marker.parent.mkdir(parents=True, exist_ok=True)
    fd, waited = _lock(marker, str(output))
    try:
        record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield waited
        marker.unlink(missing_ok=True)  # still locked: a waiting process reopens a fresh marker
    finally:
        os.close(fd)


def _still_running(marker: Path) -> bool:
    """Whether the marker's job still runs: its lock is held (by a job of another Snakemake run in this directory)."""
    try:
        fd = os.open(marker, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
        return error.errno in (errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)
    return False


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
