import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distillery.distill import DistillConfig, apm
from distillery.distill.apm import (checkpoint_epochs, disagreement, distill_adversarial, image_gradient, image_loss,
                                    loss_and_gradient, train_student)
from distillery.functional import FlatModel, frozen, snapshot_model
from distillery.models import build_model
from distillery.seeds import seeded
from distillery.synset import DistillationError

MODEL = "ConvNetD1W16"  # 1x4x4 images: conv 1->16, instance norm, pool, linear 64->3


def config(**kw) -> DistillConfig:
    settings = dict(method="apm", kind="adversarial", ipc=2, model=MODEL, iterations=4, lr_img=0.1,
                    student_epochs=4, checkpoints=2, mid_gap=1, student_batch=4, dsa="color_crop_flip")
    return DistillConfig(**{**settings, **kw})


def net(seed: int, dtype=torch.float32) -> nn.Module:
    with seeded(seed, "test-net"):
        return frozen(build_model(MODEL, 1, 3, 4).to(dtype))


def data(n: int, seed: int = 0, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 4, 4, generator=g, dtype=dtype), torch.arange(n) % 3


@pytest.mark.parametrize("kind", ["l1", "l2", "cosine"])
@pytest.mark.parametrize("update_syn", [1, 2, 3, None])
def test_chunked_gradient_equals_the_unchunked_one(update_syn, kind):
    images, labels = data(5, dtype=torch.float64)
    teacher, students = net(0, torch.float64), [net(1, torch.float64), net(2, torch.float64)]
    cfg = config(update_syn=update_syn, disagreement=kind, alpha=0.7)
    x = images.clone().requires_grad_(True)
    full = image_loss(x, labels, teacher, students, cfg)
    (expected,) = torch.autograd.grad(full, x)
    loss, grad = loss_and_gradient(images, labels, teacher, students, cfg)
    assert loss == pytest.approx(full.item(), rel=1e-12)
    assert torch.allclose(grad, expected, rtol=1e-10, atol=1e-12)
    assert torch.equal(image_gradient(images, labels, teacher, students, cfg), grad)
    assert all(p.grad is None for p in teacher.parameters())


def linear(seed: int) -> nn.Linear:
    with seeded(seed, "test-linear"):
        return nn.Linear(6, 3).double().requires_grad_(False)


@pytest.mark.parametrize("kind", ["l1", "l2", "cosine"])
def test_image_loss_is_eq4_without_the_log_on_linear_nets(kind):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    y = torch.tensor([0, 2, 1, 2])
    teacher, students = linear(0), [linear(1), linear(2), linear(3)]
    alpha = 0.3
    t = x @ teacher.weight.T + teacher.bias
    ce = -(t[torch.arange(4), y] - t.exp().sum(1).log()).mean()
    hand = alpha * ce
    for student in students:
        s = x @ student.weight.T + student.bias
        if kind == "l1":
            d = (s - t).abs().sum() / s.numel()
        elif kind == "l2":
            d = ((s - t) ** 2).sum() / s.numel()
        else:
            d = (1 - (s * t).sum(1) / (s.norm(dim=1) * t.norm(dim=1))).sum() / len(s)
        hand = hand - d
    cfg = config(alpha=alpha, disagreement=kind, update_syn=3)
    loss = image_loss(x, y, teacher, students, cfg)
    assert loss.item() == pytest.approx(hand.item(), rel=1e-12)
    (hand_grad,) = torch.autograd.grad(hand, x)
    assert torch.allclose(image_gradient(x.detach(), y, teacher, students, cfg), hand_grad, rtol=1e-10)


def test_disagreement_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown disagreement 'kl'"):
        disagreement(torch.zeros(2, 3), torch.zeros(2, 3), "kl")


def test_students_train_epochs_0_to_e_and_are_kept_where_apms_code_keeps_them():
    """distill.py:58-69: `range(Epoch+1)` epochs, MultiStepLR([E//2+1], 0.1) stepped after each (lr/10 from epoch
    E//2+1, momentum kept), students kept after epochs np.arange(0, E, E//K)[1:] + [E]. E = 2, K = 1, one full batch
    and no augmentation: three SGD steps written out by hand, the last at lr/10 with the momentum buffer kept."""
    assert checkpoint_epochs(250, 5) == [50, 100, 150, 200, 250]     # after 51, 101, …, 251 epochs of training
    assert checkpoint_epochs(100, 3) == [33, 66, 99, 100]            # the code keeps K + 1 where K does not divide E
    images, _ = data(6, seed=1)
    targets = 3 * net(0)(images)
    (student,) = train_student(images, targets, MODEL, 3, config(student_epochs=2, checkpoints=1, lr_net=0.05,
                                                                 student_batch=len(images), dsa=""), seed=7)
    with seeded(7, "apm-student"):
        by_hand = build_model(MODEL, 1, 3, 4)
    params, velocity = list(by_hand.parameters()), None
    for lr in (0.05, 0.05, 0.005):
        grads = torch.autograd.grad(F.l1_loss(by_hand(images), targets), params)
        grads = [g + 5e-4 * p.detach() for g, p in zip(grads, params)]
        velocity = grads if velocity is None else [0.9 * v + g for v, g in zip(velocity, grads)]
        with torch.no_grad():
            for p, v in zip(params, velocity):
                p -= lr * v
    for mine, theirs in zip(params, student.parameters()):
        assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-6)


