"""Memory modes of the unroll (recompute: exact; constant: TESLA's first-order gradient) and chunked inner steps
give the gradients and synthetic images of the full create_graph unroll."""
import pytest
import torch
import torch.nn.functional as F

from distillery.augment import dsa
from distillery.distill import DistillConfig, distill_trajectory
from distillery.distill.matching import Batches, matching_loss, trajectory_loss, unroll_path
from distillery.functional import FlatModel
from distillery.models import ConvNet
from distillery.seeds import generator

DSA = "color_crop_cutout_flip_scale_rotate"
# constant's relative error against full on problem() with lr 0.1, no intermediate points (quoted in
# distill/memory.py and docs/memory-and-cost.md "Memory modes"): image gradient per N; the lr gradient's at N = 5
CONSTANT_ERROR = {"images": {2: 0.1025, 5: 0.2442, 10: 0.3904}, "lr": 0.1416}
# the same with inner momentum 0.9 (AST's distill.py), its first-order analogue
CONSTANT_ERROR_MOMENTUM = {"images": {2: 0.0775, 5: 0.2714, 10: 0.6511}, "lr": 0.0625}


def tiny_student() -> FlatModel:
    torch.manual_seed(0)
    return FlatModel(ConvNet(1, 3, 6, width=4, depth=1).double())


