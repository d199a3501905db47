import pytest
import torch

from distillery.evaluate import EvalConfig, accuracy, evaluate, train_network

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
    from distillery.distill.run import save_synset
    from distillery.evaluate import evaluate_synset

    prepare("digits", tmp_path / "raw", tmp_path / "digits")
    images, labels = load_split(tmp_path / "digits", "train")
    meta = {"method": "random", "dataset": "digits", "ipc": 3, "num_classes": 10, "zca": False,
            "dataset_sha256": load_meta(tmp_path / "digits")["sha256"]["train.pt"]}
    save_synset(tmp_path / "s.pt", images[:30], labels[:30], 0.01, None, meta)
    results = [evaluate_synset(tmp_path / "s.pt", tmp_path / "digits", "ConvNetD2W16", 0, EvalConfig(epochs=2),
                               gpu_memory_gb=gpu_gb) for gpu_gb in (None, 1e-6)]
    assert results[0] == results[1] and 0 < results[0]["accuracy"] < 1
