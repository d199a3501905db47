"""Distillation: a synthetic set from real data, by trajectory matching (MTT family) or coreset selection. The job
that runs one (distill.run) is imported from its module: it sits above budget/, which imports this package."""
from distillery.distill.config import DistillConfig
from distillery.distill.init import init_synthetic
from distillery.distill.matching import distill_trajectory, matching_loss, unroll

__all__ = ["DistillConfig", "init_synthetic", "distill_trajectory", "matching_loss", "unroll"]
