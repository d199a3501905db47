from pathlib import Path

import pytest
import torch

from distillery.data import load_split, prepare
from distillery.distill import DistillConfig
from distillery.distill.coreset import (count_forgetting, forgetting_counts, forgetting_indices, herding_indices,
                                        select_coreset)
from distillery.distill.run import run_distillation
from distillery.synset import load_synset
from distillery.experts import get_recipe, run_expert_training, train_expert
from distillery.plan import expert_files, load_config, resolve_method
from distillery.seeds import generator

ROOT = Path(__file__).resolve().parents[1]

# Class 0: p0..p4 with mean (0, 0); class 1: q0..q2 with mean (10, 11); interleaved in the training order.
HERD_FEATURES = torch.tensor([[4.0, 0.0], [11.0, 10.0], [1.0, 1.0], [9.0, 10.0], [-2.0, 0.0], [10.0, 13.0],
                              [-1.0, -3.0], [-2.0, 2.0]])
HERD_LABELS = torch.tensor([0, 1, 0, 1, 0, 1, 0, 0])


@pytest.mark.parametrize("ipc,expected", [
    (1, [2, 1]),              # p1 is nearest the mean; q0 and q1 tie at sqrt(2): the lower index wins
    (2, [2, 4, 1, 5]),        # mean(p1, p2) = (-0.5, 0.5); mean(q0, q2) = (10.5, 11.5), closer than mean(q0, q1)
    (3, [2, 4, 6, 1, 5, 3]),  # herding takes p3 (|(-2,-2)/3| = 0.94) over p0 (1.05) and p4 (1.41), though p4 is nearer
])
def test_herding_picks_the_hand_computed_greedy_order(ipc, expected):
    picks = herding_indices(HERD_FEATURES, HERD_LABELS, 2, ipc)
    assert picks.tolist() == expected
    assert HERD_LABELS[picks].tolist() == [0] * ipc + [1] * ipc


def test_herding_rejects_an_ipc_larger_than_a_class():
    with pytest.raises(ValueError, match="IPC 4 is larger than class 1's 3 training images; lower the IPC"):
        herding_indices(HERD_FEATURES, HERD_LABELS, 2, 4)


@pytest.mark.parametrize("history,events", [
    ([1, 0, 1, 1, 0, 0, 1], 2),
    ([0, 1, 1, 1], 0),        # learned once, never forgotten
    ([1, 0, 0, 0], 1),
    ([0, 0, 0], 3),           # never learned: the number of presentations, more than any learned example can have
])
def test_forgetting_events_are_correct_to_incorrect_transitions(history, events):
    assert count_forgetting(torch.tensor(history)).item() == events


def test_forgetting_counts_every_example_independently():
    history = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 0, 0], [1, 0, 1]])  # [presentations, examples]
    assert count_forgetting(history).tolist() == [1, 4, 1]


def tiny_problem():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(10)
    images = torch.randn(40, 1, 8, 8, generator=g) * 0.8 + labels.view(-1, 1, 1, 1).float() * 0.3
    return images, labels


def test_forgetting_counts_are_per_example_integers_and_reproducible():
    images, labels = tiny_problem()
    recipe = get_recipe("sgd", epochs=4, batch=8, dsa=False)
    counts = forgetting_counts(images, labels, "ConvNetW16", 4, recipe, seed=0)
    assert counts.shape == (40,) and counts.dtype == torch.long
    assert (counts >= 0).all() and (counts <= 4).all()
    assert torch.equal(counts, forgetting_counts(images, labels, "ConvNetW16", 4, recipe, seed=0))


def test_a_batch_callback_leaves_expert_training_unchanged():
    images, labels = tiny_problem()
    recipe = get_recipe("sgd", epochs=2, batch=16)
    seen = []
    watched, _ = train_expert(images, labels, "ConvNetW16", 4, recipe, 3, on_batch=lambda i, z: seen.append(len(i)))
    plain, _ = train_expert(images, labels, "ConvNetW16", 4, recipe, 3)
    assert torch.equal(watched, plain)
    assert seen == [16, 16, 8, 16, 16, 8]


def test_forgetting_indices_take_the_most_forgotten_with_seeded_random_ties():
    counts = torch.tensor([5, 1, 5, 0, 2, 2, 2, 7])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    picks = forgetting_indices(counts, labels, 2, 2, generator(0, "init"))
    assert sorted(picks[:2].tolist()) == [0, 2] and picks[2].item() == 7 and picks[3].item() in (4, 5, 6)
    assert torch.equal(picks, forgetting_indices(counts, labels, 2, 2, generator(0, "init")))
    firsts = {forgetting_indices(counts, labels, 2, 1, generator(s, "init"))[0].item() for s in range(20)}
    assert firsts == {0, 2}, "a tie is broken by the generator, not by index"


