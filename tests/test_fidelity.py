"""Fidelity ledger (docs/fidelity.md): each row's default and variant, pinned."""
import copy
import logging
import re
from pathlib import Path

import pytest
import torch

from distillery.data import prepare
from distillery.distill.config import DistillConfig
from distillery.distill.run import run_distillation
from distillery.experts import run_expert_training
from distillery.plan import initial_share_warnings, load_config, table_notes

ROOT = Path(__file__).resolve().parents[1]


def crafted(decay: float, iterations: int) -> dict:
    """The default config with one FTD cell on digits at the given EMA decay and iterations."""
    config = copy.deepcopy(load_config(ROOT))
    config["hparams"]["ftd"]["digits"]["ipc1"] = {"ema_decay": decay, "iterations": iterations}
    config["tables"] = [{"name": "t", "cells": [{"method": ["mtt", "ftd"], "dataset": "digits", "ipc": 1}]}]
    return config


def test_planner_warns_for_an_ema_cell_that_keeps_more_than_10_percent_initial_images():
    warnings = initial_share_warnings(crafted(0.9999, 1000))
    assert len(warnings) == 1  # mtt has no EMA
    assert "ftd digits IPC 1: EMA decay 0.9999 ^ 1000 iterations keeps 90.5% of the initial images" in warnings[0]
    assert initial_share_warnings(crafted(0.999, 5000)) == []  # 0.7%
    notes = table_notes(crafted(0.9999, 1000), "t")
    assert notes[-1].startswith("EMA results") and "keeps 90.5% of the initial images" in notes[-1]


def test_initial_share_is_decay_to_the_iterations():
    cfg = DistillConfig(method="ftd", kind="trajectory", ipc=1, ema_decay=0.9999, iterations=1000)
    assert cfg.initial_share() == pytest.approx(0.905, abs=5e-4)
    assert cfg.initial_share(10) == 0.9999 ** 10
    assert DistillConfig(method="mtt", kind="trajectory", ipc=1).initial_share() is None


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("fidelity")
    prepare("digits", root, root / "digits")
    expert = root / "expert0.pt"
    run_expert_training(root / "digits", expert, "ConvNetD2W16", "sgd", 0, overrides={"epochs": 3, "batch": 64})
    return root / "digits", expert


def test_synset_metadata_and_job_log_carry_the_ema_initial_share(digits, tmp_path, caplog):
    prepared, expert = digits
    method = dict(method="ftd", kind="trajectory", ipc=1, model="ConvNetD2W16", iterations=12, syn_steps=3,
                  expert_epochs=1, max_start_epoch=2, lr_img=10.0, lr_lr=1e-7, ema_decay=0.9)
    with caplog.at_level(logging.INFO, logger="distillery"):
        meta = run_distillation(method, prepared, tmp_path / "s.pt", tmp_path / "s.csv", expert_paths=[expert])
    assert meta["skipped"] == 0 and meta["initial_share"] == pytest.approx(0.9 ** 12)
    assert "keeps 28.2% of the initial images (decay 0.9 ^ 12 updates)" in caplog.text


def test_apm_table1_note_flags_the_papers_tiny_ipc50_inconsistency():
    notes = table_notes(load_config(ROOT, ROOT / "config/paper/apm.yaml"), "apm/table1")
    assert "38.2" in notes[0] and "30.0" in notes[0] and "Table A5" in notes[0]


