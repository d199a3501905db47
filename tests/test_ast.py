"""AST's student-side switches: balanced inner loss, intermediate matching, filter perturbation, representative init."""
import math

import pytest
import torch

from distillery.distill import distill_trajectory
from distillery.distill.components import (balance_coefficient, filter_mask, filter_perturbation,
                                          intermediate_points, weight_perturbation)
from distillery.distill.coreset import cluster_quotas, kmeans_indices, representative_picks, select_coreset
from distillery.distill.matching import Batches, matching_loss, trajectory_loss, unroll_path
from distillery.seeds import generator
from conftest import config, make_problem, tiny_student

# The student-side switches as the paper states them (ast_paper) and as AST's distill.py runs them (ast).
AST = dict(balance=True, balance_base=math.e, intermediate="varied", intermediate_spacing="floor", perturb="filter",
           perturb_scale=0.1)
AST_CODE = dict(balance=True, intermediate="varied", perturb="weight", perturb_scale=1.0, inner_momentum=0.9)


def test_balance_coefficient_on_both_sides_of_the_middle_in_both_bases():
    assert balance_coefficient(10, 20, 8.0, math.e) == pytest.approx(math.log(8))
    assert balance_coefficient(15, 20, 8.0, math.e) == pytest.approx(math.log(13))
    assert balance_coefficient(4, 20, 8.0, math.e) == pytest.approx(1 / math.log(14))
    # distill.py:532-536: CE × log5(t − h + 8) from h = T+ // 2 on, CE / log5(h − t + 8) below
    assert balance_coefficient(10, 20, 8.0, 5.0) == pytest.approx(math.log(8) / math.log(5))
    assert balance_coefficient(19, 20, 8.0, 5.0) == pytest.approx(math.log(17, 5))
    assert balance_coefficient(0, 20, 8.0, 5.0) == pytest.approx(1 / math.log(18, 5))
    for base in (math.e, 5.0):
        values = [balance_coefficient(t, 20, 8.0, base) for t in range(20)]
        assert values == sorted(values) and values[0] < 1 < values[-1]
    assert config().balance_base == 5.0, "the code's base is the default"


@pytest.mark.parametrize("steps,epochs,floor,multiple", [
    (20, 2, [10], [10]), (30, 3, [10, 20], [10, 20]), (10, 4, [2, 5, 7], [2, 4, 6]), (20, 3, [6, 13], [6, 12]),
    (5, 1, [], [])])
def test_intermediate_points_of_the_paper_and_the_code(steps, epochs, floor, multiple):
    assert intermediate_points(steps, epochs, "floor") == floor         # ⌊i·N/M⌋ (Sec. IV-D1)
    assert intermediate_points(steps, epochs, "multiple") == multiple   # i·(N // M) (distill.py:493)


def test_filter_perturbation_scales_each_filter_to_its_norm():
    student = tiny_student()
    start = student.flatten()
    moved = filter_perturbation(start, student.shapes, 0.1, generator(0, "perturb"))
    for before, after, shape in zip(start.split(student.numels), moved.split(student.numels), student.shapes):
        if len(shape) < 2:
            assert torch.equal(before, after), "biases and norm parameters stay put"
            continue
        step, rows = (after - before).view(shape[0], -1), before.view(shape[0], -1)
        assert torch.allclose(step.norm(dim=1), 0.1 * rows.norm(dim=1), rtol=1e-5)
    assert torch.equal(moved, filter_perturbation(start, student.shapes, 0.1, generator(0, "perturb")))
    assert not torch.equal(moved, filter_perturbation(start, student.shapes, 0.1, generator(1, "perturb")))
    assert filter_mask(student) == [len(shape) >= 2 for shape in student.shapes]


