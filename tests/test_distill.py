import pytest
import torch

from distillery.distill import DistillConfig, distill_trajectory, init_synthetic, matching_loss, unroll
from distillery.distill.matching import Batches
from distillery.seeds import generator
from distillery.synset import DistillationError
from conftest import config, make_problem, tiny_student


def unrolled_loss(student, start, target, images, labels, lr, steps=3, batch=None, strategy="color_crop_flip"):
    batches = Batches(len(images), batch, generator(0, "batches"), images.device)
    theta = unroll(student, start, images, labels, lr, steps, batches, generator(0, "dsa"), strategy)
    return matching_loss(theta, start, target)


def test_functional_call_matches_module():
    student = tiny_student()
    x = torch.randn(5, 1, 4, 4)
    assert torch.allclose(student(student.flatten(), x), student.module(x))


def test_matching_loss_is_exactly_zero_when_the_student_reaches_the_target():
    student = tiny_student()
    images, labels = torch.randn(6, 1, 4, 4), torch.arange(3).repeat(2)
    start = (student.flatten() + 0.1).requires_grad_(True)
    lr = torch.tensor(0.05)
    batches = Batches(6, 4, generator(0, "batches"), images.device)
    reached = unroll(student, start, images, labels, lr, 3, batches, generator(0, "dsa"), "color_crop_flip").detach()
    assert unrolled_loss(student, start, reached, images, labels, lr, batch=4).item() == 0.0
    assert matching_loss(reached, start, reached).item() == 0.0
    far = reached + 1.0
    assert unrolled_loss(student, start, far, images, labels, lr, batch=4).item() > 0


def test_meta_gradient_matches_finite_differences():
    """d loss / d images through 3 unrolled steps (with DSA and minibatches) in float64."""
    student = tiny_student(torch.float64)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    labels = torch.arange(3).repeat(2)
    start = student.flatten().requires_grad_(True)
    target = start.detach() + 0.05 * torch.randn(start.shape, generator=g, dtype=torch.float64)
    lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    loss = unrolled_loss(student, start, target, images, labels, lr, batch=4)
    grad_images, grad_lr = torch.autograd.grad(loss, (images, lr))
    eps = 1e-6
    for index in [(0, 0, 1, 2), (3, 0, 0, 0), (5, 0, 3, 3)]:
        bumped = [images.detach().clone() for _ in range(2)]
        bumped[0][index] += eps
        bumped[1][index] -= eps
        plus, minus = (unrolled_loss(student, start, target, b, labels, lr, batch=4).item() for b in bumped)
        assert grad_images[index].item() == pytest.approx((plus - minus) / (2 * eps), rel=1e-5, abs=1e-9)
    plus = unrolled_loss(student, start, target, images, labels, lr + eps, batch=4).item()
    minus = unrolled_loss(student, start, target, images, labels, lr - eps, batch=4).item()
    assert grad_lr.item() == pytest.approx((plus - minus) / (2 * eps), rel=1e-5)


def test_batches_cover_every_image_once_per_pass_taking_the_chunks_from_the_last_as_mtt():
    """MTT's inner loop splits a permutation into chunks and pops them (distill.py:345-349): the short chunk first."""
    batches = Batches(10, 4, generator(0, "b"), torch.device("cpu"))
    perm = torch.randperm(10, generator=generator(0, "b"))
    seen = [batches.next() for _ in range(3)]
    assert [t.tolist() for t in seen] == [perm[8:].tolist(), perm[4:8].tolist(), perm[:4].tolist()]
    assert [len(batches.next()) for _ in range(3)] == [2, 4, 4]


def test_real_init_draws_ipc_images_of_each_class():
    labels = torch.arange(3).repeat_interleave(5)
    images = torch.arange(15, dtype=torch.float32).view(15, 1, 1, 1)
    syn, syn_labels = init_synthetic(images, labels, 3, 2, "real", generator(0, "init"))
    assert syn_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert (labels[syn.view(-1).long()] == syn_labels).all()
    assert len(set(syn.view(-1).tolist())) == 6
    with pytest.raises(ValueError, match="IPC 6 is larger than class 0's 5 training images"):
        init_synthetic(images, labels, 3, 6, "real", generator(0, "init"))


