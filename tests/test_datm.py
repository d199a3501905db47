"""DATM (Guo et al. 2024) as components: the start-epoch window, learned soft labels (soft cross-entropy, their
gradient in every memory mode), init from correctly classified images, the loss threshold; its config checks,
resume, evaluation protocol and paper config."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from distillery.augment import dsa
from distillery.plan.costtable import write_cost
from distillery.checkpoint import Checkpoint
from distillery.distill import DistillConfig, distill_trajectory
from distillery.distill.components import correct_logits, expert_logits, pick_correct, start_upper_bound
from distillery.distill.matching import Batches, matching_loss, start_epoch, unroll_path
from distillery.evaluate import EvalConfig, train_network
from distillery.metrics import soft_cross_entropy
from distillery.functional import FlatModel
from distillery.models import ConvNet
from distillery.plan import load_config
from distillery.seeds import generator
from conftest import job_counts, snakemake

ROOT = Path(__file__).resolve().parents[1]
DSA = "color_crop_cutout_flip_scale_rotate"


def test_window_upper_bound_grows_linearly_from_current_to_max_over_the_expansion():
    # CIFAR-10 IPC 10 (IPC10.yaml): 10 -> 20 over E = 1000 iterations
    assert [start_upper_bound(done, 10, 20, 1000) for done in (0, 500, 1000, 5000)] == [10, 15, 20, 20]
    assert start_upper_bound(999, 10, 20, 1000) == 19           # ⌊10·999/1000⌋ = 9, as DATM's int()
    assert start_upper_bound(0, None, 4, 1000) == 4             # fixed window (Sequential_Generation False)
    cfg = DistillConfig(method="d", kind="trajectory", ipc=1, min_start_epoch=3, current_max_start_epoch=5,
                        max_start_epoch=9, expansion_end_epoch=100)
    starts = generator(0, "start-epoch")
    early = {start_epoch(cfg, 0, starts) for _ in range(200)}
    late = {start_epoch(cfg, 100, starts) for _ in range(400)}
    assert early == {3, 4} and late == set(range(3, 9))         # [min, upper): the upper bound itself never


def test_a_fixed_window_from_zero_draws_the_same_start_epochs_as_before():
    """MTT's draw randint(T+) and the window's randint(0, T+) consume the same stream: old presets are unchanged."""
    cfg = DistillConfig(method="m", kind="trajectory", ipc=1, max_start_epoch=7)
    a, b = generator(0, "start-epoch"), generator(0, "start-epoch")
    assert [start_epoch(cfg, i, a) for i in range(50)] == [int(torch.randint(7, (1,), generator=b))
                                                           for _ in range(50)]


def test_soft_cross_entropy_equals_a_hand_computation():
    logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, math.log(2), 0.0]], dtype=torch.float64)
    targets = torch.tensor([[0.0, math.log(2), 0.0], [5.0, 5.0, 5.0]], dtype=torch.float64)
    # row 1: softmax(y) = (1/4, 1/2, 1/4), log_softmax(z) = −ln 3 everywhere -> ln 3
    # row 2: softmax(y) uniform, log_softmax(z) = (ln 1/4, ln 1/2, ln 1/4) -> (2 ln 4 + ln 2)/3 = (5/3) ln 2
    expected = (math.log(3) + 5 / 3 * math.log(2)) / 2
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(expected, rel=1e-15)


def test_soft_cross_entropy_is_cross_entropy_for_one_hot_like_logits_in_the_limit():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 1, 2])
    ce = F.cross_entropy(logits, labels)
    gaps = [(soft_cross_entropy(logits, scale * F.one_hot(labels, 4).double()) - ce).abs().item()
            for scale in (1.0, 5.0, 10.0, 20.0)]
    assert all(a > b for a, b in zip(gaps, gaps[1:])) and gaps[0] > 0.1
    # at scale 1000, softmax is exactly one-hot in float64 (e^-1000 underflows): exactly each image's cross-entropy
    hard = 1000.0 * F.one_hot(labels, 4).double()
    for i in range(6):
        assert soft_cross_entropy(logits[i:i + 1], hard[i:i + 1]).item() == F.cross_entropy(logits[i:i + 1],
                                                                                           labels[i:i + 1]).item()


def tiny():
    """A float64 ConvNet on 9 6x6 images of 3 classes, its start, a nearby target and learned logits."""
    torch.manual_seed(0)
    student = FlatModel(ConvNet(1, 3, 6, width=4, depth=1).double())
    images = torch.randn(9, 1, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    logits = torch.randn(9, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    start = student.flatten()
    target = start + 0.05 * torch.randn(start.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return student, images, logits, start, target


def label_loss(labels: torch.Tensor, memory: str, steps: int, chunk=None) -> torch.Tensor:
    """The matching loss after `steps` inner steps on the soft labels `labels` (batch 4 of 9, DSA), with fresh
    batch and DSA generators, so every call sees the same batches and augmentations."""
    student, images, _, start, target = tiny()
    lr = torch.tensor(0.1, dtype=torch.float64)
    path = unroll_path(student, start.requires_grad_(True), images, labels, lr, steps,
                       Batches(9, 4, generator(0, "batches"), images.device), generator(0, "dsa"), DSA,
                       memory=memory, chunk=chunk)
    return matching_loss(path[-1], start.detach(), target)


def directional(memory: str, steps: int, chunk=None) -> tuple[float, float]:
    """(⟨∂L/∂y, v⟩ from autograd under `memory`, the central finite difference of L along v) for a random v."""
    _, _, logits, _, _ = tiny()
    v = torch.randn(logits.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    y = logits.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(label_loss(y, memory, steps, chunk), y)
    h = 1e-6
    fd = (label_loss(logits + h * v, "full", steps) - label_loss(logits - h * v, "full", steps)).item() / (2 * h)
    return float((grad * v).sum()), fd


@pytest.mark.parametrize("memory,chunk", [("full", None), ("recompute", None), ("recompute", 3), ("full", 2)])
def test_soft_label_gradient_equals_finite_differences_in_the_exact_modes(memory, chunk):
    analytic, fd = directional(memory, steps=5, chunk=chunk)
    assert abs(fd) > 1e-4 and analytic == pytest.approx(fd, rel=1e-6)


def first_order_label_gradient(steps: int) -> torch.Tensor:
    """TESLA's approximation by plain autograd (an independent reference for `constant`): each step's gradient at a
    detached θ_i, so θ_N depends on the labels only through each g_i's direct dependence on its batch's labels."""
    student, images, logits, start, target = tiny()
    y = logits.clone().requires_grad_(True)
    batches, aug, theta = Batches(9, 4, generator(0, "batches"), images.device), generator(0, "dsa"), start
    for _ in range(steps):
        idx = batches.next()
        at = theta.detach().requires_grad_(True)
        loss = soft_cross_entropy(student(at, dsa(images[idx], aug, DSA)), y[idx])
        (grad,) = torch.autograd.grad(loss, at, create_graph=True)
        theta = theta - 0.1 * grad
    return torch.autograd.grad(matching_loss(theta, start, target), y)[0]


def test_soft_label_gradient_in_constant_mode_is_exact_for_one_step_and_first_order_beyond():
    analytic, fd = directional("constant", steps=1)
    assert analytic == pytest.approx(fd, rel=1e-6)
    _, _, logits, _, _ = tiny()
    y = logits.clone().requires_grad_(True)
    (constant,) = torch.autograd.grad(label_loss(y, "constant", 5), y)
    assert torch.allclose(constant, first_order_label_gradient(5), rtol=1e-9, atol=1e-12)
    analytic, fd = directional("constant", steps=5)
    assert abs(analytic - fd) / abs(fd) == pytest.approx(0.610, abs=0.001)  # the dropped Hessian terms, N = 5


def classifier_of(correct: set[int], num_classes: int, labels: torch.Tensor):
    """A fake expert: images are 1-pixel tensors holding their own index; it classifies exactly `correct` right."""
    def classify(x: torch.Tensor) -> torch.Tensor:
        idx = x.view(len(x), -1)[:, 0].long()
        predicted = torch.tensor([int(labels[i]) if int(i) in correct else (int(labels[i]) + 1) % num_classes
                                  for i in idx])
        return F.one_hot(predicted, num_classes).double() * (1 + idx[:, None].double())
    return classify


def test_init_correct_picks_only_correctly_classified_images_then_the_next_experts():
    labels = torch.arange(2).repeat(10)                      # 20 images, 10 per class
    images = torch.arange(20, dtype=torch.float64).view(20, 1, 1, 1)
    first = classifier_of({0, 1, 2, 3}, 2, labels)           # class 0: images 0, 2; class 1: images 1, 3
    everything = classifier_of(set(range(20)), 2, labels)
    picked, syn_labels = pick_correct(images, labels, 2, 2, [first, everything], generator(0, "init"))
    assert syn_labels.tolist() == [0, 0, 1, 1]
    assert sorted(picked.view(-1).long().tolist()) == [0, 1, 2, 3]   # only expert 0's correct ones suffice
    picked, _ = pick_correct(images, labels, 2, 4, [first, everything], generator(0, "init"))
    chosen = picked.view(-1).long().tolist()
    assert {0, 2} <= set(chosen[:4]) and {1, 3} <= set(chosen[4:]) and len(set(chosen)) == 8
    assert all(labels[i] == c for c, i in zip([0] * 4 + [1] * 4, chosen))
    with pytest.raises(ValueError, match="classify only 2 of class 0's 10 training images correctly, fewer than "
                                         "IPC 3; lower the IPC"):
        pick_correct(images, labels, 2, 3, [first], generator(0, "init"))


def test_initial_soft_labels_average_only_the_experts_that_classify_each_image_correctly():
    labels = torch.tensor([0, 1])
    images = torch.tensor([0.0, 1.0], dtype=torch.float64).view(2, 1, 1, 1)
    a = lambda x: torch.tensor([[2.0, 0.0], [1.0, 0.0]], dtype=torch.float64)   # right on 0, wrong on 1
    b = lambda x: torch.tensor([[4.0, 1.0], [0.0, 3.0]], dtype=torch.float64)   # right on both
    assert correct_logits(images, labels, [a, b]).tolist() == [[3.0, 0.5], [0.0, 3.0]]
    with pytest.raises(ValueError, match="classified correctly by no expert"):
        correct_logits(images, labels, [a])


class Experts:
    """Trajectories in turn, with the state()/load_state() a checkpoint needs; raises after `fail_after` draws."""

    def __init__(self, trajectories, fail_after=None):
        self.trajectories, self.drawn, self.fail_after = trajectories, 0, fail_after

    def __iter__(self):
        return self

    def __next__(self):
        if self.fail_after is not None and self.drawn == self.fail_after:
            raise KeyboardInterrupt("killed")
        self.drawn += 1
        return self.trajectories[(self.drawn - 1) % len(self.trajectories)]

    def state(self):
        return {"drawn": self.drawn}

    def load_state(self, state):
        self.drawn = state["drawn"]


def trajectories(student: FlatModel, count: int = 2, epochs: int = 6) -> list[torch.Tensor]:
    """Random-walk 'experts' from the student's initial weights (float32, as stored experts)."""
    out = []
    for k in range(count):
        steps = 0.02 * torch.randn(epochs, student.num_params, generator=torch.Generator().manual_seed(10 + k))
        out.append(torch.cat([student.flatten()[None].float(), student.flatten().float() + steps.cumsum(0)]))
    return out