def matches(syn: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """[S, N]: syn row s equals training image n (exactly, element by element)."""
    return (syn.flatten(1)[:, None] == images.flatten(1)[None]).all(2)


@pytest.mark.parametrize("select", ["random", "herding", "forgetting", "kmeans"])
def test_select_coreset_returns_real_images_of_each_class(select):
    images, labels = tiny_problem()
    counts = torch.randint(0, 5, (40,), generator=torch.Generator().manual_seed(1))
    syn, syn_labels = select_coreset(select, images, labels, 4, 3, generator(0, "init"),
                                     features=images.flatten(1), counts=counts)
    assert syn.shape == (12, 1, 8, 8)
    assert syn_labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    found = matches(syn, images)
    assert (found.sum(1) == 1).all(), "every synthetic image is exactly one training image"
    assert torch.equal(labels[found.int().argmax(1)], syn_labels)
    assert len(set(found.int().argmax(1).tolist())) == 12
    with pytest.raises(ValueError, match="IPC 11 is larger than class 0's 10 training images; lower the IPC"):
        select_coreset(select, images, labels, 4, 11, generator(0, "init"), features=images.flatten(1), counts=counts)


def test_select_coreset_errors_name_the_problem():
    images, labels = tiny_problem()
    message = "unknown coreset select 'kcenter'; choose one of: random, herding, forgetting, kmeans"
    with pytest.raises(ValueError, match=message):
        select_coreset("kcenter", images, labels, 4, 1, generator(0, "init"))
    with pytest.raises(ValueError, match="'herding' needs features"):
        select_coreset("herding", images, labels, 4, 1, generator(0, "init"))
    with pytest.raises(ValueError, match="'forgetting' needs counts"):
        select_coreset("forgetting", images, labels, 4, 1, generator(0, "init"))


def test_config_validates_select():
    with pytest.raises(ValueError, match="select='kcenter' is not one of random, herding, forgetting"):
        DistillConfig(method="x", kind="coreset", ipc=1, select="kcenter")
    with pytest.raises(ValueError, match="select='herding' applies only to kind coreset"):
        DistillConfig(method="x", kind="trajectory", ipc=1, select="herding")


def test_herding_distillation_writes_real_training_images(tmp_path):
    prepare("digits", tmp_path, tmp_path / "digits")
    expert = tmp_path / "expert0.pt"
    run_expert_training(tmp_path / "digits", expert, "ConvNetD2W16", "sgd", 0, overrides={"epochs": 2, "batch": 64})
    method = {"method": "herding", "kind": "coreset", "select": "herding", "ipc": 2, "model": "ConvNetD2W16"}
    meta = run_distillation(method, tmp_path / "digits", tmp_path / "synset.pt", tmp_path / "log.csv",
                            expert_paths=[expert])
    synset = load_synset(tmp_path / "synset.pt")
    images, labels = load_split(tmp_path / "digits", "train")
    assert synset["images"].shape == (20, 1, 8, 8) and synset["lr"] is None
    assert synset["labels"].tolist() == [c for c in range(10) for _ in range(2)]
    found = matches(synset["images"], images)
    assert (found.any(1)).all(), "every synthetic image is a row of the training split"
    assert torch.equal(labels[found.int().argmax(1)], synset["labels"])
    assert meta["select"] == "herding" and synset["meta"]["select"] == "herding" and meta["experts"] == 1
    again = run_distillation(method, tmp_path / "digits", tmp_path / "again.pt", tmp_path / "again.csv",
                             expert_paths=[expert])
    assert again["select"] == "herding"
    assert torch.equal(load_synset(tmp_path / "again.pt")["images"], synset["images"]), "herding is deterministic"
    with pytest.raises(ValueError, match="has model='ConvNetD2W16' but this run needs 'ConvNetD2W32'"):
        run_distillation({**method, "model": "ConvNetD2W32"}, tmp_path / "digits", tmp_path / "bad.pt",
                         tmp_path / "bad.csv", expert_paths=[expert])
    with pytest.raises(ValueError, match="IPC 500 is larger than class 0's"):
        run_distillation({**method, "ipc": 500}, tmp_path / "digits", tmp_path / "bad.pt", tmp_path / "bad.csv",
                         expert_paths=[expert])


def test_plan_gives_herding_one_expert_and_forgetting_none():
    config = load_config(ROOT)
    herding = resolve_method(config, "herding", "cifar10", 10)
    assert herding["select"] == "herding" and herding["recipe"] == "sgd"
    assert expert_files(config, "cifar10", herding) == ["results/experts/cifar10/std/ConvNet/sgd/0.pt"]
    forgetting = resolve_method(config, "forgetting", "cifar10", 10)
    assert forgetting["select"] == "forgetting" and expert_files(config, "cifar10", forgetting) == []
