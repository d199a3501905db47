import pytest
import torch

from distillery.experts import Recipe, check_batchable, get_recipe, train_expert, train_experts_batched


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def tiny_data(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(40, 1, 8, 8, generator=g, dtype=dtype)
    labels = torch.arange(40) % 4
    return images, labels


@pytest.mark.parametrize("recipe", [
    get_recipe("sgd", epochs=2, batch=16),                      # MTT: constant lr, no momentum, DSA
    get_recipe("sgd_momentum", epochs=5, batch=16),             # AST's code: lr x0.6 and momentum restarted at 4
    get_recipe("sgd_momentum_paper", epochs=3, batch=16),       # AST's paper: momentum kept, lr halved at epoch 1
    get_recipe("teacher", epochs=2, batch=16, dsa=False),       # APM teachers: final weights only, no DSA
])
def test_batched_experts_equal_serial_trajectories(float64, recipe):
    images, labels = tiny_data()
    seeds = [0, 1, 5]
    batched = train_experts_batched(images, labels, "ConvNetD2W16", 4, recipe, seeds)
    steps = 2 if recipe.final_only else recipe.epochs + 1
    assert batched.shape[:2] == (3, steps) and batched.dtype == torch.float64
    for k, seed in enumerate(seeds):
        serial, _ = train_expert(images, labels, "ConvNetD2W16", 4, recipe, seed)
        torch.testing.assert_close(batched[k], serial, rtol=1e-10, atol=1e-12)
    # not vacuous: the experts moved, and differently (own init, batches and augmentation per seed)
    assert (batched[:, -1] - batched[:, 0]).norm(dim=1).min() > 1e-3
    assert (batched[0, -1] - batched[1, -1]).norm() > 1e-3


def test_batched_experts_float32_close_to_serial():
    images, labels = tiny_data(torch.float32)
    recipe = get_recipe("sgd_momentum", epochs=2, batch=16)
    batched = train_experts_batched(images, labels, "ConvNetD2W16", 4, recipe, [3, 4])
    serial, _ = train_expert(images, labels, "ConvNetD2W16", 4, recipe, 4)
    torch.testing.assert_close(batched[1], serial, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("recipe, message", [
    (get_recipe("gsam"), "recipe 'gsam' uses optimizer 'gsam'"),
    (get_recipe("adam"), "recipe 'adam' uses optimizer 'adam'"),
    (get_recipe("smooth_gp"), r"the gradient penalty \(gp_weight 2.0\)"),
    (Recipe("clipped", momentum=0.9, clip_epochs=5), r"the clipped loss \(clip_epochs 5\)"),
])
def test_batched_training_refuses_other_recipes(recipe, message):
    with pytest.raises(ValueError, match=message + ".*train it with train_expert"):
        check_batchable("ConvNet", recipe)
    images, labels = tiny_data(torch.float32)
    with pytest.raises(ValueError, match=message):
        train_experts_batched(images, labels, "ConvNet", 4, recipe, [0])


@pytest.mark.parametrize("model", ["ConvNetBN", "ConvNetD2BN", "ResNet18", "MLP"])
def test_batched_training_refuses_models_other_than_buffer_free_convnets(model):
    with pytest.raises(ValueError, match=f"ConvNet models without BatchNorm.*got model '{model}'"):
        check_batchable(model, get_recipe("sgd"))


def test_batched_training_needs_seeds():
    images, labels = tiny_data(torch.float32)
    with pytest.raises(ValueError, match="seeds is empty"):
        train_experts_batched(images, labels, "ConvNet", 4, get_recipe("sgd", epochs=1), [])
