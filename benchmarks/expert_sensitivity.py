"""How far float32 rounding carries in expert training: the largest weight difference, after each step, between two
runs of our expert optimizer from initial weights 1e-7·N(0, 1) apart, on the parity harness's Fashion-MNIST subset.

It sizes the expert_training parity cases' tolerance: a step whose rounding differs by 1e-7 (FTD's GSAM sums in
another order than ours) shows in the epoch rows grown by this factor. docs/parity.md (FTD) quotes its output.

    PYTHONPATH=src python benchmarks/expert_sensitivity.py --recipes sgd gsam_a03 gsam --steps 8
"""
from __future__ import annotations

import argparse
import tempfile

import torch

from distillery.experts import get_recipe
from distillery.experts.smooth import expert_loss
from distillery.experts.train import make_optimizer
from distillery.models import build_model
from distillery.parity.workspace import make_workspace


def trajectory(model: torch.nn.Module, start: torch.Tensor, recipe_name: str, x: torch.Tensor, y: torch.Tensor,
               order: list[torch.Tensor], batch: int) -> list[torch.Tensor]:
    """The flat weights after each step of `recipe_name`'s optimizer from `start`, batches in `order`."""
    recipe = get_recipe(recipe_name)
    torch.nn.utils.vector_to_parameters(start.clone(), model.parameters())
    opt, _ = make_optimizer(model, recipe)
    rows = []
    for idx in (p[i:i + batch] for p in order for i in range(0, len(p), batch)):
        def closure() -> torch.Tensor:
            loss, _ = expert_loss(model, x[idx], x[idx], y[idx], recipe, 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            return loss
        opt.step(closure)
        rows.append(torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["sgd", "gsam_a03", "gsam"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--data", default="data")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ws = make_workspace(tempfile.mkdtemp(), args.data, args.per_class, 10)
    x, y = ws.train
    torch.manual_seed(0)
    passes = -(-args.steps * args.batch // len(y))
    order = [torch.randperm(len(y)) for _ in range(passes)]
    model = build_model("ConvNetW32", x.shape[1], ws.num_classes, x.shape[-1])
    start = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    nudge = 1e-7 * torch.randn_like(start)
    print(f"initial difference {nudge.abs().max():.1e}; largest weight difference after each step:")
    for name in args.recipes:
        a, b = (trajectory(model, w, name, x, y, order, args.batch)[:args.steps] for w in (start, start + nudge))
        print(f"{name:10s}", " ".join(f"{(u - v).abs().max():.1e}" for u, v in zip(a, b)))


if __name__ == "__main__":
    main()