# The authors' own EMA runs: (hparams table, dataset, ipc) -> (decay, iterations). FTD: Table 7's decays,
# 5000 iterations (run_distill.sh:5, :8; distill_FTD.py:569); its ImageNet values: FTD issue #3. ATT: README.md
# commands @eec3176, lines 59-102.
AUTHORS_EMA_RUNS = {
    **{("ftd", d, i): (e, 5000) for d, i, e in [
        ("cifar10", 1, 0.9999), ("cifar10", 10, 0.9995), ("cifar10", 50, 0.999), ("cifar100", 1, 0.9995),
        ("cifar100", 10, 0.9995), ("cifar100", 50, 0.999), ("tiny-imagenet", 1, 0.999),
        ("tiny-imagenet", 10, 0.999)]},
    **{("ftd", d, i): (0.999, 5000) for d in ("imagenette", "imagewoof", "imagefruit", "imagemeow",
                                              "imagesquawk", "imageyellow") for i in (1, 10)},
    ("att", "cifar10", 1): (0.9999, 6000), ("att", "cifar10", 10): (0.9999, 60000),
    ("att", "cifar10", 50): (0.999, 1000000), ("att", "cifar100", 1): (0.9995, 3000),
    ("att", "cifar100", 10): (0.9995, 200000), ("att", "cifar100", 50): (0.999, 100000),
    ("att", "tiny-imagenet", 1): (0.999, 10000), ("att", "tiny-imagenet", 10): (0.999, 80000),
    **{("att", d, 1): (0.9999, 10000) for d in ("imagenette", "imagewoof", "imagefruit", "imagemeow")},
    **{("att", d, 10): (0.999, 100000) for d in ("imagenette", "imagewoof", "imagefruit", "imagemeow")},
}


def hparams_table(config: dict, method: str) -> str | None:
    presets, name = config["methods"], method
    while name is not None and "hparams" not in presets[name]:
        name = presets[name].get("base")
    return presets[name]["hparams"] if name else None


@pytest.mark.parametrize("paper", ["mtt", "ftd", "ast", "att", "apm"])
def test_no_paper_cell_keeps_more_initial_images_than_the_authors_own_run(paper):
    from distillery.plan import distillations

    config = load_config(ROOT, ROOT / f"config/paper/{paper}.yaml")
    checked = 0
    for dataset, settings in distillations(config):
        share = DistillConfig.from_dict(settings).initial_share()
        if share is None:
            continue
        decay, iterations = AUTHORS_EMA_RUNS[(hparams_table(config, settings["method"]), dataset, settings["ipc"])]
        assert settings["ema_decay"] == decay and settings["iterations"] >= iterations, (settings["method"], dataset)
        assert share <= decay ** iterations
        checked += 1
    assert checked > 0 or paper in ("mtt", "ast", "apm")


def test_every_test_the_ledger_names_exists():
    """docs/fidelity.md names the test pinning each row as `file.py::test_name` (or `::test_name` after one):
    each must be a test function in that file."""
    import re

    ledger = (ROOT / "docs/fidelity.md").read_text()
    named, current = 0, None
    for path, name in re.findall(r"`(?:(test_[a-z0-9_]+\.py))?::(test_[a-z0-9_]+)`", ledger):
        current = path or current
        assert current, f"{name} is named without its file"
        source = (ROOT / "tests" / current).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), f"docs/fidelity.md names {current}::{name}, not found"
        named += 1
    assert named >= 40


