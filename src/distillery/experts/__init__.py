"""Expert trajectories: recipes that train them and the store that keeps one file per expert."""
from distillery.experts.batched import check_batchable, train_experts_batched
from distillery.experts.recipes import RECIPES, Recipe, get_recipe
from distillery.experts.smooth import (clip_coefficient, decay_epoch, epoch_lr, expert_loss, gradient_penalty,
                                       restarts_optimizer)
from distillery.experts.smoothness import avg_var, epoch_changes, run_expert_stats, snapshot_accuracies
from distillery.experts.store import ExpertSampler, load_expert, save_expert
from distillery.experts.train import run_expert_group, run_expert_training, train_expert

__all__ = ["RECIPES", "Recipe", "get_recipe", "ExpertSampler", "load_expert", "save_expert", "train_expert",
           "run_expert_training", "train_experts_batched", "check_batchable", "clip_coefficient", "decay_epoch",
           "epoch_lr", "restarts_optimizer", "expert_loss", "gradient_penalty", "avg_var", "epoch_changes",
           "run_expert_stats", "snapshot_accuracies"]
