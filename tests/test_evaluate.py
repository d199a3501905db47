import pytest
import torch

from conftest import ROOT
from distillery.evaluate import EvalConfig, epoch_schedule, evaluate, train_network
from distillery.metrics import accuracy
from distillery.models import build_model
from distillery.plan import eval_config, load_config
from distillery.seeds import seeded

FAST = EvalConfig(epochs=6, batch=8)


def blobs(n_per_class: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat(n_per_class)
    images = torch.randn(len(labels), 1, 8, 8, generator=g) * 0.5
    images[:, :, :4, :4] += (labels == 0).float().view(-1, 1, 1, 1) * 2
    images[:, :, 4:, 4:] += (labels == 1).float().view(-1, 1, 1, 1) * 2
    images[:, :, :4, 4:] += (labels == 2).float().view(-1, 1, 1, 1) * 2
    return images, labels


def test_same_seed_gives_the_same_accuracy_twice():
    images, labels = blobs(4, 0)
    test_images, test_labels = blobs(30, 1)
    first = evaluate(images, labels, 0.01, "ConvNetW16", test_images, test_labels, 3, seed=3, cfg=FAST)
    second = evaluate(images, labels, 0.01, "ConvNetW16", test_images, test_labels, 3, seed=3, cfg=FAST)
    assert first == second
    a = train_network(images, labels, 0.01, "ConvNetW16", 3, seed=3, cfg=FAST)
    b = train_network(images, labels, 0.01, "ConvNetW16", 3, seed=3, cfg=FAST)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_each_seed_starts_from_a_fresh_initialisation():
    images, labels = blobs(4, 0)
    one_epoch = EvalConfig(epochs=1, batch=8, default_lr=1e-12)
    a = train_network(images, labels, 1e-12, "ConvNetW16", 3, seed=0, cfg=one_epoch)
    b = train_network(images, labels, 1e-12, "ConvNetW16", 3, seed=1, cfg=one_epoch)
    assert not torch.equal(next(a.parameters()), next(b.parameters()))


def test_training_on_informative_data_beats_chance():
    images, labels = blobs(10, 0)
    test_images, test_labels = blobs(30, 1)
    acc = evaluate(images, labels, 0.01, "ConvNetW16", test_images, test_labels, 3, seed=0,
                   cfg=EvalConfig(epochs=30, batch=256))
    assert acc > 0.8


def test_accuracy_counts_correct_predictions():
    model = torch.nn.Flatten()
    images = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]], [[[1.0, 0.0]]]])
    assert accuracy(model, images, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)


def test_bad_eval_config():
    with pytest.raises(ValueError, match="at least 1"):
        EvalConfig(epochs=0)


def test_ema_images_are_evaluated_from_a_fresh_network_not_warm_started():
    """FTD's code trains the EMA evaluation on the net already trained on the raw images; ours never shares nets."""
    ema_images, labels = blobs(4, 0)
    raw_images = ema_images + 0.3 * torch.randn(ema_images.shape, generator=torch.Generator().manual_seed(5))
    test_images, test_labels = blobs(30, 1)
    alone = evaluate(ema_images, labels, 0.01, "ConvNetW16", test_images, test_labels, 3, seed=3, cfg=FAST)
    evaluate(raw_images, labels, 0.01, "ConvNetW16", test_images, test_labels, 3, seed=3, cfg=FAST)
    after_raw = evaluate(ema_images, labels, 0.01, "ConvNetW16", test_images, test_labels, 3, seed=3, cfg=FAST)
    assert alone == after_raw


def test_evaluation_on_a_host_test_split_equals_the_device_split(tmp_path):
    """evaluate_synset with a GPU too small for digits' test split (gpu_memory_gb 1e-6) tests on the HostSplit, 1024
    images at a time: the same accuracy as on the whole split."""
    from distillery.data import load_meta, load_split, prepare
    from distillery.synset import save_synset
    from distillery.evaluate import evaluate_synset

    prepare("digits", tmp_path / "raw", tmp_path / "digits")
    images, labels = load_split(tmp_path / "digits", "train")
    meta = {"method": "random", "dataset": "digits", "ipc": 3, "num_classes": 10, "zca": False,
            "dataset_sha256": load_meta(tmp_path / "digits")["sha256"]["train.pt"]}
    save_synset(tmp_path / "s.pt", images[:30], labels[:30], 0.01, None, meta)
    results = [evaluate_synset(tmp_path / "s.pt", tmp_path / "digits", "ConvNetD2W16", 0, EvalConfig(epochs=2),
                               gpu_memory_gb=gpu_gb) for gpu_gb in (None, 1e-6)]
    assert results[0] == results[1] and 0 < results[0]["accuracy"] < 1


