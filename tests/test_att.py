"""ATT's adaptive match step: the nearest student step is matched, and only the steps up to it carry gradient."""
from pathlib import Path

import pytest
import torch

from distillery.distill import distill_trajectory
from distillery.distill.components import nearest_step
from distillery.distill.matching import Batches, matching_loss, trajectory_loss, unroll_path
from distillery.plan import load_config, resolve_method
from distillery.seeds import generator
from conftest import config, make_problem, tiny_student


def test_nearest_step_l1_ties_to_the_later_as_the_code_l2_to_the_earliest_as_the_paper():
    target = torch.zeros(2)
    path = [torch.tensor([3.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([1.5, 0.0]), torch.tensor([0.0, 1.5])]
    assert nearest_step(path, target, "l2") == 2          # squared L2: 9, 2, 2.25, 2.25
    assert nearest_step(path, target, "l1") == 4          # L1: 3, 2, 1.5, 1.5 -> the later of the tie (`>=`)
    assert nearest_step([torch.ones(2)] * 3, target, "l2") == 1
    assert nearest_step([torch.ones(2)] * 3, target, "l1") == 3


def test_att_preset_selects_by_l1_and_att_paper_by_squared_l2():
    config = load_config(Path(__file__).resolve().parents[1])
    assert resolve_method(config, "att", "cifar10", 10)["match_distance"] == "l1"
    assert resolve_method(config, "att_paper", "cifar10", 10)["match_distance"] == "l2"
    # a path where the two criteria disagree: L1 1.4 vs 1.2 picks step 2, squared L2 0.98 vs 1.44 step 1
    target = torch.zeros(2)
    path = [torch.tensor([0.7, 0.7]), torch.tensor([0.0, 1.2])]
    assert nearest_step(path, target, "l1") == 2 and nearest_step(path, target, "l2") == 1


def loss_and_step(cfg, student, trajectory, images, labels, lr):
    batches = Batches(len(images), 4, generator(0, "batches"), images.device)
    return trajectory_loss(cfg, student, trajectory, 0, images, labels, lr, batches, generator(0, "dsa"),
                           generator(0, "perturb"))


@pytest.mark.parametrize("distance", ["l2", "l1"])
def test_adaptive_matching_picks_the_known_nearest_step_and_backpropagates_only_up_to_it(distance):
    student = tiny_student(torch.float64)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    labels, lr = torch.arange(3).repeat(2), torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    start = student.flatten()
    batches = Batches(6, 4, generator(0, "batches"), images.device)
    path = unroll_path(student, start.clone().requires_grad_(True), images, labels, lr, 5, batches,
                       generator(0, "dsa"), "color_crop_flip", points=range(1, 5))
    # the expert target sits just beside student step 2: that step is the nearest of the five
    target = path[1].detach() + 1e-4 * torch.randn(start.shape, generator=g, dtype=torch.float64)
    trajectory = torch.stack([start, start, target])
    adaptive = config(syn_steps=5, expert_epochs=2, max_start_epoch=1, dsa="color_crop_flip", match="adaptive",
                      match_distance=distance)
    loss, step = loss_and_step(adaptive, student, trajectory, images, labels, lr)
    assert step == 2
    assert loss.item() == pytest.approx(matching_loss(path[1], start, target).item(), rel=1e-12)
    # the same gradient as a fixed 2-step unroll: steps 3-5 contribute nothing
    two_steps, step_fixed = loss_and_step(config(syn_steps=2, expert_epochs=2, max_start_epoch=1,
                                                 dsa="color_crop_flip"), student, trajectory, images, labels, lr)
    assert step_fixed == 2
    grads = torch.autograd.grad(loss, (images, lr))
    expected = torch.autograd.grad(two_steps, (images, lr))
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-14)


def test_adaptive_distillation_records_its_match_steps():
    images, labels, student, trajectories = make_problem()
    result = distill_trajectory(config(match="adaptive"), images, labels, 3, student, iter(trajectories * 100))
    steps = [row["match_step"] for row in result.history]
    assert len(steps) == 15 and all(1 <= s <= 5 for s in steps)
    assert all(row["start_epoch"] in (0, 1) for row in result.history)
    fixed = distill_trajectory(config(), images, labels, 3, student, iter(trajectories * 100))
    assert {row["match_step"] for row in fixed.history} == {5}


@pytest.mark.parametrize("changes,message", [
    ({"match": "nearest"}, "match='nearest' is not one of fixed, adaptive"),
    ({"match_distance": "cos"}, "match_distance='cos' is not one of l2, l1"),
    ({"kind": "adversarial", "match": "adaptive"}, "kind='adversarial' does not combine with match='adaptive'"),
])
def test_config_rejects_bad_att_values(changes, message):
    with pytest.raises(ValueError, match=message):
        config(**changes)