def test_student_learns_the_teacher_logits_and_keeps_k_checkpoints():
    images, _ = data(12, seed=1)
    targets = 3 * net(0)(images)
    cfg = config(student_epochs=30, checkpoints=3, lr_net=0.05, student_batch=8)
    kept = train_student(images, targets, MODEL, 3, cfg, seed=7)
    assert len(kept) == 3
    assert all(not s.training and not any(p.requires_grad for p in s.parameters()) for s in kept)
    with seeded(7, "apm-student"):  # the student before training
        untrained = build_model(MODEL, 1, 3, 4)
    gaps = [F.l1_loss(s(images), targets).item() for s in [untrained, *kept]]
    assert gaps[-1] < gaps[1] < gaps[0]
    assert gaps[-1] < 0.5 * gaps[0]
    # the last checkpoint is the final student: K = 1 with the same seed gives the same weights
    (final,) = train_student(images, targets, MODEL, 3, config(student_epochs=30, checkpoints=1, lr_net=0.05,
                                                               student_batch=8), seed=7)
    assert torch.equal(FlatModel(final).flatten(), FlatModel(kept[-1]).flatten())


def teacher_files(log: list[str] | None = None, count: int = 100):
    """Endless [init, final] rows of random teachers (a new one each draw), logging "T" per draw."""
    for i in range(count):
        if log is not None:
            log.append("T")
        with seeded(i, "test-teacher"):
            final = FlatModel(build_model(MODEL, 1, 3, 4)).flatten()
        yield torch.stack([torch.zeros_like(final), final])


def test_distillation_refreshes_students_every_mid_gap_plus_one_iterations(monkeypatch):
    log: list[str] = []
    real_train, real_grad = apm.train_student, apm.loss_and_gradient
    monkeypatch.setattr(apm, "train_student", lambda *a, **k: log.append("S") or real_train(*a, **k))
    monkeypatch.setattr(apm, "loss_and_gradient", lambda *a, **k: log.append("G") or real_grad(*a, **k))
    images, labels = data(18)
    result = distill_adversarial(config(iterations=5, mid_gap=1), images, labels, 3, teacher_files(log))
    assert "".join(log) == "TSGG" + "TSGG" + "TSG" + "T"  # refreshes at 1, 3, 5; one more teacher labels
    assert result.soft_labels.shape == (6, 3)
    assert [row["iteration"] for row in result.history] == [1, 2, 3, 4, 5]
    assert result.lr == 0.02 and all(row["lr"] == 0.02 for row in result.history)


def test_distillation_is_deterministic_and_ascends_the_disagreement():
    # the paper's reading (one subset per refresh), so the same images are updated against the same nets
    images, labels = data(18)
    cfg = config(iterations=6, mid_gap=10, lr_img=0.05, batch_syn=4, update_syn=3, apm_subset="refresh")
    first = distill_adversarial(cfg, images, labels, 3, teacher_files())
    again = distill_adversarial(cfg, images, labels, 3, teacher_files())
    assert torch.equal(first.images, again.images) and torch.equal(first.soft_labels, again.soft_labels)
    assert [row["loss"] for row in first.history] == [row["loss"] for row in again.history]
    losses = [row["loss"] for row in first.history]  # one refresh: the same nets, so the loss must fall
    assert all(b < a for a, b in zip(losses, losses[1:]))
    start, _ = apm.init_synthetic(images, labels, 3, 2, "real", apm.generator(0, "init"))
    moved = (first.images - start).flatten(1).abs().sum(1) > 0
    assert int(moved.sum()) == 4  # only the batch_syn selected images move
    draws = teacher_files()
    next(draws)  # the one refresh's teacher; the next labels the result
    with torch.no_grad():
        assert torch.allclose(first.soft_labels, net_from(next(draws))(first.images))


