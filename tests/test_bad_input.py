"""The bad-input table of docs/troubleshooting.md, row by row: each bad input fails before any compute with an
error that names the problem and what to do."""
import copy
from pathlib import Path
from unittest import mock

import pytest
import torch

from distillery import plan
from distillery.runtime import resolve_device
from distillery.data import prepare
from distillery.experts import ExpertSampler, save_expert
from distillery.seeds import generator

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / plan.SCHEMA


def config_with(cell: dict, **sections) -> dict:
    config = copy.deepcopy(plan.load_config(ROOT))
    config["tables"] = [{"name": "t", "cells": [{"method": "mtt", "dataset": "digits", "ipc": 1, **cell}]}]
    for key, value in sections.items():
        config[key] = {**config[key], **value}
    return config


def tiny_imagenet_flat(tmp_path):
    """Images directly under train/ instead of train/<wnid>/images/ (a common unzip mistake)."""
    (tmp_path / "tiny-imagenet-200" / "train").mkdir(parents=True)
    (tmp_path / "tiny-imagenet-200" / "train" / "n01443537_0.JPEG").write_bytes(b"")
    prepare("tiny-imagenet", tmp_path, tmp_path / "out")


def short_buffers(tmp_path):
    save_expert(tmp_path / "0.pt", torch.zeros(3, 5), {"model": "ConvNet"})
    ExpertSampler([tmp_path / "0.pt"], generator(0, "experts"), min_epochs=3)


def yaml_syntax_error(tmp_path):
    (tmp_path / "my.yaml").write_text("evaluation: {seeds: 1\ntables: [x\n")
    plan.load_config(ROOT, tmp_path / "my.yaml")


def cuda_without_a_gpu(tmp_path):
    with mock.patch("torch.cuda.is_available", return_value=False):
        resolve_device(plan.load_config(ROOT, write(tmp_path / "my.yaml", "device: cuda\n"))["device"])


def write(path, text):
    path.write_text(text)
    return path


ROWS = {
    "unknown dataset": (lambda tmp: plan.check_config(config_with({"dataset": "cifar11"})),
                        "unknown dataset 'cifar11'; choose one of: digits"),
    "unknown method": (lambda tmp: plan.check_config(config_with({"method": "mttt"})),
                       "unknown method 'mttt'.*define it under `methods:` or choose one of"),
    "unknown architecture": (lambda tmp: plan.check_config(config_with({"arch": ["ResNet99"]})),
                             "unknown architecture 'ResNet99'"),
    "IPC 0": (lambda tmp: plan.check_config(config_with({"ipc": 0})), "ipc=0 must be at least 1"),
    "IPC above the class size": (lambda tmp: plan.check_config(config_with({"ipc": 500})),
                                 "digits ipc500 .* larger than the smallest class's 131 training images; lower the "
                                 "IPC to at most 131"),
    "negative distillation lr": (lambda tmp: plan.check_config(config_with({}, distill={"overrides": {"lr_img": -1}})),
                                 "lr_img=-1 must be a positive learning rate"),
    "negative expert lr": (lambda tmp: plan.check_config(config_with({}, experts={"overrides": {"lr": -0.01}})),
                           "expert recipe 'sgd': lr must be > 0"),
    "missing data directory": (lambda tmp: prepare("cifar10", tmp / "nowhere", tmp / "out"),
                               "cifar10.*raw files are not in .*nowhere.*Put cifar-10-python.tar.gz"),
    "Tiny ImageNet in the wrong layout": (tiny_imagenet_flat, "tiny-imagenet.*this layout exists"),
    "experts shorter than the run needs (config)": (
        lambda tmp: plan.check_config(config_with({}, distill={"overrides": {"max_start_epoch": 100}})),
        "each expert \\(sgd\\) has 50 epochs but this run needs 101 .* train longer experts"),
    "a cell too large for the GPU": (
        lambda tmp: plan.check_config(config_with({}, runtime={"gpu_memory_gb": 1})),
        "method 'mtt' on digits ipc1: memory recompute, chunk 1 needs an estimated 2.0 GB .* more than the 1 GB GPU "
        "of runtime.gpu_memory_gb"),
    "experts shorter than the run needs (buffer files)": (short_buffers,
                                                          "has 2 epochs but this run needs 3 .* train longer experts"),
    "a misspelt top-level key": (lambda tmp: plan.check_schema({**config_with({}), "evalution": {"seeds": 1}}, SCHEMA),
                                 "unknown key 'evalution' at the top level; did you mean 'evaluation'\\?"),
    "a value of the wrong type": (lambda tmp: plan.check_schema(config_with({}, evaluation={"epochs": "ten"}), SCHEMA),
                                  "evaluation.epochs: 'ten' is not an integer"),
    "a method setting of the wrong type": (
        lambda tmp: plan.check_config(config_with({}, distill={"overrides": {"lr_img": "ten"}})),
        "lr_img='ten' must be a number"),
    "YAML syntax error": (yaml_syntax_error, "my.yaml, line 2, column 7: not valid YAML"),
    "`device: cuda` without a visible GPU": (cuda_without_a_gpu, "device: 'cuda' was requested but this machine has "
                                                                 "no visible CUDA device; set device: auto"),
}
# Rows that are not errors: a logged adjustment.
LOGGED = {"batch_syn above IPC × classes"}


@pytest.mark.parametrize("row", ROWS, ids=list(ROWS))
def test_bad_input_fails_early_with_a_clear_message(row, tmp_path):
    check, message = ROWS[row]
    with pytest.raises(Exception, match=message):
        check(tmp_path)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir()), "nothing half-written"


def test_a_minibatch_larger_than_the_synthetic_set_is_the_set_logged_and_recorded(caplog):
    from distillery.distill.config import DistillConfig, fit_batch_syn

    cfg = DistillConfig(method="mtt", kind="trajectory", ipc=1, batch_syn=500)
    with caplog.at_level("WARNING", logger="distillery"):
        fitted = fit_batch_syn(cfg, num_classes=10)
    assert fitted.batch_syn == 10 and fitted.to_dict()["batch_syn"] == 10  # the synset's meta is to_dict()
    assert "batch_syn=500 is larger than the synthetic set (IPC 1 x 10 classes = 10 images): using 10" in caplog.text
    assert fit_batch_syn(fitted, 10) is fitted
    assert fit_batch_syn(DistillConfig("mtt", "trajectory", 2), 10).batch_syn is None  # null: all images already


def test_every_row_is_in_the_troubleshooting_pages_table():
    page = (ROOT / "docs" / "troubleshooting.md").read_text()
    table = page[page.index("## Bad input"):]
    for row in [*ROWS, *LOGGED]:
        assert f"| {row} |" in table, row
