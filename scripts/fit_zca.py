"""Snakemake adapter: fit ZCA whitening (kornia, eps 0.1) on the full training split."""
import _library  # noqa: F401  (the checkout's src/ on sys.path under --sdm conda)
import torch

from distillery.data import fit_zca, save_zca
from distillery.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads, "cpu")
save_zca(fit_zca(torch.load(snakemake.input.train, weights_only=True)["images"]), snakemake.output[0])
