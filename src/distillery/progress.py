"""Progress of long steps: a log line every few steps (step, metrics, ETA) and a bar on a terminal."""
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
    """Reports `update(step, **metrics)` to the log every `every` steps and to a tqdm bar on a TTY."""

    def __init__(self, total: int, desc: str, every: int | None = None):
        self.total, self.desc = total, desc
        self.every = every or max(1, total // 20)
        self.start = time.perf_counter()
        self.bar = tqdm(total=total, desc=desc, disable=not sys.stderr.isatty(), leave=False)

    def update(self, step: int, **metrics: float) -> None:
        """`step` counts completed steps (1..total)."""
        self.bar.update(step - self.bar.n)
        if metrics:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
        if step % self.every == 0 or step == self.total:
            elapsed = time.perf_counter() - self.start
            eta = elapsed / step * (self.total - step)
            shown = " ".join(f"{k} {v:.5g}" for k, v in metrics.items())
            log.info("%s %d/%d %s elapsed %s eta %s", self.desc, step, self.total, shown, _clock(elapsed), _clock(eta))

    def close(self) -> None:
        self.bar.close()


def setup_logging(path: str | None = None) -> None:
    """Log INFO lines to `path` (a Snakemake log file) and to stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        handlers.append(logging.FileHandler(path, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers, force=True)