# Picks the ledger records for cells (method, dataset, ipc): each value as docs/fidelity.md says and why.
PICKS = [
    # MTT: the author-provided list (DCB:48, :52, :56, :74); ImageNet lr_img from the author's issue #1
    ("mtt", "cifar10", 1, {"lr_img": 100, "lr_lr": 1e-7, "lr_teacher": 0.01, "syn_steps": 50, "zca": True}),
    ("mtt", "cifar10", 10, {"lr_img": 100, "lr_lr": 1e-5, "lr_teacher": 0.001, "max_start_epoch": 20}),
    ("mtt", "cifar10", 50, {"lr_img": 1000, "lr_teacher": 0.001, "zca": False}),
    ("mtt", "tiny-imagenet", 1, {"max_start_epoch": 10, "syn_steps": 10, "model": "ConvNetD4"}),
    ("mtt", "cifar100", 50, {"batch_syn": 125, "syn_steps": 80}),
    ("mtt", "imagenette", 10, {"lr_img": 100000, "batch_syn": 20, "iterations": 5000}),
    # FTD: Table 7, run_distill.sh's ZCA, 5000 iterations; ImageNet from FTD issue #3
    ("ftd", "cifar10", 10, {"zca": True, "lr_teacher": 0.001, "ema_decay": 0.9995, "recipe": "gsam_a03"}),
    ("ftd", "cifar100", 10, {"zca": True, "iterations": 5000}),
    ("ftd", "imagenette", 10, {"lr_img": 10000, "lr_lr": 1e-4, "ema_decay": 0.999, "batch_syn": 64}),
    # ATT: README iterations, table values, experts at batch 512, ImageNet IPC 10 on all images
    ("att", "cifar10", 1, {"iterations": 6000, "syn_steps": 80, "expert_epochs": 4, "recipe": "sgd_b512"}),
    ("att", "cifar10", 50, {"iterations": 1000000, "syn_steps": 50}),
    ("att", "cifar100", 10, {"iterations": 200000}),
    ("att", "tiny-imagenet", 10, {"iterations": 80000, "ema_decay": 0.999, "lr_lr": 1e-6, "lr_teacher": 1e-3}),
    ("att_table", "tiny-imagenet", 10, {"iterations": 80000, "ema_decay": 0.999, "lr_lr": 1e-5, "lr_teacher": 1e-4}),
    ("att", "imagenette", 10, {"iterations": 100000, "batch_syn": None}),
    # APM: a fresh subset every iteration, the paper's reading one per refresh
    ("apm", "cifar10", 50, {"apm_subset": "iteration"}),
    ("apm_paper", "cifar10", 50, {"apm_subset": "refresh"}),
]


@pytest.mark.parametrize("method,dataset,ipc,expected", PICKS)
def test_paper_cells_resolve_to_the_ledgers_picks(method, dataset, ipc, expected):
    from distillery.plan import resolve_method

    settings = resolve_method(load_config(ROOT), method, dataset, ipc)
    assert {key: settings[key] for key in expected} == expected


def test_apm_teachers_keep_their_final_weights_not_a_test_selected_epoch():
    from distillery.experts import get_recipe
    from distillery.experts.train import train_expert

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat(8)
    images = torch.randn(24, 1, 8, 8, generator=g) + labels.view(-1, 1, 1, 1).float()
    recipe = get_recipe("teacher", epochs=3, batch=8, dsa=False)
    assert recipe.final_only and (recipe.lr, recipe.momentum, recipe.weight_decay) == (0.05, 0.9, 5e-4)
    trajectory, model = train_expert(images, labels, "ConvNetD1W16", 3, recipe, seed=0)
    assert trajectory.shape[0] == 2  # [initialisation, final epoch]: no epoch chosen by test accuracy
    assert torch.equal(trajectory[-1], torch.cat([p.detach().reshape(-1) for p in model.parameters()]))


# "Derive, don't copy": a comment in config/hparams/*.yaml that calls a cell (or a dataset's rows) "X's values" or
# "X's <name> row" claims every value X's table sets for it; the cell should say `from: x` and the check below holds.
CLAIM = re.compile(r"\b(mtt|ftd|ast|att|apm|datm)'s (?:[\w-]+ )?(?:values|row)\b", re.I)
KEY = re.compile(r"^( *)([\w-]+):")


def hparams_claims(text: str) -> list[tuple[str, str, str | None, str]]:
    """(table, dataset, part or None for the whole dataset, claimed table) of each claim in one hparams file: an
    inline comment belongs to its line's entry (a continuation line's to the entry it continues), a comment block
    to the next entry (table, dataset or part)."""
    claims, pending, path = [], [], ["", "", "", ""]
    for line in text.splitlines():
        code, _, comment = line.partition("#")
        found = KEY.match(code)
        depth = len(found[1]) // 2 if found and len(found[1]) % 2 == 0 and len(found[1]) <= 6 else None
        if depth is not None:
            path[depth:] = [found[2]] + [""] * (3 - depth)
            for claimed in pending:
                if depth >= 2 and path[0] == "hparams":
                    claims.append((path[1], path[2], path[3] or None, claimed))
            pending = []
        claimed = [m[1].lower() for m in CLAIM.finditer(comment)]
        if code.strip():
            if path[0] == "hparams" and path[2]:
                claims += [(path[1], path[2], path[3] or None, c) for c in claimed]
        else:
            pending += claimed
    return claims