def test_weight_perturbation_is_the_codes_weightperturb():
    """distill.py:252-267: per 4-D weight W' = W + α·(D/‖D‖_F)⊙W, D ~ N(0, 1); everything else unchanged."""
    student = tiny_student(torch.float64)
    start = student.flatten()
    moved = weight_perturbation(start, student.shapes, 1.0, generator(0, "perturb"))
    noise, conv = generator(0, "perturb"), 0
    for before, after, shape in zip(start.split(student.numels), moved.split(student.numels), student.shapes):
        if len(shape) != 4:
            assert torch.equal(before, after), "only conv weights move (not the linear weight, biases or norms)"
            continue
        conv += 1
        d = torch.randn(shape, generator=noise, dtype=torch.float64).reshape(-1)
        assert torch.equal(after, before + 1.0 * (d / d.norm()) * before), "the hand computation, same draw"
        relative = (after - before) / before
        assert relative.norm().item() == pytest.approx(1.0, rel=1e-12), "‖(W' − W)⊘W‖_F = α"
        assert relative.pow(2).mean().sqrt().item() == pytest.approx(1 / math.sqrt(before.numel()), rel=1e-12)
    assert conv == 1 and sum(len(s) == 2 for s in student.shapes) == 1
    half = weight_perturbation(start, student.shapes, 0.5, generator(0, "perturb"))
    assert torch.allclose(half - start, 0.5 * (moved - start), rtol=1e-12, atol=0), "linear in α"
    assert not torch.equal(moved, weight_perturbation(start, student.shapes, 1.0, generator(1, "perturb")))


def test_one_inner_step_with_momentum_is_the_hand_computed_update():
    """Two student steps of AST's distill.py:548-556: b_0 = g_0, θ_1 = θ_0 − α·g_0; b_1 = 0.9·b_0 + g_1,
    θ_2 = θ_1 − α·b_1 (no dampening, Nesterov or weight decay), in both exact memory modes."""
    student = tiny_student(torch.float64)
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64), torch.arange(3).repeat(2)
    theta0, lr = student.flatten(), torch.tensor(0.1, dtype=torch.float64)
    order = Batches(6, 3, generator(0, "batches"), torch.device("cpu"))
    first, second = order.next(), order.next()

    def grad(theta, idx):
        theta = theta.detach().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(student(theta, images[idx]), labels[idx])
        return torch.autograd.grad(loss, theta)[0]

    g0 = grad(theta0, first)
    theta1 = theta0 - 0.1 * g0
    theta2 = theta1 - 0.1 * (0.9 * g0 + grad(theta1, second))
    for memory in ("full", "recompute", "constant"):
        path = unroll_path(student, theta0.clone().requires_grad_(True), images, labels, lr, 2,
                           Batches(6, 3, generator(0, "batches"), torch.device("cpu")), generator(0, "dsa"), "none",
                           (1,), memory=memory, momentum=0.9)
        assert torch.allclose(path[0], theta1, rtol=0, atol=1e-15) and torch.allclose(path[1], theta2, rtol=0,
                                                                                        atol=1e-15), memory
    plain = unroll_path(student, theta0.clone().requires_grad_(True), images, labels, lr, 2,
                        Batches(6, 3, generator(0, "batches"), torch.device("cpu")), generator(0, "dsa"), "none")
    assert torch.allclose(plain[0], theta1 - 0.1 * grad(theta1, second), rtol=0, atol=1e-15), "momentum 0: SGD"


def expert_path(student, images, labels, t, cfg):
    """A [t + M + 1, P] trajectory whose targets the student reaches exactly from the perturbed start θ*_t."""
    g = torch.Generator().manual_seed(2)
    trajectory = student.flatten() + 0.05 * torch.randn(t + cfg.expert_epochs + 1, student.num_params, generator=g,
                                                        dtype=images.dtype)
    if cfg.perturb == "filter":
        start = filter_perturbation(trajectory[t], student.shapes, cfg.perturb_scale, generator(0, "perturb"),
                                    filter_mask(student))
    else:
        start = weight_perturbation(trajectory[t], student.shapes, cfg.perturb_scale, generator(0, "perturb"))
    nu = balance_coefficient(t, cfg.max_start_epoch, cfg.balance_theta, cfg.balance_base)
    path = unroll_path(student, start.requires_grad_(True), images, labels, torch.tensor(0.1, dtype=images.dtype),
                       cfg.syn_steps, batches(), generator(0, "dsa"), cfg.dsa,
                       intermediate_points(cfg.syn_steps, cfg.expert_epochs, cfg.intermediate_spacing), nu,
                       momentum=cfg.inner_momentum)
    return trajectory, start.detach(), [theta.detach() for theta in path]


def batches():
    return Batches(6, 4, generator(0, "batches"), torch.device("cpu"))


