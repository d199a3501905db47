from dataclasses import asdict

import pytest
import torch

from distillery.experts import RECIPES, ExpertSampler, get_recipe, load_expert, save_expert, train_expert
from distillery.seeds import generator


def test_expert_file_round_trip(tmp_path):
    trajectory = torch.randn(6, 37)
    save_expert(tmp_path / "0.pt", trajectory, {"model": "ConvNet", "zca": False, "seed": 0})
    loaded, meta = load_expert(tmp_path / "0.pt", expect={"model": "ConvNet", "zca": False})
    assert torch.equal(loaded, trajectory)
    assert loaded.is_contiguous() and loaded.dtype == torch.float32
    assert meta["epochs"] == 5 and meta["num_params"] == 37 and meta["seed"] == 0
    assert not list(tmp_path.glob("*.tmp")), "no temporary file left behind"


def test_expert_mismatch_and_truncation_are_errors(tmp_path):
    path = tmp_path / "0.pt"
    save_expert(path, torch.randn(3, 10), {"model": "ConvNet", "zca": False})
    with pytest.raises(ValueError, match="zca=False but this run needs True"):
        load_expert(path, expect={"zca": True})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"0\.pt is unreadable.*rerun its train_expert job"):
        load_expert(path)


def test_an_expert_trained_before_its_recipe_changed_is_stale(tmp_path):
    """AST's `smooth` used to be the paper's reading (5 clipped epochs, μ 1, lr halved at 25): such files are refused;
    a file of an unchanged recipe that predates the settings added since (stored without them) is accepted."""
    old_smooth = {**asdict(RECIPES["smooth_paper"]), "name": "smooth"}
    for key in ("lr_decay_delay", "lr_decay_reset", "gp_norm", "gp_input"):
        old_smooth.pop(key)
    old_sgd = {k: v for k, v in asdict(RECIPES["sgd"]).items() if k not in ("gp_norm", "gp_input")}
    for name, recipe in (("smooth", old_smooth), ("sgd", old_sgd)):
        save_expert(tmp_path / f"{name}.pt", torch.randn(3, 10), {"model": "m", "recipe": {**recipe, "epochs": 2}})
    assert load_expert(tmp_path / "sgd.pt", expect={"model": "m", "recipe": "sgd"})[1]["recipe"]["epochs"] == 2
    with pytest.raises(ValueError, match=r"smooth\.pt was not trained with expert recipe 'smooth' as it is now "
                                         r"\(lr_decay=0\.5 \(now 0\.6\), lr_decay_delay=0 \(now 2\), .*clip_epochs=5 "
                                         r"\(now 10\).*gp_weight=1\.0 \(now 2\.0\).*rerun its train_expert job"):
        ExpertSampler([tmp_path / "smooth.pt"], generator(0, "experts"), expect={"recipe": "smooth"})
    with pytest.raises(ValueError, match=r"\(name='sgd'\)"):
        load_expert(tmp_path / "sgd.pt", expect={"recipe": "sgd_b512"})


def test_sampler_visits_every_expert_once_per_pass(tmp_path):
    paths = []
    for k in range(4):
        paths.append(tmp_path / f"{k}.pt")
        save_expert(paths[-1], torch.full((2, 3), float(k)), {"model": "m"})
    sampler = ExpertSampler(paths, generator(0, "experts"))
    first = [int(next(sampler)[0, 0]) for _ in range(4)]
    second = [int(next(sampler)[0, 0]) for _ in range(4)]
    assert sorted(first) == sorted(second) == [0, 1, 2, 3]
    again = ExpertSampler(paths, generator(0, "experts"))
    assert [int(next(again)[0, 0]) for _ in range(4)] == first


def test_expert_training_records_every_epoch_and_learns():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(16)
    images = torch.randn(64, 1, 8, 8, generator=g) * 0.3 + labels.view(-1, 1, 1, 1).float()
    recipe = get_recipe("sgd", epochs=3, batch=16, dsa=False)
    trajectory, model = train_expert(images, labels, "ConvNetW16", 4, recipe, seed=1)
    assert trajectory.shape == (4, sum(p.numel() for p in model.parameters()))
    assert torch.equal(trajectory[-1], torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    steps = (trajectory[1:] - trajectory[:-1]).norm(dim=1)
    assert (steps > 0).all()
    again, _ = train_expert(images, labels, "ConvNetW16", 4, recipe, seed=1)
    assert torch.equal(trajectory, again), "same seed, same trajectory"


def test_unknown_recipe_or_setting():
    with pytest.raises(ValueError, match="unknown expert recipe 'adamw'; choose one of: sgd"):
        get_recipe("adamw")
    with pytest.raises(ValueError, match="unknown expert recipe setting\\(s\\) epoch; allowed: batch, dsa"):
        get_recipe("sgd", epoch=3)
    assert get_recipe("sgd", batch=32, epochs=None).batch == 32


@pytest.mark.parametrize("recipe", ["teacher", "smooth"])  # APM's (ImageNet-1K's), and one with a clean-image pass
def test_expert_on_the_host_split_has_the_device_splits_trajectory_bit_for_bit(tmp_path, recipe):
    """gpu_memory_gb tiny forces both digits splits onto the host path (uint8, a batch moved at a time): the
    trajectory and the recorded accuracies are exactly those of the whole-split device path (on the CPU)."""
    from distillery.data import prepare
    from distillery.experts import run_expert_training

    prepare("digits", tmp_path / "raw", tmp_path / "digits")
    runs = {}
    for name, gpu_gb in (("device", None), ("host", 1e-6)):
        meta = run_expert_training(tmp_path / "digits", tmp_path / f"{name}.pt", "ConvNetD2W16", recipe, seed=3,
                                   overrides={"epochs": 1, "batch": 128}, gpu_memory_gb=gpu_gb)
        runs[name] = load_expert(tmp_path / f"{name}.pt")[0], meta
    assert torch.equal(runs["host"][0], runs["device"][0])
    assert not torch.equal(runs["host"][0][0], runs["host"][0][-1])  # it trained
    for key in ("train_accuracy", "test_accuracy"):
        assert runs["host"][1][key] == runs["device"][1][key]
