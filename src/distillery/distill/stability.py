"""ATT's stability study (Liu et al. 2024, §4.4): one trajectory-matching run with lr_img or lr_lr multiplied,
recorded as a success, or as a failure when the loss turns non-finite or the learned learning rate non-positive."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from distillery.choices import STABILITY_PARAMETERS
from distillery.distill.config import DistillConfig, fit_batch_syn
from distillery.distill.matching import DistillationError
from distillery.distill.run import load_training, match_trajectories
from distillery.io import save_json



def finite(value) -> float | None:
    """`value` as a float, or None when it is missing or not finite (JSON has no NaN)."""
    return float(value) if value is not None and math.isfinite(value) else None


def trial_config(settings: dict, parameter: str, multiplier: float, seed: int, iterations: int) -> DistillConfig:
    """The method's config with `parameter` multiplied by `multiplier`, and the trial's seed and iterations."""
    if parameter not in STABILITY_PARAMETERS:
        raise ValueError(f"stability parameter must be one of {', '.join(STABILITY_PARAMETERS)}, got {parameter!r}")
    cfg = DistillConfig.from_dict(settings)
    if cfg.kind != "trajectory":
        raise ValueError(f"method '{cfg.method}': the stability study needs kind trajectory, got {cfg.kind!r}")
    return replace(cfg, **{parameter: getattr(cfg, parameter) * multiplier}, seed=seed, iterations=iterations)


def stability_trial(settings: dict, prepared_dir: str | Path, expert_paths: Sequence[str | Path], parameter: str,
                    multiplier: float, seed: int, iterations: int, out_path: str | Path,
                    zca_path: str | Path | None = None, device: str = "cpu",
                    gpu_memory_gb: float | None = None) -> dict:
    """Distil with `settings[parameter] * multiplier` (nothing else changed but seed and iterations) and write
    the outcome as JSON to `out_path`. A DistillationError is a failed run; any other error propagates.
    `gpu_memory_gb` (runtime.gpu_memory_gb) keeps a training split too large for the GPU on the host."""
    cfg = trial_config(settings, parameter, multiplier, seed, iterations)
    meta, images, labels = load_training(cfg, prepared_dir, zca_path, device, gpu_memory_gb)
    cfg = fit_batch_syn(cfg, meta["num_classes"])
    try:
        result = match_trajectories(cfg, meta, images, labels, expert_paths, max_bad=0)  # the first NaN fails
        success, reason, done, loss, lr = True, "", iterations, result.history[-1]["loss"], result.lr
    except DistillationError as err:
        success, reason, done, loss, lr = False, str(err), err.iteration, err.loss, err.lr
    record = {"method": cfg.method, "dataset": meta["name"], "ipc": cfg.ipc, "parameter": parameter,
              "multiplier": float(multiplier), "value": getattr(cfg, parameter), "seed": seed,
              "iterations": iterations, "success": success, "reason": reason, "iterations_done": done,
              "final_loss": finite(loss), "final_lr": finite(lr)}
    save_json(record, out_path)
    return record