def ast_loss(cfg, student, trajectory, t, images, labels, lr):
    return trajectory_loss(cfg, student, trajectory, t, images, labels, lr, batches(), generator(0, "dsa"),
                           generator(0, "perturb"))[0]


@pytest.mark.parametrize("reading", [AST, AST_CODE])
def test_ast_loss_is_zero_on_target_and_uses_the_perturbed_start_and_weights(reading):
    student = tiny_student(torch.float64)
    cfg = config(syn_steps=6, expert_epochs=3, max_start_epoch=4, dsa="color_crop_flip", **reading)
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64), torch.arange(3).repeat(2)
    lr, t = torch.tensor(0.1, dtype=torch.float64), 1
    trajectory, start, path = expert_path(student, images, labels, t, cfg)
    reached = trajectory.clone()
    reached[t + 1:] = torch.stack(path)
    assert ast_loss(cfg, student, reached, t, images, labels, lr).item() == 0.0
    # elsewhere: L_main + (1/3) L_1 + (2/3) L_2, every denominator from the perturbed start
    expected = matching_loss(path[2], start, trajectory[4])
    for i, beta in ((1, 1 / 3), (2, 2 / 3)):
        expected = expected + beta * matching_loss(path[i - 1], start, trajectory[t + i])
    assert ast_loss(cfg, student, trajectory, t, images, labels, lr).item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("reading", [AST, AST_CODE])
@pytest.mark.parametrize("t", [0, 3])  # ν below and above the middle
def test_ast_meta_gradient_matches_finite_differences(t, reading):
    student = tiny_student(torch.float64)
    cfg = config(syn_steps=4, expert_epochs=2, max_start_epoch=4, dsa="color_crop_flip", **reading)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    labels = torch.arange(3).repeat(2)
    trajectory = student.flatten() + 0.05 * torch.randn(6, student.num_params, generator=g, dtype=torch.float64)
    lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    grad_images, grad_lr = torch.autograd.grad(ast_loss(cfg, student, trajectory, t, images, labels, lr), (images, lr))
    eps = 1e-6
    for index in [(0, 0, 1, 2), (3, 0, 0, 0), (5, 0, 3, 3)]:
        bumped = [images.detach().clone() for _ in range(2)]
        bumped[0][index] += eps
        bumped[1][index] -= eps
        plus, minus = (ast_loss(cfg, student, trajectory, t, b, labels, lr).item() for b in bumped)
        assert grad_images[index].item() == pytest.approx((plus - minus) / (2 * eps), rel=1e-5, abs=1e-9)
    plus = ast_loss(cfg, student, trajectory, t, images, labels, lr + eps).item()
    minus = ast_loss(cfg, student, trajectory, t, images, labels, lr - eps).item()
    assert grad_lr.item() == pytest.approx((plus - minus) / (2 * eps), rel=1e-5)


