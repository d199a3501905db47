from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from distillery.data import DATASETS
from distillery.plan import (CONFIG_FILES, check_config, eval_config, expert_files, load_config, merge, resolve_method,
                             table_cells)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def load_default() -> dict:
    return load_config(ROOT)


def test_default_config_is_valid_and_resolves():
    config = load_default()
    validate(config, schema=str(SCHEMA))
    check_config(config)
    cells = table_cells(config)
    assert [(c.method, c.ipc, c.arch, c.protocol) for c in cells] == [
        (method, ipc, "ConvNetD2W32", "default") for method in ("random", "mtt", "ftd") for ipc in (1, 10)]


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
    with pytest.raises(ValueError, match="unknown method 'mtx'.*choose one of: forgetting, ftd, ftd_no_ema, herding, mtt, mtt_noise, mtt_robust, random"):
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


def test_merge_is_snakemakes_deep_merge():
    assert merge({"a": {"x": 1, "y": 2}, "l": [1, 2]}, {"a": {"y": 3}, "l": [9]}) == {"a": {"x": 1, "y": 3}, "l": [9]}


def test_snakefile_loads_the_config_files_the_library_knows():
    snakefile = (ROOT / "workflow/Snakefile").read_text()
    loaded = [line.split("/../")[1].rstrip('"') for line in snakefile.splitlines() if line.startswith("configfile:")]
    assert loaded == list(CONFIG_FILES)


def test_ftd_presets():
    config = load_default()
    ftd = resolve_method(config, "ftd", "cifar10", 1)
    assert (ftd["recipe"], ftd["ema_decay"], ftd["lr_img"]) == ("gsam_a03", 0.9999, 100)
    assert resolve_method(config, "ftd", "cifar10", 50)["recipe"] == "gsam"
    assert resolve_method(config, "ftd_no_ema", "cifar100", 10)["ema_decay"] is None
    robust = resolve_method(config, "mtt_robust", "cifar10", 50)
    assert (robust["perturb"], robust["perturb_scale"], robust["syn_steps"]) == ("gaussian", 0.001, 30)


def test_named_evaluation_protocols():
    config = load_default()
    config["protocols"] = {"sam0.01": {"sam_rho": 0.01}}
    assert eval_config(config, "sam0.01").sam_rho == 0.01 and eval_config(config).sam_rho == 0.0
    assert eval_config(config, "sam0.01").epochs == config["evaluation"]["epochs"]
    config["tables"] = [{"name": "t", "cells": [{"method": "mtt", "dataset": "digits", "ipc": 1,
                                                 "protocol": ["default", "sam0.01"]}]}]
    assert [c.protocol for c in table_cells(config)] == ["default", "sam0.01"]
    with pytest.raises(ValueError, match="unknown evaluation protocol 'sam9'"):
        eval_config(config, "sam9")
