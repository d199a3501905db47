from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from distillery.data import DATASETS
from distillery.plan import check_config, expert_files, resolve_method, table_cells

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def load_default() -> dict:
    config: dict = {}
    for name in ("methods.yaml", "hparams/mtt.yaml", "config.yaml"):
        config.update(yaml.safe_load((ROOT / "config" / name).read_text()))
    return config


def test_default_config_is_valid_and_resolves():
    config = load_default()
    validate(config, schema=str(SCHEMA))
    check_config(config)
    cells = table_cells(config)
    assert [(c.method, c.ipc, c.arch) for c in cells] == [
        ("random", 1, "ConvNetD2W32"), ("random", 10, "ConvNetD2W32"), ("mtt", 1, "ConvNetD2W32"),
        ("mtt", 10, "ConvNetD2W32")]


def test_settings_precedence_table_then_preset_then_overrides():
    config = load_default()
    assert resolve_method(config, "mtt", "cifar10", 1)["syn_steps"] == 50           # ipc1 row
    assert resolve_method(config, "mtt", "cifar10", 50)["zca"] is False            # ipc50 overrides default
    assert resolve_method(config, "mtt", "cifar100", 1)["expert_epochs"] == 3
    assert resolve_method(config, "mtt_noise", "cifar10", 1)["init"] == "noise"      # preset over its base
    config["distill"]["overrides"] = {"iterations": 7}
    assert resolve_method(config, "mtt", "cifar10", 1)["iterations"] == 7
    assert resolve_method(config, "mtt", "tiny-imagenet", 10)["model"] == "ConvNetD4"


def test_expert_files_follow_model_recipe_and_normalisation():
    config = load_default()
    config["experts"]["count"] = 2
    files = expert_files(config, "cifar10", resolve_method(config, "mtt", "cifar10", 1))
    assert files == ["results/experts/cifar10/zca/ConvNet/sgd/0.pt", "results/experts/cifar10/zca/ConvNet/sgd/1.pt"]
    assert expert_files(config, "cifar10", resolve_method(config, "random", "cifar10", 1)) == []


def test_unknown_method_and_missing_hparams_are_named():
    config = load_default()
    with pytest.raises(ValueError, match="unknown method 'mtx'.*choose one of: forgetting, herding, mtt, mtt_noise, random"):
        resolve_method(config, "mtx", "digits", 1)
    with pytest.raises(ValueError, match="no 'mtt' hyperparameters for dataset 'svhn'; add hparams.mtt.svhn"):
        resolve_method(config, "mtt", "svhn", 1)


def test_experts_too_short_for_the_start_epochs_fail_before_any_job():
    config = load_default()
    config["experts"]["overrides"] = {"epochs": 5}
    with pytest.raises(ValueError, match="needs experts of at least 11 epochs"):
        check_config(config)


@pytest.mark.parametrize("cell,field", [
    ({"method": "mtt", "dataset": "cifar11", "ipc": 1}, "cifar11"),
    ({"method": "mtt", "dataset": "digits", "ipc": 0}, "ipc"),
])
def test_schema_rejects_bad_cells(cell, field):
    config = load_default()
    config["tables"] = [{"name": "t", "cells": [cell]}]
    with pytest.raises(Exception, match=field):
        validate(config, schema=str(SCHEMA))


def test_schema_dataset_names_are_the_registry():
    schema = yaml.safe_load(SCHEMA.read_text())
    assert sorted(schema["definitions"]["dataset"]["enum"]) == sorted(DATASETS)