def claim_mismatches(config: dict, claims: list[tuple[str, str, str | None, str]]) -> list[str]:
    """Each claimed value that differs from the claimed table's, for every IPC either table names (a dataset claim)
    or the claimed part's IPC."""
    from distillery.plan.settings import table_settings

    problems = []
    for table, dataset, part, other in claims:
        entries = [config["hparams"][name].get(dataset, {}) for name in (table, other)]
        ipcs = [int(part[3:])] if part and part.startswith("ipc") else \
            sorted({0} | {int(key[3:]) for entry in entries for key in entry if key.startswith("ipc")})
        for ipc in ipcs:
            ours = table_settings(config, table, dataset, ipc, table)
            theirs = table_settings(config, other, dataset, ipc, other)
            problems += [f"hparams.{table}.{dataset} ipc{ipc}: {key} {ours.get(key)!r}, {other}'s {value!r}"
                         for key, value in theirs.items() if ours.get(key) != value]
    return problems


def test_an_hparams_cell_called_another_methods_values_has_that_methods_numbers():
    """Every "X's values" in config/hparams/*.yaml holds; and the check fails on a copy gone stale (AST's CIFAR-10
    IPC 1 "MTT's values" with lr_img 1000 after MTT's became 100, the audit's finding)."""
    config = load_config(ROOT)
    claims = [claim for path in sorted((ROOT / "config/hparams").glob("*.yaml"))
              for claim in hparams_claims(path.read_text())]
    assert {(t, d, p, o) for t, d, p, o in claims} >= {("ast", "cifar10", "ipc1", "mtt"),
                                                       ("ast", "imagenette", None, "mtt")}
    assert claim_mismatches(config, claims) == []
    stale = copy.deepcopy(config)
    stale["hparams"]["ast"]["cifar10"]["ipc1"] = {"syn_steps": 50, "max_start_epoch": 2, "lr_img": 1000,
                                                  "lr_lr": 1.0e-7}
    text = "hparams:\n  ast:\n    cifar10:\n      ipc1: {syn_steps: 50, lr_img: 1000}   # MTT's values\n"
    assert claim_mismatches(stale, hparams_claims(text)) == ["hparams.ast.cifar10 ipc1: lr_img 1000, mtt's 100"]


def test_from_names_another_tables_cell_and_bad_references_are_named():
    """`from: x` stands for table x's settings of the same dataset and IPC at that point: after the table's
    default, before the cell's own keys; a missing table or dataset and a loop are errors naming them."""
    from distillery.plan import resolve_method

    config = copy.deepcopy(load_config(ROOT))
    config["hparams"]["mine"] = {"digits": {"default": {"lr_img": 7.0, "syn_steps": 9},
                                            "ipc10": {"from": "mtt", "lr_lr": 3.0e-6}}}
    config["methods"]["mine"] = {"base": "mtt", "hparams": "mine"}
    mtt = resolve_method(config, "mtt", "digits", 10)
    mine = resolve_method(config, "mine", "digits", 10)
    assert {**mine, "method": "mtt", "lr_lr": mtt["lr_lr"]} == mtt and mine["lr_lr"] == 3.0e-6
    assert resolve_method(config, "mine", "digits", 1)["lr_img"] == 7.0     # no `from` at IPC 1
    config["hparams"]["mine"]["digits"]["ipc10"]["from"] = "mtx"
    with pytest.raises(ValueError, match="hparams.mine.digits.ipc10: `from: mtx`: hyperparameter table 'mtx' is "
                                         "not defined under `hparams:`"):
        resolve_method(config, "mine", "digits", 10)
    config["hparams"]["mine"]["digits"]["ipc10"]["from"] = "apm"
    config["hparams"]["apm"] = {"cifar10": {}}
    with pytest.raises(ValueError, match="`from: apm`: no 'apm' hyperparameters for dataset 'digits'"):
        resolve_method(config, "mine", "digits", 10)
    config["hparams"]["apm"] = {"digits": {"default": {"from": "mine"}}}
    with pytest.raises(ValueError, match="loop for digits ipc10: mine.digits.ipc10 -> apm.digits.default -> mine"):
        resolve_method(config, "mine", "digits", 10)