def clustered(per_class=60, classes=3, clusters=10):
    """Interleaved classes; each class's features form `clusters` tight, far-apart blobs of equal size."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(classes).repeat(per_class)
    blob = (torch.arange(len(labels)) // classes) % clusters
    centres = 100 * torch.randn(classes, clusters, 8, generator=g)
    features = centres[labels, blob] + torch.randn(len(labels), 8, generator=g)
    images = torch.randn(len(labels), 1, 4, 4, generator=g)
    return images, labels, features, blob


@pytest.mark.parametrize("ipc", [1, 10, 50])
def test_kmeans_picks_ipc_distinct_real_images_per_class(ipc):
    images, labels, features, blob = clustered()
    syn, syn_labels = select_coreset("kmeans", images, labels, 3, ipc, generator(0, "init"), features=features)
    assert syn_labels.tolist() == [c for c in range(3) for _ in range(ipc)]
    found = (syn.flatten(1)[:, None] == images.flatten(1)[None]).all(2)
    assert (found.sum(1) == 1).all(), "every synthetic image is exactly one training image"
    rows = found.int().argmax(1)
    assert torch.equal(labels[rows], syn_labels) and len(set(rows.tolist())) == 3 * ipc
    for c in range(3):
        per_blob = torch.bincount(blob[rows[syn_labels == c]], minlength=10).tolist()
        if ipc == 1:
            members = (labels == c).nonzero().squeeze(1)
            nearest = members[(features[members] - features[members].mean(0)).norm(dim=1).argmin()]
            assert rows[c].item() == nearest.item(), "IPC 1 is the image nearest the class-mean feature"
        else:
            assert per_blob == [ipc // 10] * 10, "each cluster gives its share"
    assert torch.equal(kmeans_indices(features, labels, 3, ipc), kmeans_indices(features, labels, 3, ipc))


@pytest.mark.parametrize("ipc", [10, 20])
def test_the_codes_representative_reading_takes_the_rows_nearest_each_of_10_centres(ipc):
    """AST's distill.py:160-175: 10 k-means clusters per class whatever the IPC, then the int(IPC/10) rows nearest
    each centre: on 10 far-apart blobs per class, the rows nearest each blob's mean (written out by hand here)."""
    images, labels, features, blob = clustered()
    chosen = kmeans_indices(features, labels, 3, ipc, 10, 0, per_centre=True)
    assert labels[chosen].tolist() == [c for c in range(3) for _ in range(ipc)]
    for c in range(3):
        expected = []
        for b in range(10):
            members = ((labels == c) & (blob == b)).nonzero().squeeze(1)
            centre = features[members].double().mean(0)
            expected += members[((features[members].double() - centre) ** 2).sum(1).argsort()[:ipc // 10]].tolist()
        assert sorted(chosen[labels[chosen] == c].tolist()) == sorted(expected)
    with pytest.raises(ValueError, match="IPC 1 must be a multiple of init_clusters 10 \\(the code picks none at "
                                         "IPC 1\\); use 'features'"):
        config(init="representative", representative="logits", ipc=1)
    with pytest.raises(ValueError, match="representative='centres' is not one of features, logits"):
        config(representative="centres")


def test_quotas_and_short_clusters():
    assert cluster_quotas([5, 9, 3], 7) == [2, 3, 2]
    assert cluster_quotas([4, 4, 4], 5) == [2, 2, 1], "size ties go to the lower cluster"
    # row 0 is a lone far cluster; rows 1..9 lie on a line around (4, 0)
    feats = torch.tensor([[100.0, 0.0]] + [[float(i), 0.0] for i in range(9)], dtype=torch.float64)
    assert sorted(representative_picks(feats, 6, 2, 0)) == [0, 4, 5, 6, 8, 9]
    with pytest.raises(ValueError, match="'kmeans' needs features"):
        select_coreset("kmeans", feats, torch.zeros(10, dtype=torch.long), 1, 1, generator(0, "init"))


def test_distillation_with_every_ast_switch_runs_lowers_the_loss_and_is_deterministic():
    images, labels, student, trajectories = make_problem()
    cfg = config(init="representative", iterations=20, **AST)
    runs = [distill_trajectory(cfg, images, labels, 3, student, iter(trajectories * 100), features=images.flatten(1))
            for _ in range(2)]
    losses = [row["loss"] for row in runs[0].history]
    assert sum(losses[-5:]) < sum(losses[:5])
    assert torch.equal(runs[0].images, runs[1].images) and runs[0].lr == runs[1].lr
    with pytest.raises(ValueError, match="init 'representative' needs the expert features"):
        distill_trajectory(cfg, images, labels, 3, student, iter(trajectories * 100))


@pytest.mark.parametrize("changes,message", [
    (dict(intermediate="foo"), "intermediate='foo' is not one of none, equal, varied"),
    (dict(intermediate="equal", syn_steps=2, expert_epochs=3), "needs syn_steps \\(2\\) >= expert_epochs \\(3\\)"),
    (dict(balance_theta=1.0), "balance_theta=1.0 must be greater than 1"),
    (dict(balance="yes"), "balance='yes' must be true or false"),
    (dict(perturb="filter"), "perturb_scale=0.0 must be positive with perturb=filter"),
    (dict(init_clusters=0), "init_clusters=0 must be at least 1"),
    (dict(init="mean"), "init='mean' is not one of real, noise, representative"),
    (dict(inner_momentum=1.0), "inner_momentum=1.0 must be in \\[0, 1\\)"),
    (dict(inner_momentum=-0.1), "inner_momentum=-0.1 must be in \\[0, 1\\)"),
    (dict(balance_base=1.0), "balance_base=1.0 must be greater than 1 \\(5 as AST's code, 2.718281828459045"),
    (dict(intermediate_spacing="even"), "intermediate_spacing='even' is not one of multiple, floor"),
    (dict(perturb="weight"), "perturb_scale=0.0 must be positive with perturb=weight"),
    (dict(perturb="dropout", perturb_scale=0.1), "perturb='dropout' is not one of none, gaussian, filter, weight"),
])
def test_config_rejects_bad_ast_values(changes, message):
    with pytest.raises(ValueError, match=message):
        config(**changes)


def test_ast_fields_default_off_and_round_trip():
    cfg = config()
    assert (cfg.balance, cfg.intermediate, cfg.perturb, cfg.init, cfg.inner_momentum) == (
        False, "none", "none", "real", 0.0)
    for reading in (AST, AST_CODE):
        assert type(cfg).from_dict({**config(**reading).to_dict()}) == config(**reading)
    with pytest.raises(ValueError, match="kind='coreset' does not combine with inner_momentum=0.9"):
        type(cfg)(method="random", kind="coreset", ipc=1, inner_momentum=0.9)


def test_run_distillation_representative_init_and_kmeans_coreset_use_expert_0_and_the_code_a_random_one(
        tmp_path):
    from distillery.data import load_meta, load_split, prepare
    from distillery.distill.run import expert_features, run_distillation
    from distillery.synset import load_synset
    from distillery.experts import load_expert, run_expert_training
    from distillery.distill.components import expert_logits
    from distillery.functional import FlatModel
    from distillery.models import build_model

    prepare("digits", tmp_path, tmp_path / "digits")
    expert = tmp_path / "expert0.pt"
    run_expert_training(tmp_path / "digits", expert, "ConvNetD2W16", "sgd", 0, overrides={"epochs": 3, "batch": 64})
    method = dict(method="ast", kind="trajectory", ipc=2, model="ConvNetD2W16", iterations=1, syn_steps=4,
                  expert_epochs=2, max_start_epoch=1, lr_img=1e-12, lr_lr=1e-12, init="representative", **AST)
    meta = run_distillation(method, tmp_path / "digits", tmp_path / "synset.pt", tmp_path / "log.csv",
                            expert_paths=[expert])
    assert meta["init"] == "representative" and meta["intermediate"] == "varied" and meta["balance"] is True
    images, labels = load_split(tmp_path / "digits", "train")
    cfg = type(config()).from_dict(method)
    features = expert_features(cfg, load_meta(tmp_path / "digits"), images, expert)
    picks, _ = select_coreset("kmeans", images, labels, 10, 2, generator(0, "init"), features=features)
    assert torch.allclose(load_synset(tmp_path / "synset.pt")["images"], picks, atol=1e-6), "one tiny step from them"
    coreset = {"method": "kmeans", "kind": "coreset", "select": "kmeans", "ipc": 2, "model": "ConvNetD2W16"}
    run_distillation(coreset, tmp_path / "digits", tmp_path / "kmeans.pt", tmp_path / "kmeans.csv",
                     expert_paths=[expert])
    assert torch.equal(load_synset(tmp_path / "kmeans.pt")["images"], picks)
    # AST's code: the logits of a random expert (role init-expert), the image nearest each of 10 centres at IPC 10
    other = tmp_path / "expert1.pt"
    run_expert_training(tmp_path / "digits", other, "ConvNetD2W16", "sgd", 1, overrides={"epochs": 3, "batch": 64})
    code = {**method, "ipc": 10, "representative": "logits"}
    run_distillation(code, tmp_path / "digits", tmp_path / "code.pt", tmp_path / "code.csv",
                     expert_paths=[expert, other])
    k = int(torch.randint(2, (1,), generator=generator(0, "init-expert")))
    student = FlatModel(build_model("ConvNetD2W16", 1, 10, 8))
    logits = expert_logits(student, load_expert([expert, other][k])[0][-1], images)
    chosen = kmeans_indices(logits, labels, 10, 10, 10, 0, per_centre=True)
    assert torch.allclose(load_synset(tmp_path / "code.pt")["images"], images[chosen], atol=1e-6)
