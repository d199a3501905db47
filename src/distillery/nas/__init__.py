"""Neural architecture search with distilled data: search spaces, one architecture's training, rank correlation."""
from .rank import ranks, spearman, top_k_spearman
from .search import REAL, nas_summary, train_architecture, write_nas_table
from .space import convnet_space, missing_ground_truth, read_ground_truth, sample

__all__ = ["REAL", "convnet_space", "missing_ground_truth", "nas_summary", "ranks", "read_ground_truth",
           "sample", "spearman", "top_k_spearman", "train_architecture", "write_nas_table"]
