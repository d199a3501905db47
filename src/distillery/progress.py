"""Progress of long steps: a log line every few steps and at least once a minute (step, metrics, ETA), and a
bar on a terminal."""
from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger("distillery")


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Reports `update(step, **metrics)` to the log every `every` steps (default 1/20 of `total`) and, whatever the
    step length, at least every `interval` seconds (a minute), each line with the elapsed time and the ETA; and to a
    tqdm bar on a TTY. `step` counts the work done (up to `total`) and may be fractional (the batches of an epoch), so
    a long step shows life within it; `done` is where a resumed run starts, so its ETA counts only this run's pace."""

    def __init__(self, total: int, desc: str, every: int | None = None, interval: float = 60.0, done: float = 0):
        self.total, self.desc, self.done, self.interval = total, desc, done, interval
        self.every = every or max(1, total // 20)
        self.start = self.last = time.perf_counter()
        self.bar = tqdm(total=total, initial=int(done), desc=desc, disable=not sys.stderr.isatty(), leave=False)

    def update(self, step: float, **metrics: float) -> None:
        """`step`: the work done so far (1..total; fractions within a step)."""
        self.bar.update(int(step) - self.bar.n)
        if metrics:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
        now = time.perf_counter()
        whole = step == int(step) and (int(step) % self.every == 0 or step == self.total)
        if whole or now - self.last >= self.interval:
            self.last = now
            elapsed = now - self.start
            eta = _clock(elapsed / (step - self.done) * (self.total - step)) if step > self.done else "?"
            shown = " ".join(f"{k} {v:.5g}" for k, v in metrics.items())
            count = f"{int(step)}" if step == int(step) else f"{step:.2f}"
            log.info("%s %s/%d %s elapsed %s eta %s", self.desc, count, self.total, shown, _clock(elapsed), eta)

    def close(self) -> None:
        self.bar.close()


def setup_logging(path: str | None = None) -> None:
    """Log INFO lines to `path` (a Snakemake log file) and to stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        handlers.append(logging.FileHandler(path, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers, force=True)