def problem():
    """A float64 ConvNet, 9 6x6 images of 3 classes, its start and a nearby target."""
    student = tiny_student()
    images = torch.randn(9, 1, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    labels = torch.arange(3).repeat(3)
    start = student.flatten()
    target = start + 0.05 * torch.randn(start.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return student, images, labels, start, target


def first_order_path(student, start, images, labels, lr, steps, batches, aug, strategy, points, scale,
                     momentum=0.0):
    """TESLA's approximation by plain autograd: each step's gradient taken at a detached θ_i, so θ_N depends on
    the images only through g_i's direct dependence on its batch (an independent reference for `constant`); with
    momentum the velocity b_i = μ·b_{i−1} + g_i carries those g_i."""
    theta, path, b = start, [], None
    for n in range(1, steps + 1):
        idx = batches.next()
        at = theta.detach().requires_grad_(True)
        loss = scale * F.cross_entropy(student(at, dsa(images[idx], aug, strategy)), labels[idx])
        (grad,) = torch.autograd.grad(loss, at, create_graph=True)
        b = grad if b is None else momentum * b + grad
        theta = theta - lr * b
        if n in points:
            path.append(theta)
    return path + [theta]


def gradients(memory, steps=5, chunk=None, points=(), lr=0.1, scale=1.3, strategy=DSA, momentum=0.0):
    """(loss, ∂/∂images, ∂/∂lr, ∂/∂start) of the final plus half-weighted intermediate matching losses, with
    batch_syn 4 of 9 images (every step another batch), DSA on and inner `momentum`. memory 'first_order': the
    reference above."""
    student, images, labels, start, target = problem()
    images.requires_grad_(True)
    start.requires_grad_(True)
    lr = torch.tensor(lr, dtype=torch.float64, requires_grad=True)
    args = (student, start, images, labels, lr, steps, Batches(9, 4, generator(0, "batches"), images.device),
            generator(0, "dsa"), strategy, points, scale)
    path = (first_order_path(*args, momentum) if memory == "first_order"
            else unroll_path(*args, memory, chunk, momentum))
    loss = matching_loss(path[-1], start.detach(), target)
    for theta in path[:-1]:
        loss = loss + 0.5 * matching_loss(theta, start.detach(), target)
    return (loss.detach(), *torch.autograd.grad(loss, (images, lr, start)))


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def assert_all_close(got, want):
    for name, a, b in zip(("loss", "images", "lr", "start"), got, want):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), f"{name}: relative error {rel(a, b):.2e}"


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("steps", [4, 6])
@pytest.mark.parametrize("points", [(), (2, 3)])
def test_recompute_gives_the_full_unroll_gradients(steps, points, momentum):
    full = gradients("full", steps, points=points, momentum=momentum)
    assert full[1].abs().sum() > 0 and full[3].abs().sum() > 0
    assert_all_close(gradients("recompute", steps, points=points, momentum=momentum), full)


def test_momentum_changes_the_gradients_it_is_not_a_no_op():
    plain, heavy = gradients("full", points=(2,)), gradients("full", points=(2,), momentum=0.9)
    assert all(rel(a, b) > 1e-2 for a, b in zip(heavy, plain))


@pytest.mark.parametrize("chunk", [None, 2])
def test_recompute_without_augmentation_gives_the_full_unroll_gradients(chunk):
    assert_all_close(gradients("recompute", chunk=chunk, strategy="none"), gradients("full", strategy="none"))
    assert_all_close(gradients("constant", chunk=chunk, strategy="none"), gradients("first_order", strategy="none"))


@pytest.mark.parametrize("memory", ["full", "recompute", "constant"])
@pytest.mark.parametrize("chunk", [1, 3])
def test_chunked_steps_give_the_unchunked_gradients(memory, chunk):
    assert_all_close(gradients(memory, chunk=chunk, points=(2,)), gradients(memory, points=(2,)))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("points", [(), (1, 3)])
def test_constant_is_teslas_first_order_gradient(points, momentum):
    assert_all_close(gradients("constant", points=points, momentum=momentum),
                     gradients("first_order", points=points, momentum=momentum))


def test_constant_is_exact_for_one_step_in_images_and_lr_but_not_in_the_start():
    constant, full = gradients("constant", steps=1), gradients("full", steps=1)
    assert_all_close(constant[:3], full[:3])
    # the start's gradient drops (I − lr·H_0): a_1 instead of a_0
    assert rel(constant[3], full[3]) > 1e-3


def test_constant_relative_error_is_the_documented_one_and_shrinks_with_lr():
    for steps, error in CONSTANT_ERROR["images"].items():
        constant, full = gradients("constant", steps), gradients("full", steps)
        assert torch.allclose(constant[0], full[0], rtol=1e-12)  # the forward (the loss) is exact
        assert rel(constant[1], full[1]) == pytest.approx(error, rel=0.02)
        if steps == 5:
            assert rel(constant[2], full[2]) == pytest.approx(CONSTANT_ERROR["lr"], rel=0.02)
    # the dropped terms are lr·H_i: ten times smaller lr, about ten times smaller error
    small = rel(gradients("constant", lr=0.01)[1], gradients("full", lr=0.01)[1])
    assert 0.05 * CONSTANT_ERROR["images"][5] < small < 0.2 * CONSTANT_ERROR["images"][5]


def test_constant_with_momentum_has_the_documented_error():
    for steps, error in CONSTANT_ERROR_MOMENTUM["images"].items():
        constant, full = gradients("constant", steps, momentum=0.9), gradients("full", steps, momentum=0.9)
        assert torch.allclose(constant[0], full[0], rtol=1e-12)
        assert rel(constant[1], full[1]) == pytest.approx(error, rel=0.02)
        if steps == 5:
            assert rel(constant[2], full[2]) == pytest.approx(CONSTANT_ERROR_MOMENTUM["lr"], rel=0.02)


def trajectory_problem(dtype=torch.float64):
    student, images, labels, start, _ = problem()
    g = torch.Generator().manual_seed(3)
    trajectory = start + 0.05 * torch.randn(6, student.num_params, generator=g, dtype=dtype).cumsum(0)
    return student, images, labels, trajectory


def loss_and_gradients(**changes):
    """trajectory_loss (AST's balance, gaussian start, intermediate or ATT's adaptive matching) and its image and
    lr gradients."""
    student, images, labels, trajectory = trajectory_problem()
    settings = dict(method="m", kind="trajectory", ipc=3, syn_steps=5, expert_epochs=2, max_start_epoch=3,
                    batch_syn=4, dsa=DSA, balance=True, perturb="gaussian", perturb_scale=1e-3)
    cfg = DistillConfig(**{**settings, **changes})
    images.requires_grad_(True)
    lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    loss, step = trajectory_loss(cfg, student, trajectory, 1, images, labels, lr,
                                 Batches(9, 4, generator(0, "batches"), images.device), generator(0, "dsa"),
                                 generator(0, "perturb"))
    return (loss.detach(), *torch.autograd.grad(loss, (images, lr))), step


@pytest.mark.parametrize("matching", [dict(intermediate="equal"), dict(match="adaptive"),
                                      dict(intermediate="equal", inner_momentum=0.9, perturb="weight",
                                           perturb_scale=1.0),
                                      dict(match="adaptive", intermediate="varied", inner_momentum=0.9)])
@pytest.mark.parametrize("chunk", [None, 3])
def test_recompute_matches_full_through_trajectory_loss(matching, chunk):
    full, step = loss_and_gradients(**matching)
    recompute, recompute_step = loss_and_gradients(memory="recompute", chunk=chunk, **matching)
    assert recompute_step == step
    assert_all_close(recompute, full)


def test_adaptive_constant_learns_only_through_the_matched_step():
    (loss, images, lr), step = loss_and_gradients(match="adaptive", memory="constant")
    assert 1 <= step <= 5 and loss > 0 and images.abs().sum() > 0 and lr != 0


def distill(**changes):
    student, images, labels, trajectory = trajectory_problem(torch.float32)
    student = FlatModel(student.module.float())
    settings = dict(method="m", kind="trajectory", ipc=3, iterations=3, syn_steps=5, expert_epochs=2,
                    max_start_epoch=3, batch_syn=4, dsa=DSA, lr_img=10.0, lr_teacher=0.05)
    cfg = DistillConfig(**{**settings, **changes})
    return distill_trajectory(cfg, images.float(), labels, 3, student, iter([trajectory.float()] * 3))


def test_three_iterations_give_the_same_images_in_every_exact_mode():
    full = distill()
    for changes in [dict(memory="recompute"), dict(memory="recompute", chunk=3), dict(chunk=2)]:
        other = distill(**changes)
        assert torch.allclose(other.images, full.images, rtol=1e-4, atol=1e-6), changes
        assert other.lr == pytest.approx(full.lr, rel=1e-5)
        assert [r["start_epoch"] for r in other.history] == [r["start_epoch"] for r in full.history]
    assert not torch.equal(full.images, distill(iterations=1).images)  # the images did move
    constant, chunked = distill(memory="constant"), distill(memory="constant", chunk=3)
    assert torch.allclose(constant.images, chunked.images, rtol=1e-4, atol=1e-6)
    assert constant.history[0]["loss"] == pytest.approx(full.history[0]["loss"], rel=1e-6)


@pytest.mark.parametrize("field,value,message", [
    ("memory", "tesla", "memory='tesla' is not one of full, recompute, constant"),
    ("chunk", 0, "chunk=0 must be an integer of at least 1"),
    ("chunk", 2.5, "chunk=2.5 must be an integer or null"),  # the type check names it first
])
def test_config_rejects_bad_memory_settings(field, value, message):
    with pytest.raises(ValueError, match=message):
        DistillConfig(method="m", kind="trajectory", ipc=1, **{field: value})


def test_workflow_schema_lists_the_memory_modes_and_rejects_bad_ones():
    from pathlib import Path

    import yaml
    from snakemake.utils import validate

    from distillery.budget.memory import AUTO
    from distillery.distill.config import MEMORIES
    from distillery.plan import load_config

    root = Path(__file__).resolve().parents[1]
    schema = root / "workflow/schemas/config.schema.yaml"
    assert yaml.safe_load(schema.read_text())["properties"]["methods"]["additionalProperties"]["properties"][
        "memory"]["enum"] == [AUTO, *MEMORIES]  # auto: resolved by the planner (budget.plan_memory)
    config = load_config(root)
    config["methods"]["mtt"].update(memory="recompute", chunk=8)
    validate(config, schema=str(schema))
    for field, value in [("memory", "tesla"), ("chunk", 0)]:
        config = load_config(root)
        config["methods"]["mtt"][field] = value
        with pytest.raises(Exception, match=field):
            validate(config, schema=str(schema))
