"""Distilled data must beat a random real subset on real data (digits, IPC 1), through the library."""
import pytest

from distillery.data import load_split, prepare
from distillery.distill import DistillConfig, distill_trajectory, init_synthetic
from distillery.evaluate import EvalConfig, evaluate
from distillery.experts import get_recipe, train_expert
from distillery.functional import FlatModel
from distillery.models import build_model
from distillery.seeds import generator

MODEL = "ConvNetD2W32"


@pytest.mark.slow
def test_mtt_beats_a_random_real_subset_on_digits_at_ipc1(tmp_path):
    prepare("digits", tmp_path, tmp_path / "digits")
    images, labels = load_split(tmp_path / "digits", "train")
    test_images, test_labels = load_split(tmp_path / "digits", "test")
    recipe = get_recipe("sgd", batch=32, epochs=12)
    experts = [train_expert(images, labels, MODEL, 10, recipe, seed)[0] for seed in range(2)]
    cfg = DistillConfig(method="mtt", kind="trajectory", ipc=1, model=MODEL, iterations=120, syn_steps=20,
                        expert_epochs=2, max_start_epoch=10, lr_img=100, lr_lr=1e-5, lr_teacher=0.01)
    student = FlatModel(build_model(MODEL, 1, 10, 8))
    result = distill_trajectory(cfg, images, labels, 10, student, iter(experts * 1000))
    random_images, random_labels = init_synthetic(images, labels, 10, 1, "real", generator(0, "init"))
    protocol = EvalConfig(epochs=300)
    mtt = [evaluate(result.images, result.labels, result.lr, MODEL, test_images, test_labels, 10, s, protocol)
           for s in range(3)]
    random = [evaluate(random_images, random_labels, None, MODEL, test_images, test_labels, 10, s, protocol)
              for s in range(3)]
    assert sum(mtt) / 3 >= sum(random) / 3 + 0.10, (mtt, random)