def test_distillation_lowers_the_matching_loss_and_is_deterministic():
    images, labels, student, trajectories = make_problem()
    result = distill_trajectory(config(), images, labels, 3, student, iter(trajectories * 100))
    losses = [row["loss"] for row in result.history]
    assert len(losses) == 15 and result.images.shape == (6, 1, 4, 4)
    assert sum(losses[-5:]) < sum(losses[:5])
    again = distill_trajectory(config(), images, labels, 3, student, iter(trajectories * 100))
    assert torch.equal(result.images, again.images) and result.lr == again.lr


def test_bad_iterations_are_skipped_counted_and_stop_the_run_after_max_bad_in_a_row():
    images, labels, student, trajectories = make_problem()
    # lr_lr 5e-5: after two steps every lr step would make the learned lr negative; those iterations change nothing
    result = distill_trajectory(config(lr_lr=5e-5), images, labels, 3, student, iter(trajectories * 100), max_bad=100)
    skipped = [row for row in result.history if row["skipped"]]
    assert 0 < len(skipped) < 15 and result.lr > 0
    for row in skipped:
        previous = result.history[row["iteration"] - 2]["lr"] if row["iteration"] > 1 else 0.05
        assert row["lr"] == pytest.approx(previous), "a skipped iteration leaves the learned lr as it was"
    with pytest.raises(DistillationError, match="4 skipped iteration\\(s\\) in a row .* learned learning rate would "
                                                "become .* lower lr_img .* or lr_lr") as err:
        distill_trajectory(config(lr_lr=10.0, iterations=200), images, labels, 3, student, iter(trajectories * 100),
                           max_bad=3)
    assert err.value.iteration >= 4
    with pytest.raises(DistillationError, match="1 skipped iteration\\(s\\) in a row .* the matching loss \\((nan|inf)\\) or a "
                                                "gradient is not finite") as err:
        distill_trajectory(config(lr_img=1e30), images, labels, 3, student, iter(trajectories * 100), max_bad=0)


def test_a_nan_in_the_images_gradient_skips_the_step_and_keeps_the_images():
    images, labels, student, trajectories = make_problem()
    bad = [t.clone() for t in trajectories]
    bad[0][2:] = float("nan")  # the first expert's targets are NaN: its iterations must be skipped
    result = distill_trajectory(config(iterations=6), images, labels, 3, student, iter(bad * 100), max_bad=10)
    assert any(row["skipped"] for row in result.history)
    assert torch.isfinite(result.images).all(), "no NaN reached the images"


def test_short_experts_are_rejected():
    images, labels, student, trajectories = make_problem()
    with pytest.raises(ValueError, match="needs 5 .*train longer experts"):
        distill_trajectory(config(max_start_epoch=4, expert_epochs=2), images, labels, 3, student,
                           iter(trajectories * 100))


