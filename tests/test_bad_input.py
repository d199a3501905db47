"""The bad-input table of docs/troubleshooting.md, row by row, as a user meets it: each bad input goes through
Snakemake's command line (`snakemake -n`; the rows a job finds, in a run too) and what it prints holds the row's text
word for word (… in the table stands for the rest); nothing is written. Nested `--config` values work as their
types."""
import copy
import re
from pathlib import Path

import pytest
import torch
import yaml

from distillery import plan
from distillery.data import prepare
from distillery.experts import ExpertSampler, load_expert, save_expert
from distillery.runtime import resolve_device
from distillery.seeds import generator
from conftest import EXPERTS, ROOT, snakemake

OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}  # no download, at once
CELL = {"method": "mtt", "dataset": "digits", "ipc": 1}


def table(**cell) -> dict:
    return {"tables": [{"name": "t", "cells": [{**CELL, **cell}]}]}


def dry_run(tmp: Path, *configs: dict) -> str:
    """What `snakemake -n --configfile my.yaml` prints for each config (over the default one), which must fail."""
    printed = []
    for config in configs:
        run = snakemake(tmp, config, "-n")
        assert run.returncode != 0, run.stdout[-2000:]
        printed.append(run.stdout + run.stderr)
    assert not (tmp / "results").exists(), "nothing written"
    return "\n".join(printed)


def error_of(call) -> str:
    with pytest.raises(Exception) as error:
        call()
    return str(error.value)


def yaml_syntax_error(tmp: Path) -> str:
    """Snakemake reads --configfile itself; the config check names the file, line and column."""
    (tmp / "my.yaml").write_text("evaluation: {seeds: 1\ntables: [x\n")
    run = snakemake(tmp, None, "-n", "--configfile", str(tmp / "my.yaml"))
    assert run.returncode != 0
    return run.stdout + run.stderr + error_of(lambda: plan.load_config(ROOT, tmp / "my.yaml"))


def cuda_without_a_gpu(tmp: Path) -> str:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return dry_run(tmp, {"device": "cuda"})


# Rows a job finds (the raw data, the expert files), through the library here; through Snakemake: job_rows below.
def missing_data(tmp: Path) -> str:
    return error_of(lambda: prepare("cifar10", "data", tmp / "out"))


def corrupt_archive(tmp: Path) -> str:
    (tmp / "data/cifar100").mkdir(parents=True)
    (tmp / "data/cifar100/cifar-100-python.tar.gz").write_bytes(bytes(range(256)) * 64)
    return error_of(lambda: prepare("cifar100", "data", tmp / "out"))


def tiny_imagenet_flat(tmp: Path) -> str:
    """Images directly under train/ instead of train/<wnid>/images/ (a common unzip mistake)."""
    (tmp / "data/tiny-imagenet-200/train").mkdir(parents=True)
    (tmp / "data/tiny-imagenet-200/train/n01443537_0.JPEG").write_bytes(b"")
    return error_of(lambda: prepare("tiny-imagenet", "data", tmp / "out"))


def short_buffers(tmp: Path) -> str:
    save_expert(tmp / "0.pt", torch.zeros(3, 5), {"model": "ConvNet"})
    return error_of(lambda: ExpertSampler([tmp / "0.pt"], generator(0, "experts"), min_epochs=3))


ROWS = {
    "unknown dataset": lambda tmp: dry_run(tmp, table(dataset="cifar11")),
    "unknown method": lambda tmp: dry_run(tmp, table(method="mttt")),
    "unknown architecture": lambda tmp: dry_run(tmp, table(arch=["ResNet99"])),
    "IPC 0": lambda tmp: dry_run(tmp, table(ipc=0)),
    "IPC above the class size": lambda tmp: dry_run(tmp, table(ipc=500)),
    "negative distillation lr": lambda tmp: dry_run(tmp, {**table(), "distill": {"overrides": {"lr_img": -1}}},
                                                    {**table(), "methods": {"mtt": {"lr_img": -1}}}),
    "unknown distillation setting": lambda tmp: dry_run(tmp, {"distill": {"overrides": {"lr_imgg": 1.0}}}),
    "negative expert lr": lambda tmp: dry_run(tmp, {"experts": {"overrides": {"lr": -0.01}}}),
    "missing data directory": missing_data,
    "a corrupt archive": corrupt_archive,
    "Tiny ImageNet in the wrong layout": tiny_imagenet_flat,
    "experts shorter than the run needs (config)": lambda tmp: dry_run(
        tmp, {**table(), "distill": {"overrides": {"max_start_epoch": 100}}}),
    "a cell too large for the GPU": lambda tmp: dry_run(
        tmp, {**table(method="ftd", dataset="cifar100", ipc=50), "distill": {"overrides": {"memory": "full"}}}),
    "experts shorter than the run needs (buffer files)": short_buffers,
    "a misspelt top-level key": lambda tmp: dry_run(tmp, {"evalution": {"seeds": 1}}),
    "a value of the wrong type": lambda tmp: dry_run(tmp, {"evaluation": {"epochs": "ten"}}),
    "a method setting of the wrong type": lambda tmp: dry_run(tmp, {"distill": {"overrides": {"lr_img": "ten"}}}),
    "a number YAML reads as text": lambda tmp: dry_run(tmp, yaml.safe_load("distill: {overrides: {lr_img: 1.0e12}}")),
    "an unknown reported table": lambda tmp: dry_run(tmp, {
        "reported_files": ["config/paper/reported/mtt.csv"],
        "tables": [{"name": "t", "reported": {"paper": "mtt", "table": "tabel1"}, "cells": [CELL]}]}),
    "YAML syntax error": yaml_syntax_error,
    "`device: cuda` without a visible GPU": cuda_without_a_gpu,
}
JOB_ROWS = {"missing data directory", "a corrupt archive", "Tiny ImageNet in the wrong layout",
            "experts shorter than the run needs (buffer files)"}
