import pytest
import torch

from distillery.evaluate import EvalConfig, train_network
from distillery.experts import RECIPES, Recipe, get_recipe, train_expert
from distillery.models import build_model
from distillery.sam import SharpnessAware

A = torch.tensor([2.0, 0.5], dtype=torch.float64)  # diagonal of the quadratic's matrix
B = torch.tensor([1.0, -1.0], dtype=torch.float64)
W0 = torch.tensor([0.3, -0.7], dtype=torch.float64)
LR = 0.1


def grad_at(w: torch.Tensor) -> torch.Tensor:
    """∇ of L(w) = ½ wᵀ diag(A) w − bᵀw."""
    return A * w - B


def sam_step_on_quadratic(rho: float, alpha: float, adaptive: bool) -> torch.Tensor:
    """One SharpnessAware step with SGD(lr 0.1); the two coordinates are two separate parameters, so the
    norms must be taken jointly over both to match the hand computation."""
    params = [W0[:1].clone().requires_grad_(), W0[1:].clone().requires_grad_()]
    opt = SharpnessAware(params, torch.optim.SGD(params, lr=LR), rho=rho, alpha=alpha, adaptive=adaptive)

    def closure() -> torch.Tensor:
        w = torch.cat(params)
        loss = 0.5 * (A * w * w).sum() - (B * w).sum()
        opt.zero_grad()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == pytest.approx((0.5 * (A * W0 * W0).sum() - (B * W0).sum()).item()), "loss at w, not w+e"
    return torch.cat(params).detach()


def test_gsam_adaptive_step_matches_the_hand_computed_update():
    rho, alpha = 0.05, 0.4
    g = grad_at(W0)                                          # (-0.4, 0.65)
    e = rho * W0 ** 2 * g / (W0.abs() * g).norm()            # ASAM perturbation
    g_p = grad_at(W0 + e)
    g_perp = g - (g @ g_p) / (g_p @ g_p) * g_p
    d = g_p - alpha * g_perp
    expected = W0 - LR * d
    assert torch.allclose(sam_step_on_quadratic(rho, alpha, adaptive=True), expected, atol=1e-12, rtol=0)
    assert torch.allclose(expected, torch.tensor([0.3406866, -0.7667401], dtype=torch.float64), atol=1e-6)


def test_plain_sam_step_is_sgd_at_the_normalised_ascent_point():
    rho = 0.05
    g = grad_at(W0)
    expected = W0 - LR * grad_at(W0 + rho * g / g.norm())
    assert torch.allclose(sam_step_on_quadratic(rho, 0.0, adaptive=False), expected, atol=1e-12, rtol=0)
    assert not torch.allclose(expected, W0 - LR * g, atol=1e-3), "SAM differs from SGD at this rho"


def test_tiny_rho_approaches_plain_sgd():
    sgd = W0 - LR * grad_at(W0)
    for alpha, adaptive in ((0.0, False), (0.4, True)):
        assert torch.allclose(sam_step_on_quadratic(1e-9, alpha, adaptive), sgd, atol=1e-8, rtol=0)


def tiny_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat(4)
    return torch.randn(16, 1, 8, 8, generator=g) + labels.view(-1, 1, 1, 1).float(), labels