# AST's commands @8030869, as its authors wrote them (the flags that matter here), with the line each is on.
AST_README_EXPERTS = ("README.md:12", "--optim SGDMOM --loss_decay --gp True --train_epochs=50 --num_experts=100 --zca")
AST_BUFFER_SH = ("buffer.sh:13", "--dataset=CIFAR100 --model=ConvNet --train_epochs=50 --num_experts=50")
AST_COMMANDS = {
    ("cifar100", 1): ("README.md:22", "--dataset=CIFAR100 --ipc=1 --pix_init avg --weight_perturb --agg_middle_loss "
                      "--balance_loss --syn_steps=20 --expert_epochs=3 --max_start_epoch=20 --zca --lr_img=1000 "
                      "--lr_lr=1e-05 --lr_teacher=0.01"),
    ("cifar100", 10): ("distill.sh:14", "--Iteration 5000 --pix_init avg --weight_perturb --agg_middle_loss "
                       "--lr_img=1000 --lr_teacher 0.01 --lr_lr=1e-05 --dataset=CIFAR100 --ipc=10 --batch_syn 128 "
                       "--syn_steps=20 --expert_epochs=2 --max_start_epoch=30"),
    ("cifar10", 10): ("distill.sh:16", "--Iteration 5000 --weight_perturb --zca --balance_loss --agg_middle_loss "
                      "--lr_img=100 --lr_teacher 0.01 --lr_lr=1e-06 --dataset=CIFAR10 --ipc=10 --syn_steps=30 "
                      "--expert_epochs=2 --max_start_epoch=20"),
    ("cifar100", 50): ("distill.sh:21", "--Iteration 5000 --pix_init avg --lr_img=1000 --lr_teacher 0.01 --lr_lr=1e-05 "
                       "--dataset=CIFAR100 --ipc=50 --batch_syn 700 --syn_steps=80 --expert_epochs=2 "
                       "--max_start_epoch=40"),
    ("tiny-imagenet", 1): ("distill.sh:24", "--Iteration 5000 --weight_perturb --agg_middle_loss --lr_img=10000 "
                           "--lr_teacher 0.01 --lr_lr=1e-04 --dataset=Tiny --ipc=1 --model ConvNetD4 --syn_steps=10 "
                           "--expert_epochs=2 --max_start_epoch=10"),
}
# The variant ast_sh: distill.sh:11 where it and the README disagree, and buffer.sh's experts that :11 and :14 read.
AST_SH_COMMANDS = {
    ("cifar100", 1): ("distill.sh:11", "--Iteration 5000 --pix_init avg --weight_perturb --agg_middle_loss "
                      "--lr_img=100 --lr_teacher 0.01 --lr_lr=1e-05 --dataset=CIFAR100 --ipc=1 --syn_steps=40 "
                      "--expert_epochs=3 --max_start_epoch=15"),
    ("cifar100", 10): AST_COMMANDS[("cifar100", 10)],
}


def flags(command: str) -> dict:
    """`--key value`, `--key=value` and bare `--switch` of a command line."""
    words, found = command.replace("=", " ").split(), {}
    for i, word in enumerate(words):
        if word.startswith("--"):
            found[word[2:]] = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else True
    return found