def test_each_protocols_lr_and_momentum_per_epoch_are_its_authors_schedule():
    """Epoch = 6 trains epochs 0 … 6. MTT's evaluate_synset (utils.py:352-389): ×0.1 in a new SGD after epoch
    Epoch//2+1 = 4. AST's (utils.py:493-534, the shared `ast` protocol): ×0.5, momentum 0.8 in the new SGD, wd 1e-3.
    APM's evaluate_synset_mc (distill.py:79-112): MultiStepLR([4]) stepped after each epoch, one optimizer."""
    lr = 0.02
    mtt = [(lr, 0.9, True)] + [(lr, 0.9, False)] * 4 + [(lr * 0.1, 0.9, True), (lr * 0.1, 0.9, False)]
    ast = [(lr, 0.9, True)] + [(lr, 0.9, False)] * 4 + [(lr * 0.5, 0.8, True), (lr * 0.5, 0.8, False)]
    apm = [(lr, 0.9, True)] + [(lr, 0.9, False)] * 3 + [(lr * 0.1, 0.9, False)] * 3
    config = load_config(ROOT, ROOT / "config/paper/apm.yaml")
    config["evaluation"]["epochs"] = 6
    assert epoch_schedule(eval_config(config), lr) == mtt
    assert epoch_schedule(eval_config(config, "ast"), lr) == ast
    assert eval_config(config, "ast").weight_decay == 1e-3 and eval_config(config).weight_decay == 5e-4
    assert epoch_schedule(eval_config(config, "soft"), lr) == apm
    # The papers' 1000: 1001 epochs; MTT's 502 at lr, then 499; APM's 501, then 500.
    mtt_1000, apm_1000 = epoch_schedule(EvalConfig(), 1.0), epoch_schedule(EvalConfig(schedule="multistep"), 1.0)
    assert (len(mtt_1000), sum(rate == 1.0 for rate, _, _ in mtt_1000)) == (1001, 502)
    assert (len(apm_1000), sum(rate == 1.0 for rate, _, _ in apm_1000)) == (1001, 501)


@pytest.mark.parametrize("schedule, decay_momentum", [("rebuild", 0.8), ("multistep", None)])
def test_training_follows_the_schedule_step_by_step(schedule, decay_momentum):
    """Epoch = 4, one full batch an epoch, no augmentation: five SGD steps written out by hand, v ← μv + (g + wd·θ),
    θ ← θ − lr·v. rebuild: steps 0-3 at lr, step 4 at lr/2 from an empty momentum buffer with μ 0.8; multistep:
    steps 0-2 at lr, steps 3-4 at lr/2 with the buffer kept."""
    images, labels = blobs(2, 0)
    cfg = EvalConfig(epochs=4, batch=len(images), dsa="", decay=0.5, weight_decay=1e-3, schedule=schedule,
                     decay_momentum=decay_momentum)
    trained = train_network(images, labels, 0.05, "ConvNetD1W16", 3, 0, cfg)
    with seeded(0, "eval-init"):
        net = build_model("ConvNetD1W16", 1, 3, 8)
    params, velocity = list(net.parameters()), None
    steps = [(0.05, 0.9)] * 4 + [(0.025, 0.8)] if schedule == "rebuild" else [(0.05, 0.9)] * 3 + [(0.025, 0.9)] * 2
    for step, (lr, mu) in enumerate(steps):
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(net(images), labels), params)
        grads = [g + 1e-3 * p.detach() for g, p in zip(grads, params)]
        restart = velocity is None or (schedule == "rebuild" and step == 4)
        velocity = grads if restart else [mu * v + g for v, g in zip(velocity, grads)]
        with torch.no_grad():
            for p, v in zip(params, velocity):
                p -= lr * v
    for mine, theirs in zip(params, trained.parameters()):
        assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-6)


def test_a_decay_momentum_without_a_new_optimizer_is_refused():
    with pytest.raises(ValueError, match="decay_momentum=0.8 must be in \\[0, 1\\) and needs schedule 'rebuild'"):
        EvalConfig(schedule="multistep", decay_momentum=0.8)
    with pytest.raises(ValueError, match="schedule='cosine' is not one of rebuild, multistep"):
        EvalConfig(schedule="cosine")
