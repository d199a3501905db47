"""AST's expert recipes (momentum, Adam, clipped CE, gradient penalty) and trajectory smoothness statistics."""
import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from distillery.data import prepare
from distillery.experts import (RECIPES, Recipe, avg_var, clip_coefficient, decay_epoch, epoch_changes, epoch_lr,
                                expert_loss, get_recipe, gradient_penalty, restarts_optimizer, run_expert_stats,
                                run_expert_training, snapshot_accuracies, train_expert)
from distillery.functional import FlatModel
from distillery.metrics import accuracy
from distillery.models import build_model
from distillery.seeds import generator


def tiny_data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat(n // 4)
    return torch.randn(n, 1, 8, 8, generator=g) * 0.3 + labels.view(-1, 1, 1, 1).float(), labels


def linear_with_column_sum(target: list[float]) -> nn.Module:
    """A linear model on [N, 2, 3, 3] inputs whose rows W_c sum (exactly: small dyadic numbers) to `target`."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randint(-8, 8, (3, 18), generator=g).float() / 4
    weight[2] = torch.tensor(target) - weight[:2].sum(0)
    layer = nn.Linear(18, 3)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return nn.Sequential(nn.Flatten(), layer)


# ∇_x Σ_c logits_c of the linear model is Σ_c W_c for every input: here 3 at channel 0 and 4 at channel 1 of pixel
# (0, 0), zero elsewhere. Per sample its norm is 5; per pixel it is 5 at (0, 0) and 0 at the other eight pixels.
COLUMN_SUM = [3.0] + [0.0] * 8 + [4.0] + [0.0] * 8


@pytest.mark.parametrize("norm,closed_form", [
    ("sample", lambda k: (5 - k) ** 2),                       # the paper's Eq. 19: ‖∇_{x_i}‖ over the whole input
    ("pixel", lambda k: ((5 - k) ** 2 + 8 * k ** 2) / 9),     # AST's utils.py:423: over channels, mean over pixels
])
def test_gradient_penalty_of_a_linear_model_is_its_closed_form(norm, closed_form):
    model = linear_with_column_sum(COLUMN_SUM)
    x = torch.randn(6, 2, 3, 3, requires_grad=True)
    logits = model(x)
    for target in (1.0, 7.5, 5.0):
        expected = pytest.approx(closed_form(target), rel=1e-6, abs=1e-6)
        assert gradient_penalty(logits, x, target, norm).item() == expected
    with pytest.raises(ValueError, match="choose sample or pixel"):
        gradient_penalty(logits, x, 1.0, "channel")


@pytest.mark.parametrize("recipe_name", ["smooth_paper", "smooth"])
def test_expert_loss_is_clipped_ce_plus_the_recipes_penalty(recipe_name):
    """Epoch 0 of `smooth_paper` and `smooth`: 0.5·CE of the augmented batch + μ·penalty, the penalty on that
    batch per sample with μ = 1 (paper) or on the clean batch per pixel with λ = 2 (code)."""
    model = linear_with_column_sum(COLUMN_SUM)
    recipe = RECIPES[recipe_name]
    clean = torch.randn(6, 2, 3, 3)
    x, labels = clean.flip(3), torch.tensor([0, 1, 2, 0, 1, 2])   # a stand-in for the augmented batch
    loss, logits = expert_loss(model, x, clean, labels, recipe, epoch=0)
    assert torch.equal(logits, model(x))
    penalty = 16.0 if recipe_name == "smooth_paper" else (16.0 + 8.0) / 9
    weight = 1.0 if recipe_name == "smooth_paper" else 2.0
    assert loss.item() == pytest.approx(0.5 * F.cross_entropy(model(x), labels).item() + weight * penalty, rel=1e-6)
    loss.backward()
    assert model[1].weight.grad.abs().sum() > 0, "the penalty is differentiable in the weights"


def test_clip_coefficients_of_the_code_and_the_paper():
    assert [clip_coefficient(RECIPES["smooth"], e) for e in range(11)] == pytest.approx(
        [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0])   # buffer.py:90-91
    assert [clip_coefficient(RECIPES["smooth_paper"], e) for e in range(7)] == pytest.approx(
        [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.0])
    for name in ("sgd", "smooth_gp", "smooth_gp_paper"):
        assert [clip_coefficient(RECIPES[name], e) for e in range(3)] == [1.0, 1.0, 1.0]


def test_a_clipped_epoch_equals_a_proportionally_smaller_lr():
    images, labels = tiny_data()
    clipped = Recipe("a", lr=0.02, momentum=0.9, clip_epochs=1, clip_start=0.5, epochs=2, batch=16, dsa=False)
    plain = Recipe("b", lr=0.01, momentum=0.9, epochs=2, batch=16, dsa=False)
    a, _ = train_expert(images, labels, "MLP", 4, clipped, seed=0)
    b, _ = train_expert(images, labels, "MLP", 4, plain, seed=0)
    assert torch.equal(a[1], b[1]), "epoch 0: lr 0.02 x CE/2 is lr 0.01 x CE (scaling by 2 is exact)"
    assert (a[2] - b[2]).norm() > 1e-4, "epoch 1 is unclipped, so the larger lr shows"


def steps_seen(recipe: Recipe) -> list[tuple[float, bool]]:
    """(lr, whether the optimizer held momentum state) at every step of a 64-image, batch-32 run."""
    seen = []
    hook = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append((opt.param_groups[0]["lr"], bool(opt.state))))
    try:
        images, labels = tiny_data()
        train_expert(images, labels, "MLP", 4, recipe, seed=0)
    finally:
        hook.remove()
    return seen


def test_the_paper_halves_the_lr_from_epoch_25_keeping_the_optimizer():
    recipe = RECIPES["sgd_momentum_paper"]
    assert [epoch_lr(recipe, e) for e in (0, 24, 25, 49)] == [0.003, 0.003, 0.0015, 0.0015]
    assert epoch_lr(RECIPES["sgd"], 49) == 0.01
    seen = steps_seen(replace(recipe, epochs=4, batch=32))
    assert [lr for lr, _ in seen] == [0.003] * 4 + [0.0015] * 4
    assert [state for _, state in seen] == [False] + [True] * 7, "one momentum buffer for the whole run"


def test_the_code_multiplies_the_lr_by_06_after_epoch_26_and_restarts_the_optimizer():
    # buffer.py:88,121-131: `if e in [train_epochs // 2 + 1]: lr *= 0.6` after training epoch e, optimizer rebuilt
    for name in ("sgd_momentum", "adam", "smooth_gp", "smooth"):
        recipe = RECIPES[name]
        assert decay_epoch(recipe) == 27 and recipe.lr_decay_reset
        assert [epoch_lr(recipe, e) for e in (0, 26, 27, 49)] == pytest.approx([0.003, 0.003, 0.0018, 0.0018])
        assert [restarts_optimizer(recipe, e) for e in (26, 27, 28)] == [False, True, False]
    assert RECIPES["adam"].weight_decay == 0.0 and RECIPES["sgd_momentum"].weight_decay == 0.001   # buffer.py:74,76
    seen = steps_seen(replace(RECIPES["sgd_momentum"], epochs=6, batch=32))   # decay at 6 // 2 + 2 = 5
    assert [lr for lr, _ in seen] == pytest.approx([0.003] * 10 + [0.0018] * 2)
    assert [state for _, state in seen] == [False] + [True] * 9 + [False, True], "fresh momentum at epoch 5"


def test_a_restarted_momentum_expert_equals_a_hand_restarted_one():
    """With the restart the decayed epochs are a fresh SGD(momentum) run from the weights reached, at lr·0.6."""
    images, labels = tiny_data()
    recipe = Recipe("r", lr=0.05, momentum=0.9, epochs=5, batch=32, dsa=False, lr_decay_at=0.5, lr_decay=0.6,
                    lr_decay_delay=2, lr_decay_reset=True)
    trajectory, _ = train_expert(images, labels, "MLP", 4, recipe, seed=0)
    kept, _ = train_expert(images, labels, "MLP", 4, replace(recipe, lr_decay_reset=False), seed=0)
    assert torch.equal(trajectory[:5], kept[:5]) and (trajectory[5] - kept[5]).norm() > 1e-6
    module = build_model("MLP", 1, 4, 8)
    torch.nn.utils.vector_to_parameters(trajectory[4].clone(), module.parameters())
    opt = torch.optim.SGD(module.parameters(), lr=0.05 * 0.6, momentum=0.9)
    shuffle = generator(0, "expert-shuffle")
    for _ in range(5):  # epoch 4's batch order is the run's fifth permutation
        order = torch.randperm(64, generator=shuffle)
    for start in (0, 32):
        idx = order[start:start + 32]
        opt.zero_grad()
        F.cross_entropy(module(images[idx]), labels[idx]).backward()
        opt.step()
    assert torch.allclose(torch.nn.utils.parameters_to_vector(module.parameters()), trajectory[5], atol=1e-6)


def test_the_gradient_penalty_enters_the_training_step_with_one_forward_pass():
    images, labels = tiny_data()
    recipe = Recipe("gp", lr=0.1, gp_weight=2.0, gp_target=1.0, epochs=1, batch=64, dsa=False)
    forwards = []
    hook = nn.modules.module.register_module_forward_hook(
        lambda module, args, out: forwards.append(1) if type(module).__name__ == "MLP" else None)
    try:
        trajectory, model = train_expert(images, labels, "MLP", 4, recipe, seed=0)
    finally:
        hook.remove()
    assert len(forwards) == 1, "one full batch, one forward pass"
    flat = FlatModel(model)
    theta = trajectory[0].clone().requires_grad_()
    x = images.clone().requires_grad_()
    logits = flat(theta, x)
    loss = F.cross_entropy(logits, labels) + 2.0 * gradient_penalty(logits, x, 1.0)
    grad, = torch.autograd.grad(loss, theta)
    assert torch.allclose(trajectory[1], trajectory[0] - 0.1 * grad, rtol=1e-5, atol=1e-6)
    no_gp, _ = train_expert(images, labels, "MLP", 4, replace(recipe, gp_weight=0.0), seed=0)
    assert (no_gp[1] - trajectory[1]).norm() > 1e-4


def test_the_codes_penalty_is_a_second_pass_on_the_unaugmented_batch():
    """epoch_gp: CE on the DSA batch, λ·(per-pixel penalty) on a second forward pass of the raw batch."""
    images, labels = tiny_data()
    recipe = Recipe("gp", lr=0.1, gp_weight=2.0, gp_norm="pixel", gp_input="clean", epochs=1, batch=64)
    forwards = []
    hook = nn.modules.module.register_module_forward_hook(
        lambda module, args, out: forwards.append(args[0].detach()) if type(module).__name__ == "ConvNet" else None)
    try:
        trajectory, model = train_expert(images, labels, "ConvNetD1W16", 4, recipe, seed=0)
    finally:
        hook.remove()
    order = torch.randperm(64, generator=generator(0, "expert-shuffle"))  # the one batch, in the run's order
    assert len(forwards) == 2 and torch.equal(forwards[1], images[order])
    assert not torch.equal(forwards[0], images[order]), "the CE's pass sees the DSA batch"
    flat = FlatModel(model)
    theta = trajectory[0].clone().requires_grad_()
    clean = images[order].requires_grad_()
    loss = (F.cross_entropy(flat(theta, forwards[0]), labels[order])
            + 2.0 * gradient_penalty(flat(theta, clean), clean, 1.0, "pixel"))
    grad, = torch.autograd.grad(loss, theta)
    assert torch.allclose(trajectory[1], trajectory[0] - 0.1 * grad, rtol=1e-5, atol=1e-6)


def test_epoch_changes_and_avg_var_of_a_hand_made_trajectory():
    trajectory = torch.tensor([[0.0, 0.0], [1.0, 2.0], [1.0, 2.0], [4.0, 6.0]])
    changes = epoch_changes(trajectory)
    assert changes.dtype == torch.float64 and changes.tolist() == [5.0, 0.0, 25.0]
    assert avg_var(trajectory) == 10.0
    with pytest.raises(ValueError, match="at least 2 snapshots"):
        epoch_changes(trajectory[:1])


def test_snapshot_accuracies_match_the_module_loaded_with_each_snapshot():
    images, labels = tiny_data()
    test_images, test_labels = tiny_data(32, seed=1)
    trajectory, _ = train_expert(images, labels, "MLP", 4, get_recipe("sgd", epochs=2, batch=16, dsa=False), seed=0)
    accs = snapshot_accuracies(trajectory, "MLP", test_images, test_labels, 4, batch=10)
    assert len(accs) == 3
    module = build_model("MLP", 1, 4, 8)
    for snapshot, acc in zip(trajectory, accs):
        torch.nn.utils.vector_to_parameters(snapshot.clone(), module.parameters())
        assert acc == accuracy(module, test_images, test_labels)
    with pytest.raises(ValueError, match="BatchNorm running statistics"):
        snapshot_accuracies(trajectory, "ConvNetBN", test_images, test_labels, 4)


def test_smooth_experts_move_less_than_gradient_penalty_alone():
    # On a tiny problem the two-sided penalty (K = 1) makes experts move more than plain momentum SGD (it grows
    # a small ‖∇x Σ logits‖ towards K), so the paper's MOM > smooth ordering is not checked here; clipping on top
    # of the penalty (Table VII, last row against row 3) does reduce Avg_Var.
    images, labels = tiny_data()
    var = {name: avg_var(train_expert(images, labels, "MLP", 4, get_recipe(name, epochs=6, batch=16), seed=0)[0])
           for name in ("smooth_gp", "smooth")}
    assert var["smooth"] < var["smooth_gp"]


def test_adam_and_smooth_recipes_train_to_finite_trajectories():
    images, labels = tiny_data()
    adam, _ = train_expert(images, labels, "MLP", 4, get_recipe("adam", epochs=2, batch=16), seed=0)
    momentum, _ = train_expert(images, labels, "MLP", 4, get_recipe("sgd_momentum", epochs=2, batch=16), seed=0)
    smooth, _ = train_expert(images, labels, "ConvNetW16", 4, get_recipe("smooth", epochs=2, batch=16), seed=0)
    assert torch.isfinite(adam).all() and torch.isfinite(smooth).all()
    assert torch.equal(adam[0], momentum[0]) and (adam[1:] - momentum[1:]).norm(dim=1).min() > 1e-3
    assert (epoch_changes(smooth) > 0).all()


def test_identity_settings_are_not_overridden_and_bad_settings_are_errors():
    with pytest.raises(ValueError, match="gp_weight are fixed by the recipe name"):
        get_recipe("smooth", gp_weight=0.0)
    with pytest.raises(ValueError, match="clip_epochs, lr_decay_at are fixed by the recipe name"):
        get_recipe("smooth", lr_decay_at=0.2, clip_epochs=1)
    assert get_recipe("smooth", epochs=4, lr=0.01).gp_weight == RECIPES["smooth"].gp_weight
    with pytest.raises(ValueError, match="gradient penalty is not combined with gsam"):
        Recipe("x", optimizer="gsam", rho=0.01, gp_weight=1.0)
    with pytest.raises(ValueError, match=r"clip_start in \(0, 1\]"):
        Recipe("x", clip_epochs=5, clip_start=0.0)
    with pytest.raises(ValueError, match="gp_weight must be >= 0"):
        Recipe("x", gp_weight=-1.0)
    with pytest.raises(ValueError, match="lr_decay must be > 0"):
        Recipe("x", lr_decay=0.0)
    with pytest.raises(ValueError, match="adam takes no momentum"):
        get_recipe("adam", momentum=0.9)
    with pytest.raises(ValueError, match="gp_norm must be one of sample, pixel .*got 'channel'"):
        Recipe("x", gp_norm="channel")
    with pytest.raises(ValueError, match="gp_input one of augmented, clean .*got 'sample', 'raw'"):
        Recipe("x", gp_input="raw")
    with pytest.raises(ValueError, match="lr_decay_delay must be >= 0"):
        Recipe("x", lr_decay_delay=-1)
    with pytest.raises(ValueError, match="gp_norm, lr_decay_reset are fixed by the recipe name"):
        get_recipe("smooth", gp_norm="sample", lr_decay_reset=False)


def test_run_expert_stats_round_trip(tmp_path):
    prepare("digits", tmp_path, tmp_path / "digits")
    paths, metas = [tmp_path / "0.pt", tmp_path / "1.pt"], []
    for seed, path in enumerate(paths):
        metas.append(run_expert_training(tmp_path / "digits", path, "MLP", "smooth", seed,
                                         overrides={"epochs": 2, "batch": 128}))
    stats = run_expert_stats(paths, tmp_path / "digits", tmp_path / "stats.json")
    assert json.loads((tmp_path / "stats.json").read_text()) == stats
    assert (stats["recipe"], stats["model"], stats["dataset"], stats["zca"], stats["experts"]) == (
        "smooth", "MLP", "digits", False, 2)
    assert [len(c) for c in stats["epoch_changes"]] == [2, 2] and [len(a) for a in stats["test_accuracy"]] == [3, 3]
    assert stats["avg_var"] == pytest.approx([sum(c) / 2 for c in stats["epoch_changes"]])
    assert stats["final_test_accuracy"] == [m["test_accuracy"] for m in metas], "the trained model's accuracy"
    assert all(0 <= a <= 1 for accs in stats["test_accuracy"] for a in accs)
    run_expert_training(tmp_path / "digits", tmp_path / "other.pt", "MLP", "sgd_momentum", 0,
                        overrides={"epochs": 2, "batch": 128})
    with pytest.raises(ValueError, match="experts disagree: .*other.pt is recipe 'sgd_momentum'"):
        run_expert_stats([*paths, tmp_path / "other.pt"], tmp_path / "digits", tmp_path / "bad.json")
    with pytest.raises(ValueError, match="no expert trajectories given"):
        run_expert_stats([], tmp_path / "digits", tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()