def datm_run(tmp_path=None, fail_after=None, **changes):
    torch.manual_seed(0)
    student = FlatModel(ConvNet(1, 3, 6, width=4, depth=1))
    images = torch.randn(12, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(3).repeat(4)
    experts = trajectories(student)
    classifiers = [lambda x, w=t[-1]: expert_logits(student, w, x) for t in experts]
    settings = dict(method="d", kind="trajectory", ipc=2, iterations=6, syn_steps=3, expert_epochs=2,
                    max_start_epoch=4, min_start_epoch=1, current_max_start_epoch=2, expansion_end_epoch=4,
                    batch_syn=4, dsa=DSA, lr_img=10.0, lr_teacher=0.05, learn_labels=True, lr_y=5.0)
    cfg = DistillConfig(**{**settings, **changes})
    checkpoint = Checkpoint(tmp_path / "ckpt.pt", 3, {"test": 1}) if tmp_path else None
    return distill_trajectory(cfg, images, labels, 3, student, Experts(experts, fail_after), checkpoint=checkpoint,
                              classifiers=classifiers), classifiers, images


def test_learned_labels_start_at_expert_logits_move_and_resume_bit_for_bit(tmp_path):
    whole, classifiers, _ = datm_run()
    assert whole.soft_labels.shape == (6, 3) and whole.soft_labels.dtype == torch.float32
    assert not torch.equal(whole.soft_labels, datm_run(iterations=1)[0].soft_labels)  # they learn
    assert [row["start_epoch"] for row in whole.history][:2] == [1, 1]   # upper 2 at first: window [1, 2)
    with pytest.raises(KeyboardInterrupt):
        datm_run(tmp_path, fail_after=4)                   # killed in iteration 5, after the checkpoint at 3
    resumed, _, _ = datm_run(tmp_path)
    assert torch.equal(resumed.images, whole.images) and torch.equal(resumed.soft_labels, whole.soft_labels)
    assert resumed.lr == whole.lr and resumed.history[3:] == [
        {**row, "seconds": got["seconds"]} for row, got in zip(whole.history[3:], resumed.history[3:])]


def test_n_iterations_are_n_updates_the_set_datm_saves_at_its_last_iteration():
    """DATM.py:340 runs `range(0, Iteration+1)`, but at it = Iteration it evaluates and saves the set (:344, :389-401)
    before that iteration's update (:554-559): the saved set has Iteration updates, as ours after `iterations`."""
    three, _, _ = datm_run(iterations=3)
    two, _, _ = datm_run(iterations=2)
    assert [(row["iteration"], row["skipped"]) for row in three.history] == [(1, 0), (2, 0), (3, 0)]
    assert not torch.equal(three.images, two.images) and three.history[:2] == [
        {**row, "seconds": got["seconds"]} for row, got in zip(two.history, three.history)]


def test_learned_labels_initialised_from_the_first_experts_logits_without_init_correct():
    result, classifiers, images = datm_run(iterations=1, lr_y=1e-30, lr_img=1e-30)
    # real init draws with generator(seed, "init"); its logits under expert 0 are the labels (≈ unchanged at lr 1e-30)
    from distillery.distill.init import init_synthetic
    syn, _ = init_synthetic(images, torch.arange(3).repeat(4), 3, 2, "real", generator(0, "init"))
    assert torch.allclose(result.soft_labels, classifiers[0](syn), atol=1e-6)


def test_an_iteration_above_the_threshold_updates_nothing_and_is_logged_apart_from_the_guard():
    start, _, _ = datm_run(iterations=1, lr_y=1e-30, lr_img=1e-30, lr_lr=1e-30)
    skipped, _, _ = datm_run(iterations=12, threshold=1e-9)   # every loss is above: 12 > max_bad 10 in a row
    assert [row["over_threshold"] for row in skipped.history] == [1] * 12
    assert [row["skipped"] for row in skipped.history] == [1] * 12
    assert torch.equal(skipped.images, start.images) and skipped.lr == pytest.approx(0.05)
    assert torch.allclose(skipped.soft_labels, start.soft_labels, atol=1e-6)
    kept, _, _ = datm_run(threshold=1e9)
    assert [row["over_threshold"] for row in kept.history] == [0] * 6 and not torch.equal(kept.images, start.images)


@pytest.mark.parametrize("changes,needle", [
    (dict(min_start_epoch=5, max_start_epoch=5), "min_start_epoch=5 must be in [0, max_start_epoch 5)"),
    (dict(current_max_start_epoch=30), "current_max_start_epoch=30 must be in (min_start_epoch 0, max_start_epoch "
                                       "25]"),
    (dict(min_start_epoch=4, current_max_start_epoch=4), "current_max_start_epoch=4 must be in (min_start_epoch 4"),
    (dict(expansion_end_epoch=0), "expansion_end_epoch=0 must be at least 1 iteration"),
    (dict(threshold=0.0), "threshold=0.0 must be positive"),
    (dict(lr_y=0.0), "lr_y=0.0 must be a positive learning rate"),
    (dict(momentum_y=1.0), "momentum_y=1.0 must be in [0, 1)"),
    (dict(learn_labels="yes"), "learn_labels='yes' must be true or false"),
    (dict(kind="adversarial", learn_labels=True), "kind='adversarial' does not combine with learn_labels=True"),
    (dict(kind="coreset", init="correct"), "kind='coreset' does not combine with init='correct'"),
    (dict(kind="adversarial", threshold=1.0), "does not combine with threshold=1.0"),
    (dict(init="right"), "init='right' is not one of real, noise, representative, correct"),
])
def test_bad_datm_settings_are_refused_naming_the_field(changes, needle):
    with pytest.raises(ValueError) as err:
        DistillConfig(**{"method": "d", "kind": "trajectory", "ipc": 1, **changes})
    assert needle in str(err.value)


def test_soft_ce_protocol_trains_on_the_learned_logits_with_soft_cross_entropy():
    """Epoch 1 (epochs 0 and 1, the decay after epoch 1 comes after the last) of one full batch without DSA: two
    SGD steps (momentum 0.9, wd 5e-4) on the soft cross-entropy of the learned logits."""
    from distillery.models import build_model
    from distillery.seeds import seeded

    images = torch.randn(6, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    logits = 3 * torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    cfg = EvalConfig(epochs=1, batch=6, dsa="", soft_labels=True, soft_loss="soft_ce")
    trained = train_network(images, logits, 0.05, "ConvNetD1W16", 3, 0, cfg)
    with seeded(0, "eval-init"):
        by_hand = build_model("ConvNetD1W16", 1, 3, 6)
    params, velocity = list(by_hand.parameters()), None
    for _ in range(2):
        grads = torch.autograd.grad(soft_cross_entropy(by_hand(images), logits), params)
        grads = [g + 5e-4 * p.detach() for g, p in zip(grads, params)]
        velocity = grads if velocity is None else [0.9 * v + g for v, g in zip(velocity, grads)]
        with torch.no_grad():
            for p, v in zip(params, velocity):
                p -= 0.05 * v
    for p, q in zip(params, trained.parameters()):
        assert torch.allclose(q, p, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="soft_loss='kl' is not one of l1, soft_ce"):
        EvalConfig(soft_loss="kl")


def test_datm_paper_config_dry_run_lists_exactly_its_cells(tmp_path):
    """Table 1's 12 DATM cells, the CIFAR-10 table's MTT/FTD cells, DATM's CIFAR-10 images with hard labels too."""
    result = snakemake(tmp_path, None, "-n", "--cores", "2", "--configfile", str(ROOT / "config/paper/datm.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout) == {
        "all": 1, "cost": 1,
        "prepare_data": 3, "fit_zca": 3,   # cifar10, cifar100, tiny-imagenet (DATM's Tiny yamls: zca True)
        "train_expert": 700,     # gsam100 x 3 datasets; CIFAR-10 MTT sgd zca/std and FTD gsam_a03 zca / gsam std
        "distill": 18,           # DATM 5 + 4 + 3; MTT and FTD 3 each
        "evaluate": 115,         # 5 seeds x (12 soft_ce + 6 MTT/FTD + 5 DATM hard-label)
        "table": 3, "table_figure": 1, "plot_cell": 18}  # every cell logs: images and curves in one job


def test_datm_paper_cells_fit_80_gb_by_memory_auto(tmp_path):
    config = load_config(ROOT, "config/paper/datm.yaml")
    write_cost(config, "gpu", "config/paper/datm.yaml", tmp_path / "c.csv", tmp_path / "d.csv")
    rows = [line.split(",") for line in (tmp_path / "d.csv").read_text().splitlines()]
    header, rows = rows[0], [dict(zip(rows[0], row)) for row in rows[1:]]
    datm = [row for row in rows if row["method"] == "datm"]
    assert len(datm) == 12 and all(row["fits"] == "True" for row in rows)
    assert all(float(row["peak_gpu_gb"]) < 80 for row in rows)
    assert {row["memory"] for row in datm} == {"full", "recompute"}
    memory = {(row["dataset"], row["ipc"]): row["memory"] for row in datm}
    assert memory[("cifar10", "1")] == "full" and memory[("cifar10", "1000")] == "recompute"