def test_perturbation_is_undone_exactly_and_bn_stats_see_one_pass():
    """After step() the weights are exactly w − lr·d, and BatchNorm running stats are those of the pass at w."""
    x, y = tiny_batch()
    torch.manual_seed(0)
    model = build_model("ConvNetBN", 1, 4, 8).double().train()
    twin = build_model("ConvNetBN", 1, 4, 8).double().train()
    twin.load_state_dict(model.state_dict())
    before = [p.detach().clone() for p in model.parameters()]
    opt = SharpnessAware(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.05), rho=0.5, alpha=0.3,
                         adaptive=True, model=model)

    def closure() -> torch.Tensor:
        loss = torch.nn.functional.cross_entropy(model(x.double()), y)
        opt.zero_grad()
        loss.backward()
        return loss

    opt.step(closure)
    for w0, p in zip(before, model.parameters()):
        assert torch.equal(p.detach(), w0.add(p.grad, alpha=-0.05)), "w1 = w0 − lr·d, bit for bit"
    with torch.no_grad():
        twin(x.double())
    for (name, buf), (_, ref) in zip(model.named_buffers(), twin.named_buffers()):
        assert torch.equal(buf, ref), name
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_parameters_without_gradient_are_skipped():
    used, unused = torch.tensor([1.0], requires_grad=True), torch.tensor([2.0], requires_grad=True)
    opt = SharpnessAware([used, unused], torch.optim.SGD([used, unused], lr=0.1), rho=0.1, alpha=1.0, adaptive=True)

    def closure() -> torch.Tensor:
        loss = (used ** 2).sum()
        opt.zero_grad()
        loss.backward()
        return loss

    opt.step(closure)
    assert unused.grad is None and unused.item() == 2.0
    assert used.item() < 1.0


def test_gsam_expert_trajectory_has_the_right_shape_differs_from_sgd_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(16)
    images = torch.randn(64, 1, 8, 8, generator=g) * 0.3 + labels.view(-1, 1, 1, 1).float()
    seen: list[int] = []
    gsam = get_recipe("gsam", epochs=2, batch=16)
    trajectory, model = train_expert(images, labels, "ConvNetW16", 4, gsam, seed=1,
                                     on_batch=lambda idx, logits: seen.append(logits.shape[0]))
    assert trajectory.shape == (3, sum(p.numel() for p in model.parameters()))
    assert seen == [16] * 8, "on_batch sees each batch once (the unperturbed pass)"
    again, _ = train_expert(images, labels, "ConvNetW16", 4, gsam, seed=1)
    assert torch.equal(trajectory, again), "same seed, same GSAM trajectory"
    sgd, _ = train_expert(images, labels, "ConvNetW16", 4, get_recipe("sgd", epochs=2, batch=16), seed=1)
    assert torch.equal(trajectory[0], sgd[0]), "same initialisation"
    assert (trajectory[1:] - sgd[1:]).norm(dim=1).min() > 1e-4, "GSAM moves differently from SGD"


def test_sam_evaluation_is_deterministic_and_differs_from_sgd():
    images, labels = tiny_batch()
    sam = EvalConfig(epochs=4, batch=8, sam_rho=0.05)
    a = train_network(images, labels, 0.01, "ConvNetW16", 4, seed=3, cfg=sam)
    b = train_network(images, labels, 0.01, "ConvNetW16", 4, seed=3, cfg=sam)
    plain = train_network(images, labels, 0.01, "ConvNetW16", 4, seed=3, cfg=EvalConfig(epochs=4, batch=8))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.allclose(next(a.parameters()), next(plain.parameters()), atol=1e-6)


def test_gsam_recipes_are_ftds_and_bad_settings_are_errors():
    assert (RECIPES["gsam"].optimizer, RECIPES["gsam"].rho, RECIPES["gsam"].alpha) == ("gsam", 0.01, 1.0)
    assert RECIPES["gsam_a03"].alpha == 0.3 and RECIPES["gsam_a03"].adaptive
    assert (RECIPES["gsam"].lr, RECIPES["gsam"].momentum, RECIPES["gsam"].epochs, RECIPES["gsam"].batch) == (
        0.01, 0.0, 50, 256)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; choose one of: sgd, gsam, adam"):
        Recipe("x", optimizer="rmsprop")
    with pytest.raises(ValueError, match="gsam needs rho > 0"):
        Recipe("x", optimizer="gsam")
    with pytest.raises(ValueError, match="alpha are fixed by the recipe name"):
        get_recipe("gsam", alpha=0.3)
    with pytest.raises(ValueError, match="rho must be > 0"):
        SharpnessAware([], torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), rho=0.0)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        SharpnessAware([], torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), rho=0.1, alpha=-1.0)
    with pytest.raises(ValueError, match="sam_rho must be >= 0"):
        EvalConfig(sam_rho=-0.1)