def ast_settings(command: str, ipc: int) -> dict:
    """Our settings for one distill.py command (argparse defaults @8030869 for what it leaves out: Iteration 5000
    :699, model ConvNet :684, batch_syn None :714, pix_init real :717); --pix_init avg at an IPC the code's k-means
    cannot fill (int(IPC/10) = 0) is the paper's reading."""
    given = flags(command)
    representative = given.get("pix_init") == "avg"
    return {"iterations": int(given.get("Iteration", 5000)), "model": given.get("model", "ConvNet"),
            "syn_steps": int(given["syn_steps"]), "expert_epochs": int(given["expert_epochs"]),
            "max_start_epoch": int(given["max_start_epoch"]), "lr_img": float(given["lr_img"]),
            "lr_lr": float(given["lr_lr"]), "lr_teacher": float(given["lr_teacher"]),
            "batch_syn": int(given["batch_syn"]) if "batch_syn" in given else None, "zca": "zca" in given,
            "init": "representative" if representative else "real", "balance": "balance_loss" in given,
            "intermediate": "equal" if "agg_middle_loss" in given else "none",
            "perturb": "weight" if "weight_perturb" in given else "none", "inner_momentum": 0.9,
            **({"representative": "logits" if ipc % 10 == 0 else "features"} if representative else {})}


def expert_recipe(command: str) -> str:
    """Our recipe for one buffer.py command (--optim SGDMOM and --gp False by default, buffer.py:164-166)."""
    given = flags(command)
    assert given.get("optim", "SGDMOM") == "SGDMOM"
    return {(True, True): "smooth", (True, False): "smooth_gp", (False, False): "sgd_momentum"}[
        (given.get("gp", "False") == "True", "loss_decay" in given)]


def test_every_ast_paper_cell_is_its_authors_command_or_the_stated_rule():
    """Each `ast` cell of config/paper/ast.yaml resolves to its command above (components, hyperparameters), the
    README's expert recipe and buffer.sh's count of experts; a cell without a command to MTT's hyperparameters with
    the README command's four components; `ast_sh` to distill.sh:11 and buffer.sh's experts."""
    from distillery.plan import expert_files, resolve_method, table_cells

    config = load_config(ROOT, ROOT / "config/paper/ast.yaml")
    count = int(flags(AST_BUFFER_SH[1])["num_experts"])
    readme = ast_settings(AST_COMMANDS[("cifar100", 1)][1], 1)
    components = ("init", "balance", "intermediate", "perturb")
    cells = {(c.method, c.dataset, c.ipc) for c in table_cells(config) if c.method in ("ast", "ast_sh")}
    assert len(cells) == 18   # Tables III-VI: 8 CIFAR and Tiny cells, 8 ImageNet-subset cells; ast_sh: 2
    for method, dataset, ipc in sorted(cells):
        settings = resolve_method(config, method, dataset, ipc)
        commands = AST_COMMANDS if method == "ast" else AST_SH_COMMANDS
        if (dataset, ipc) in commands:
            expected = ast_settings(commands[(dataset, ipc)][1], ipc)
        else:   # no command: MTT's values, the README's components
            mtt = resolve_method(config, "mtt", dataset, ipc)
            expected = {**{k: mtt[k] for k in ("iterations", "model", "syn_steps", "expert_epochs", "max_start_epoch",
                                                 "lr_img", "lr_lr", "lr_teacher", "batch_syn", "zca")},
                        **{k: readme[k] for k in components}, "inner_momentum": 0.9,
                        "representative": "logits" if ipc % 10 == 0 else "features"}
        where = f"{method} {dataset} ipc{ipc} ({commands.get((dataset, ipc), ('rule',))[0]})"
        assert {k: settings[k] for k in expected} == expected, where
        assert settings["perturb_scale"] == (1.0 if settings["perturb"] == "weight" else 0.0), where
        buffer = AST_BUFFER_SH if method == "ast_sh" else AST_README_EXPERTS
        assert settings["recipe"] == expert_recipe(buffer[1]), where
        assert len(expert_files(config, dataset, settings)) == count, where
