"""Distillation: a synthetic set from real data, by trajectory matching (MTT family) or coreset selection."""
from distillery.distill.config import DistillConfig
from distillery.distill.init import init_synthetic
from distillery.distill.matching import distill_trajectory, matching_loss, unroll
from distillery.distill.run import run_distillation

__all__ = ["DistillConfig", "init_synthetic", "distill_trajectory", "matching_loss", "unroll", "run_distillation"]