@pytest.mark.parametrize("subset,draws", [("iteration", 6), ("refresh", 2)])
def test_apm_draws_a_fresh_subset_every_iteration_as_its_code_and_per_refresh_as_its_paper(monkeypatch, subset,
                                                                                          draws):
    drawn, trained, updated = [], [], []
    real_draw, real_train, real_grad = apm.draw_subset, apm.train_student, apm.loss_and_gradient
    monkeypatch.setattr(apm, "draw_subset", lambda *a: drawn.append(real_draw(*a)) or drawn[-1])
    monkeypatch.setattr(apm, "train_student", lambda x, *a, **k: trained.append(x) or real_train(x, *a, **k))
    monkeypatch.setattr(apm, "loss_and_gradient", lambda x, *a, **k: updated.append(x) or real_grad(x, *a, **k))
    images, labels = data(18)
    cfg = config(iterations=6, mid_gap=2, batch_syn=3, apm_subset=subset)
    distill_adversarial(cfg, images, labels, 3, teacher_files())
    assert len(drawn) == draws and len(trained) == 2  # students are refreshed at iterations 1 and 4 either way
    assert torch.equal(trained[0], updated[0]) and torch.equal(trained[1], updated[3])  # on that iteration's draw
    if subset == "iteration":  # a fixed seed still gives a new subset at each iteration of a refresh period
        assert all(not torch.equal(a, b) for a, b in zip(drawn, drawn[1:]))
    assert all(len(x) == 3 for x in updated)
    assert DistillConfig(method="apm", kind="adversarial", ipc=1).apm_subset == "iteration"


def net_from(trajectory: torch.Tensor) -> nn.Module:
    return snapshot_model(trajectory, MODEL, 3, torch.zeros(1, 1, 4, 4))


def test_non_finite_iterations_are_skipped_then_stop_the_run():
    images, labels = data(18)
    start = torch.full((6, 1, 4, 4), float("nan"))
    with pytest.raises(DistillationError, match="1 skipped iteration\\(s\\) in a row: a non-finite image loss .* lower lr_img") as err:
        distill_adversarial(config(), images, labels, 3, teacher_files(), init=(start, torch.arange(3).repeat(2)),
                            max_bad=0)
    assert err.value.iteration == 1 and err.value.lr == 0.02
    with pytest.raises(DistillationError, match="3 skipped iteration\\(s\\) in a row") as err:
        distill_adversarial(config(iterations=5), images, labels, 3, teacher_files(),
                            init=(start, torch.arange(3).repeat(2)), max_bad=2)
    assert err.value.iteration == 3


def test_teacher_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="parameters but"):
        net_from(torch.zeros(2, 5))


@pytest.mark.parametrize("field, value", [("disagreement", "kl"), ("checkpoints", 0), ("alpha", -0.1),
                                          ("update_syn", 0), ("checkpoints", 5), ("mid_gap", -1),
                                          ("lr_net", 0.0), ("student_batch", 0), ("lr_img_decay", 0.0)])
def test_config_rejects_bad_apm_values(field, value):
    with pytest.raises(ValueError, match=field):
        config(**{field: value})


def test_config_defaults_are_table_a9():
    cfg = DistillConfig(method="apm", kind="adversarial", ipc=10)
    assert (cfg.student_epochs, cfg.checkpoints, cfg.mid_gap, cfg.lr_net, cfg.alpha, cfg.disagreement,
            cfg.update_syn, cfg.student_batch, cfg.lr_img_decay) == (250, 5, 2, 0.02, 0.1, "l1", None, 256, 1.0)


def test_apm_on_a_host_split_equals_the_device_split_exactly():
    """The real initial images drawn from a HostSplit (uint8 on the host, normalised on the way) are those of the
    whole-split float tensor, so the whole run is bit for bit the same."""
    from distillery.data import HostSplit
    from distillery.data.transform import to_float

    g = torch.Generator().manual_seed(0)
    pixels, labels = torch.randint(0, 256, (18, 1, 4, 4), generator=g, dtype=torch.uint8), torch.arange(18) % 3
    meta = {"mean": [0.47], "std": [0.29]}
    cfg = config(iterations=3, mid_gap=1, batch_syn=4)
    device = distill_adversarial(cfg, to_float(pixels, meta, None), labels, 3, teacher_files())
    host = distill_adversarial(cfg, HostSplit(pixels, meta, None, "cpu"), labels, 3, teacher_files())
    assert torch.equal(host.images, device.images) and torch.equal(host.soft_labels, device.soft_labels)
    assert [row["loss"] for row in host.history] == [row["loss"] for row in device.history]