LOGGED = {"batch_syn above IPC × classes"}  # a row that is not an error: a logged adjustment


def table_rows() -> dict[str, str]:
    """The bad-input table of docs/troubleshooting.md: bad input -> its 'error says' cell."""
    page = (ROOT / "docs" / "troubleshooting.md").read_text()
    text = page[page.index("## Bad input"):]
    rows = {}
    for line in text[text.index("| bad input |"):].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0]] = cells[1]
    return rows


def assert_says(printed: str, cell: str) -> None:
    """Every quoted text of the cell (not the commands it names) is in `printed`, its parts between … in order."""
    quoted = [q for q in re.findall(r"`([^`]*)`", cell) if not q.startswith(("python -m ", "--"))]
    assert quoted, cell
    for text in quoted:
        at = 0
        for part in filter(None, (p.strip() for p in text.split("…"))):
            found = printed.find(part, at)
            assert found >= 0, f"not printed: {part!r}\n--- printed:\n{printed[-3000:]}"
            at = found + len(part)


def test_the_readme_table_and_the_rows_tested_are_the_same():
    assert set(table_rows()) == set(ROWS) | LOGGED


@pytest.mark.parametrize("row", ROWS, ids=list(ROWS))
def test_bad_input_fails_early_saying_what_the_readme_says(row, tmp_path, monkeypatch):
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # data_dir `data`, relative to the working directory as in a run
    assert_says(ROWS[row](tmp_path), table_rows()[row])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir()), "nothing half-written"


@pytest.mark.slow
def test_the_rows_a_job_finds_say_the_same_through_a_snakemake_run(tmp_path, shared_experts, monkeypatch):
    """One run, with --keep-going: prepare_data of cifar10 (no data), cifar100 (a corrupt archive), tiny-imagenet
    (a flat layout), and a digits distillation whose expert file is shorter than its config says."""
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    config = {"experts": EXPERTS, "evaluation": {"seeds": 1, "epochs": 2},
              "distill": {"overrides": {"iterations": 2, "syn_steps": 2, "max_start_epoch": 2, "expert_epochs": 2}},
              "tables": [{"name": "t", "cells": [CELL]}]}
    shared_experts(tmp_path, config)
    expert = tmp_path / "results/experts/digits/std/ConvNetD2W32/sgd/0.pt"
    trajectory, meta = load_expert(expert)
    save_expert(expert, trajectory[:3].clone(), {k: v for k, v in meta.items() if k not in ("epochs", "sha256")})
    corrupt_archive(tmp_path)
    tiny_imagenet_flat(tmp_path)
    targets = ["results/synsets/mtt/digits/ipc1/synset.pt"] + [f"results/data/{d}/meta.json"
                                                              for d in ("cifar10", "cifar100", "tiny-imagenet")]
    run = snakemake(tmp_path, config, "--cores", "2", "--keep-going", *targets)
    assert run.returncode != 0
    printed = run.stdout + run.stderr
    rows = table_rows()
    for row in JOB_ROWS:
        assert_says(printed, rows[row])
    for dataset in ("cifar10", "cifar100", "tiny-imagenet"):
        assert not (tmp_path / f"results/data/{dataset}").exists() or not any(
            (tmp_path / f"results/data/{dataset}").glob("*.pt")), "nothing half-written"


def test_nested_config_values_work_as_their_types(tmp_path):
    """Snakemake reads `--config key={a: 10}` with YAML's base loader (every scalar text); the workflow reads them as a
    config file would."""
    run = snakemake(tmp_path, None, "-n", "--config", "reliability={checkpoint_every: 10, max_bad_iterations: 0}",
                    "resources={default: {threads: 2}}", "distill={overrides: {iterations: 50, lr_img: 1.0e+3}}",
                    "runtime={gpu_memory_gb: 40}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    config = {"reliability": {"checkpoint_every": 50}, "evaluation": {"epochs": 5, "dsa": "none"}, "seed": 0}
    given = {"reliability": {"checkpoint_every": "10"}, "evaluation": {"epochs": "ten", "dsa": "10"}}
    merged = copy.deepcopy(config)
    merged["reliability"]["checkpoint_every"] = "10"
    merged["evaluation"].update(epochs="ten", dsa="10")
    plan.type_cli_values(merged, given)
    assert merged == {"reliability": {"checkpoint_every": 10}, "evaluation": {"epochs": "ten", "dsa": 10}, "seed": 0}
    nested = {"distill": {"overrides": {"lr_img": "1.0e-5", "x": "1e-5", "flag": "true", "none": "null"}}}
    typed = copy.deepcopy(nested)
    plan.type_cli_values(typed, nested)
    assert typed == {"distill": {"overrides": {"lr_img": 1e-5, "x": "1e-5", "flag": True, "none": None}}}


def test_a_minibatch_larger_than_the_synthetic_set_is_the_set_logged_and_recorded(caplog):
    from distillery.distill.config import DistillConfig, fit_batch_syn

    cfg = DistillConfig(method="mtt", kind="trajectory", ipc=1, batch_syn=500)
    with caplog.at_level("WARNING", logger="distillery"):
        fitted = fit_batch_syn(cfg, num_classes=10)
    assert fitted.batch_syn == 10 and fitted.to_dict()["batch_syn"] == 10  # the synset's meta is to_dict()
    assert "batch_syn=500 is larger than the synthetic set (IPC 1 x 10 classes = 10 images): using 10" in caplog.text
    assert fit_batch_syn(fitted, 10) is fitted
    assert fit_batch_syn(DistillConfig("mtt", "trajectory", 2), 10).batch_syn is None  # null: all images already
