"""Free combination of components: trajectory components on other kinds are rejected naming both settings, and
adaptive matching combines with intermediate matching (points dividing the matched part of the path)."""
import pytest
import torch

from distillery.distill import DistillConfig
from distillery.distill.matching import Batches, matching_loss, trajectory_loss, unroll_path
from distillery.plan import load_config, resolve_method
from distillery.seeds import generator
from conftest import ROOT, config, tiny_student


@pytest.mark.parametrize("kind,changes,named", [
    ("adversarial", dict(match="adaptive"), "match='adaptive'"),
    ("adversarial", dict(intermediate="equal"), "intermediate='equal'"),
    ("adversarial", dict(init="representative"), "init='representative'"),
    ("coreset", dict(ema_decay=0.99), "ema_decay=0.99"),
    ("coreset", dict(balance=True), "balance=True"),
    ("coreset", dict(init="representative"), "init='representative'"),
    ("coreset", dict(perturb="gaussian", perturb_scale=0.1), "perturb='gaussian'"),
    ("merged", dict(intermediate="varied", groups_of="apm", group_ipc=1), "intermediate='varied'"),
])
def test_trajectory_components_on_other_kinds_are_rejected_naming_both(kind, changes, named):
    with pytest.raises(ValueError) as error:
        DistillConfig(method="combo", ipc=2, **{"kind": kind, **changes})
    assert f"kind='{kind}'" in str(error.value) and named in str(error.value)
    assert "method 'combo'" in str(error.value)


def test_presets_resolve_and_adaptive_intermediate_is_accepted():
    cfg = config(match="adaptive", intermediate="equal", perturb="filter", perturb_scale=0.1, balance=True,
                 ema_decay=0.9, init="representative", syn_steps=2, expert_epochs=3)  # k < M is fine: points skip 0
    assert (cfg.match, cfg.intermediate) == ("adaptive", "equal")
    combos = load_config(ROOT, ROOT / "config/examples/combinations.yaml")
    first = resolve_method(combos, "att_ftd_intermediate", "digits", 1)
    assert (first["match"], first["recipe"], first["intermediate"]) == ("adaptive", "gsam", "equal")
    with pytest.raises(ValueError, match="kind='adversarial' does not combine with match='adaptive'"):
        resolve_method({**combos, "methods": {**combos["methods"], "apm": {**combos["methods"]["apm"],
                                                                            "match": "adaptive"}}}, "apm", "cifar10", 10)
    # distill.overrides are forced on the distillations that read them: a trajectory component is not an APM setting,
    # and a coreset reads no distillation setting at all.
    forced = {**combos, "distill": {"overrides": {"match": "adaptive", "iterations": 7, "select": "herding"}}}
    assert resolve_method(forced, "att_ftd_intermediate", "digits", 1)["iterations"] == 7
    apm = resolve_method(forced, "apm", "cifar10", 10)
    assert apm["match"] == "fixed" and apm["iterations"] == 7
    random = resolve_method(forced, "random", "digits", 1)
    assert random["select"] == "herding" and random["iterations"] == DistillConfig.iterations


@pytest.mark.parametrize("k,mode,spacing,expected", [
    (4, "equal", "floor", [(1, 1, 1.0), (2, 2, 1.0)]),    # M = 3: ξ = ⌊4/3⌋ = 1, ⌊8/3⌋ = 2 (the paper)
    (2, "varied", "floor", [(2, 1, 2 / 3)]),              # ξ_1 = ⌊2/3⌋ = 0 is skipped; ξ_2 = 1 with β_2 = 2/3
    (4, "equal", "multiple", [(1, 1, 1.0), (2, 2, 1.0)]), # AST's code: ξ_i = i·⌊4/3⌋ = 1, 2
    (2, "varied", "multiple", []),                        # i·⌊2/3⌋ = 0: both points fall on step 0, skipped
])
def test_adaptive_intermediate_gradient_equals_the_explicit_loss(k, mode, spacing, expected):
    """`expected` lists (i, ξ_i, β_i): L = L(θ̂_k, θ*_{t+M}) + Σ β_i L(θ̂_{ξ_i}, θ*_{t+i})."""
    student = tiny_student(torch.float64)
    g = torch.Generator().manual_seed(3)
    images = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    labels, lr = torch.arange(3).repeat(2), torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    start = student.flatten()

    def path():
        batches = Batches(6, 4, generator(0, "batches"), images.device)
        return unroll_path(student, start.clone().requires_grad_(True), images, labels, lr, 5, batches,
                           generator(0, "dsa"), "color_crop_flip", points=range(1, 5))

    steps = path()
    target = steps[k - 1].detach() + 1e-4 * torch.randn(start.shape, generator=g, dtype=torch.float64)
    middle = [start + 0.01 * torch.randn(start.shape, generator=g, dtype=torch.float64) for _ in range(2)]
    trajectory = torch.stack([start, *middle, target])
    cfg = config(syn_steps=5, expert_epochs=3, max_start_epoch=1, dsa="color_crop_flip", match="adaptive",
                 intermediate=mode, intermediate_spacing=spacing)
    batches = Batches(6, 4, generator(0, "batches"), images.device)
    loss, step = trajectory_loss(cfg, student, trajectory, 0, images, labels, lr, batches, generator(0, "dsa"),
                                 generator(0, "perturb"))
    assert step == k
    steps = path()
    explicit = matching_loss(steps[k - 1], start, target)
    for i, xi, beta in expected:
        explicit = explicit + beta * matching_loss(steps[xi - 1], start, trajectory[i])
    assert loss.item() == pytest.approx(explicit.item(), rel=1e-12)
    grads = torch.autograd.grad(loss, (images, lr))
    want = torch.autograd.grad(explicit, (images, lr))
    for got, expect in zip(grads, want):
        assert torch.allclose(got, expect, rtol=1e-10, atol=1e-14)
    plain = torch.autograd.grad(matching_loss(path()[k - 1], start, target), images)[0]
    assert torch.allclose(grads[0], plain) == (not expected)  # the intermediate terms contribute where there are any
