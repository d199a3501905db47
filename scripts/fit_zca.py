"""Snakemake adapter: fit ZCA whitening (kornia, eps 0.1) on the full training split."""
import _library  # the checkout's src/ on sys.path (--sdm conda); the job wrapper
import torch

from distillery.data import fit_zca, save_zca

with _library.job(snakemake, device="cpu"):
    save_zca(fit_zca(torch.load(snakemake.input.train, weights_only=True)["images"]), snakemake.output[0])