@pytest.mark.parametrize("field,value,message", [
    ("ipc", 0, "ipc=0 must be at least 1"),
    ("lr_img", -1.0, "lr_img=-1.0 must be a positive learning rate"),
    ("init", "zeros", "init='zeros' is not one of real, noise"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        config(**{field: value})


def test_config_rejects_unknown_settings():
    with pytest.raises(ValueError, match="unknown setting\\(s\\) syn_step;"):
        DistillConfig.from_dict({"method": "mtt", "kind": "trajectory", "ipc": 1, "syn_step": 3})


def test_ema_result_follows_the_update_rule_and_never_feeds_back():
    images, labels, student, trajectories = make_problem()
    raw = distill_trajectory(config(iterations=6), images, labels, 3, student, iter(trajectories * 100))
    ema = distill_trajectory(config(iterations=6, ema_decay=0.5), images, labels, 3, student,
                             iter(trajectories * 100))
    assert [r["loss"] for r in raw.history] == [r["loss"] for r in ema.history], "the EMA must not feed back"
    assert ema.lr == raw.lr
    assert not torch.equal(ema.images, raw.images)
    zero = distill_trajectory(config(iterations=6, ema_decay=0.0), images, labels, 3, student,
                              iter(trajectories * 100))
    assert torch.equal(zero.images, raw.images), "decay 0 keeps only the latest images"
    # by hand: e_0 = x_0, e_k = d e_{k-1} + (1-d) x_k over the 6 updates
    steps = [distill_trajectory(config(iterations=k), images, labels, 3, student, iter(trajectories * 100)).images
             for k in range(1, 7)]
    e = init_synthetic(images, labels, 3, 2, "real", generator(0, "init"))[0]
    for x in steps:
        e = 0.5 * e + 0.5 * x
    assert torch.allclose(ema.images, e, atol=1e-6)


def test_gaussian_start_perturbation_has_the_requested_scale():
    from distillery.distill.components import perturb_start

    start = torch.zeros(40_000)
    noisy = perturb_start(start, config(perturb="gaussian", perturb_scale=0.01), generator(0, "perturb"))
    assert noisy.std().item() == pytest.approx(0.01, rel=0.03) and abs(noisy.mean().item()) < 5e-4
    assert perturb_start(start, config(), generator(0, "perturb")) is start
    images, labels, student, trajectories = make_problem()
    plain = distill_trajectory(config(iterations=3), images, labels, 3, student, iter(trajectories * 100))
    robust = distill_trajectory(config(iterations=3, perturb="gaussian", perturb_scale=0.01), images, labels, 3,
                                student, iter(trajectories * 100))
    assert plain.history[0]["loss"] != robust.history[0]["loss"]
    with pytest.raises(ValueError, match="perturb_scale=0.0 must be positive with perturb=gaussian"):
        config(perturb="gaussian")


def test_trajectory_matching_on_a_host_split_equals_the_device_split_exactly():
    from distillery.data import HostSplit
    from distillery.data.transform import to_float

    images, labels, student, trajectories = make_problem()
    pixels = (images.clamp(-2, 2) * 60 + 128).round().to(torch.uint8)  # the problem's images as uint8
    meta = {"mean": [0.5], "std": [0.25]}
    device = distill_trajectory(config(iterations=4), to_float(pixels, meta, None), labels, 3, student,
                                iter(trajectories * 10))
    host = distill_trajectory(config(iterations=4), HostSplit(pixels, meta, None, "cpu"), labels, 3, student,
                              iter(trajectories * 10))
    assert torch.equal(host.images, device.images) and host.lr == device.lr


def test_a_coreset_job_on_the_host_split_writes_the_device_splits_set(tmp_path, caplog):
    """run_distillation with a GPU too small for digits (gpu_memory_gb 1e-6) keeps the split on the host and logs it;
    the random real subset is the one the whole-split path picks."""
    from distillery.data import prepare
    from distillery.distill.run import run_distillation
    from distillery.synset import load_synset

    prepare("digits", tmp_path / "raw", tmp_path / "digits")
    method = {"method": "random", "kind": "coreset", "ipc": 3, "select": "random"}
    sets = {}
    for name, gpu_gb in (("device", None), ("host", 1e-6)):
        with caplog.at_level("INFO", logger="distillery"):
            run_distillation(method, tmp_path / "digits", tmp_path / f"{name}.pt", tmp_path / f"{name}.csv",
                             gpu_memory_gb=gpu_gb)
        sets[name] = load_synset(tmp_path / f"{name}.pt")
    assert torch.equal(sets["host"]["images"], sets["device"]["images"])
    assert torch.equal(sets["host"]["labels"], sets["device"]["labels"]) and sets["host"]["images"].shape[0] == 30
    assert "digits train split: 1347 images kept on the host as uint8" in caplog.text
