"""Honest numbers beside the papers' (docs/evaluation.md): the held-out validation split, snapshots during
distillation, the three selection rules and DD-Ranking's scores, at the library level and in the planner."""
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from distillery.checkpoint import Checkpoint
from distillery.data import load_meta, load_split, prepare
from distillery.data.prepare import holdout_indices
from distillery.distill.config import DistillConfig
from distillery.distill.run import adversarial, load_training, match_trajectories, run_distillation
from distillery.distill.snapshots import Snapshots, snapshot_iterations
from distillery.evaluate import EvalConfig, evaluate_synset
from distillery.experts import run_expert_training
from distillery.io import beside, save_json, sha256_file
from distillery.plan import check_config, load_config, table_sources
from distillery.plan.cost import config_cost
from distillery.plan.targets import snapshot_distillations
from distillery.report.scores import score, score_records
from distillery.report.selection import select
from distillery.report.tables import write_table
from distillery.synset import load_synset

ROOT = Path(__file__).resolve().parents[1]
MTT = dict(method="mtt", kind="trajectory", ipc=1, model="ConvNetD2W16", iterations=9, syn_steps=4, expert_epochs=1,
           max_start_epoch=2, lr_img=100.0, lr_lr=1e-6, lr_teacher=0.01, batch_syn=10)
EVAL = EvalConfig(epochs=8)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """digits prepared whole and with 10 images per class held out, and two 3-epoch experts of the held-out one."""
    root = tmp_path_factory.mktemp("honest")
    prepare("digits", root, root / "whole")
    prepare("digits", root, root / "split", validation={"per_class": 10})
    experts = [root / f"expert{k}.pt" for k in range(2)]
    for k, path in enumerate(experts):
        run_expert_training(root / "split", path, "ConvNetD2W16", "sgd", k, overrides={"epochs": 3, "batch": 64})
    return root, experts


def split_files(prepared: Path) -> dict:
    return {name: torch.load(prepared / name, weights_only=True) for name in ("train.pt", "val.pt")}


def test_the_validation_split_is_held_out_of_the_training_split_class_by_class(digits):
    """train.pt is the whole training split with exactly the held-out images removed (one image leaked into it, or
    one training image lost, and the equality fails), and val.pt holds 10 of each class."""
    root, _ = digits
    whole = torch.load(root / "whole/train.pt", weights_only=True)
    split = split_files(root / "split")
    held = split["val.pt"]["indices"]
    keep = torch.ones(len(whole["labels"]), dtype=torch.bool)
    keep[held] = False
    assert torch.equal(split["train.pt"]["images"], whole["images"][keep])
    assert torch.equal(split["train.pt"]["labels"], whole["labels"][keep])
    assert torch.equal(split["val.pt"]["images"], whole["images"][held])
    assert torch.equal(split["val.pt"]["labels"], whole["labels"][held])
    assert torch.bincount(split["val.pt"]["labels"]).tolist() == [10] * 10
    assert len(set(held.tolist())) == 100 and len(split["train.pt"]["labels"]) == len(whole["labels"]) - 100
    meta = load_meta(root / "split")
    assert meta["n_train"] == len(whole["labels"]) - 100 and meta["validation"] == {"per_class": 10, "seed": 0, "n": 100}
    images, labels = load_split(root / "split", "validation")
    assert images.shape == (100, 1, 8, 8) and torch.equal(labels, whole["labels"][held])


def test_the_validation_split_is_the_same_in_every_job_and_for_every_seed(digits, tmp_path):
    """Prepared again, the files are identical; the split depends on its own seed only (no distillation or evaluation
    seed reaches it), and another split seed draws other images."""
    root, _ = digits
    prepare("digits", root, tmp_path / "again", validation={"per_class": 10})
    for name in ("train.pt", "val.pt", "test.pt"):
        assert sha256_file(tmp_path / "again" / name) == sha256_file(root / "split" / name)
    labels = torch.load(root / "whole/train.pt", weights_only=True)["labels"]
    assert torch.equal(holdout_indices(labels, 10, 10, 0), split_files(root / "split")["val.pt"]["indices"])
    assert not torch.equal(holdout_indices(labels, 10, 10, 1), holdout_indices(labels, 10, 10, 0))


def test_only_the_evaluation_reads_the_validation_split():
    """No trainer can read the held-out images: the only load of the validation split is evaluate.py's."""
    readers = [path.relative_to(ROOT / "src").as_posix() for path in (ROOT / "src/distillery").rglob("*.py")
               if '"validation", zca=' in path.read_text()]
    assert readers == ["distillery/evaluate.py"]


def test_a_dataset_without_a_split_or_a_split_too_large_is_refused_naming_the_key(digits):
    root, _ = digits
    with pytest.raises(ValueError, match=r"no validation split.*validation\.digits\.per_class"):
        load_split(root / "whole", "validation")
    with pytest.raises(ValueError, match="would leave none"):
        holdout_indices(torch.tensor([0, 0, 1, 1]), 2, 2)
    config = load_config(ROOT)
    config["validation"] = {"digits": {"per_class": 131}}
    with pytest.raises(ValueError, match=r"validation\.digits\.per_class=131 would hold out every image"):
        check_config(config)
    config["validation"] = {"digits": {"per_class": 125}}
    with pytest.raises(ValueError, match="IPC 10 is larger than the smallest class after holding out 125"):
        check_config(config)


def test_snapshots_are_the_sets_the_run_would_have_returned_at_their_iterations(digits, tmp_path):
    """snapshot_every 3 over 9 iterations keeps iterations 0, 3 and 6; the one at 3 is the result of a 3-iteration run
    (images, lr), and keeping snapshots changes nothing of the final set."""
    root, experts = digits
    assert snapshot_iterations(3, 9) == [0, 3, 6] and snapshot_iterations(5, 5) == [0]
    paths = [tmp_path / f"snapshots/it{i}.pt" for i in (0, 3, 6)]
    run_distillation(MTT, root / "split", tmp_path / "s.pt", tmp_path / "s.csv", expert_paths=experts,
                     snapshot_every=3, snapshot_paths=paths)
    run_distillation(MTT, root / "split", tmp_path / "plain.pt", tmp_path / "plain.csv", expert_paths=experts)
    run_distillation({**MTT, "iterations": 3}, root / "split", tmp_path / "three.pt", tmp_path / "three.csv",
                     expert_paths=experts)
    final, plain, three = (load_synset(tmp_path / f"{n}.pt") for n in ("s", "plain", "three"))
    assert torch.equal(final["images"], plain["images"]) and final["lr"] == plain["lr"]
    assert final["meta"]["iteration"] == 9
    snaps = [load_synset(p) for p in paths]
    assert [s["meta"]["iteration"] for s in snaps] == [0, 3, 6]
    assert torch.equal(snaps[1]["images"], three["images"]) and snaps[1]["lr"] == three["lr"]
    assert snaps[0]["lr"] == torch.tensor(MTT["lr_teacher"]).item() and not torch.equal(snaps[0]["images"], three["images"])
    assert not beside(tmp_path / "s.pt", "snapshots").exists(), "the staging folder is gone once published"


class Killed(Exception):
    pass


class StopAfter(Checkpoint):
    """A checkpoint that 'kills' the run (raises) right after its first save, in-process."""

    def step(self, step, state):
        super().step(step, state)
        if self.path.exists() and step % self.every == 0:
            raise Killed


@pytest.mark.parametrize("changes", [{}, {"ema_decay": 0.9}], ids=["mtt", "ftd-ema"])
def test_snapshots_survive_preemption_and_resume_bit_for_bit(digits, tmp_path, changes):
    """Killed after its checkpoint at iteration 4 (snapshots 0 and 3 staged), the resumed run writes the rest; every
    snapshot equals the uninterrupted run's, bit for bit."""
    root, experts = digits
    cfg = DistillConfig.from_dict({**MTT, **changes, "iterations": 8})
    meta, images, labels = load_training(cfg, root / "split", None, "cpu")

    def snapshots(folder: Path) -> Snapshots:
        return Snapshots([folder / f"it{i}.pt" for i in (0, 3, 6)], 3, 8, {"method": "mtt"}, folder / ".staged")

    reference = match_trajectories(cfg, meta, images, labels, experts, snapshots=(ref := snapshots(tmp_path / "a")))
    ref.publish()
    with pytest.raises(Killed):
        match_trajectories(cfg, meta, images, labels, experts, StopAfter(tmp_path / "ckpt", 4, {"t": 1}),
                           snapshots=snapshots(tmp_path / "b"))
    assert sorted(p.name for p in (tmp_path / "b/.staged").iterdir()) == ["it0.pt", "it3.pt"]
    resumed = match_trajectories(cfg, meta, images, labels, experts, Checkpoint(tmp_path / "ckpt", 4, {"t": 1}),
                                 snapshots=(again := snapshots(tmp_path / "b")))
    again.publish()
    assert torch.equal(reference.images, resumed.images)
    for i in (0, 3, 6):
        a, b = load_synset(tmp_path / f"a/it{i}.pt"), load_synset(tmp_path / f"b/it{i}.pt")
        assert torch.equal(a["images"], b["images"]) and a["lr"] == b["lr"] and a["meta"] == b["meta"]


def test_apm_snapshots_carry_the_soft_labels_of_that_point_and_change_nothing(digits, tmp_path):
    root, experts = digits
    cfg = DistillConfig(method="apm", kind="adversarial", ipc=1, model="ConvNetD2W16", iterations=4, lr_img=0.1,
                        student_epochs=2, checkpoints=1, mid_gap=1, student_batch=10)
    meta, images, labels = load_training(cfg, root / "split", None, "cpu")
    plain = adversarial(cfg, meta, images, labels, experts)
    kept = Snapshots([tmp_path / "it0.pt", tmp_path / "it2.pt"], 2, 4, {"method": "apm"}, tmp_path / ".staged")
    result = adversarial(cfg, meta, images, labels, experts, snapshots=kept)
    kept.publish()
    assert torch.equal(plain.images, result.images) and torch.equal(plain.soft_labels, result.soft_labels)
    snapshot = load_synset(tmp_path / "it2.pt")
    assert snapshot["soft_labels"].shape == (10, 10) and snapshot["lr"] == cfg.lr_net


def shuffled_test_split(prepared: Path, out: Path) -> Path:
    """A copy of a prepared dataset whose test labels are permuted (meta.json's checksum updated)."""
    shutil.copytree(prepared, out)
    test = torch.load(out / "test.pt", weights_only=True)
    test["labels"] = test["labels"][torch.randperm(len(test["labels"]), generator=torch.Generator().manual_seed(0))]
    torch.save(test, out / "test.pt")
    meta = json.loads((out / "meta.json").read_text())
    meta["sha256"]["test.pt"] = sha256_file(out / "test.pt")
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def test_the_validation_pick_never_reads_the_test_split(digits, tmp_path):
    """Candidates (two snapshots and the final set, two evaluation lengths) evaluated on the real test split and on one
    whose labels are shuffled: the validation accuracies and the validation pick are the same, the test accuracies
    not."""
    root, experts = digits
    paths = [tmp_path / f"it{i}.pt" for i in (0, 3, 6)]
    run_distillation(MTT, root / "split", tmp_path / "final.pt", tmp_path / "log.csv", expert_paths=experts,
                     snapshot_every=3, snapshot_paths=paths)
    shuffled = shuffled_test_split(root / "split", tmp_path / "shuffled")
    picks, tests = [], []
    for prepared in (root / "split", shuffled):
        records = []
        for choice, cfg in (("default", EVAL), ("long", EvalConfig(epochs=16))):
            for iteration, path in ((0, paths[0]), (6, paths[2]), (None, tmp_path / "final.pt")):
                for seed in (0, 1):
                    result = evaluate_synset(path, prepared, "ConvNetD2W16", seed, cfg, validation=True)
                    records.append({"method": "mtt", "dataset": "digits", "ipc": 1, "arch": "ConvNetD2W16",
                                    "protocol": "default", "choice": choice, "iteration": iteration, "seed": seed,
                                    "test": 100 * result["accuracy"], "validation": 100 * result["validation_accuracy"]})
        picks.append(select(records, ["validation"]).iloc[0][["validation_choice", "validation_iteration"]].tolist())
        tests.append([r["test"] for r in records])
        if prepared == shuffled:
            assert [r["validation"] for r in records] == validations
        validations = [r["validation"] for r in records]
    assert picks[0] == picks[1]
    assert tests[0] != tests[1]


def records_of(candidates: dict) -> list[dict]:
    """Selection records of one cell: {(choice, iteration): [(test, validation) per seed]}."""
    cell = {"method": "mtt", "dataset": "digits", "ipc": 1, "arch": "ConvNetD2W32", "protocol": "default"}
    return [{**cell, "choice": c, "iteration": i, "seed": s, "test": t, "validation": v}
            for (c, i), seeds in candidates.items() for s, (t, v) in enumerate(seeds)]


CANDIDATES = {("default", None): [(50.0, 70.0), (52.0, 72.0)],   # test mean 51, validation mean 71
              ("default", 10): [(60.0, 75.0), (40.0, 77.0)],     # test mean 50, validation mean 76: the validation pick
              ("long", 20): [(55.0, 60.0), (57.0, 60.0)],        # test mean 56: the test pick
              ("long", None): [(45.0, 65.0), (47.0, 65.0)]}


def test_each_rule_picks_by_hand():
    """final: the final set under the cell's protocol; validation: the best mean validation accuracy (it 10: 76),
    its test accuracy reported (50 ± 10); test: the best mean test accuracy (long, it 20: 56 ± 1)."""
    row = select(records_of(CANDIDATES), ["final", "validation", "test"]).iloc[0]
    assert (row["final_mean"], row["final_std"], row["final_n"]) == (51.0, 1.0, 2)
    assert (row["validation_choice"], row["validation_iteration"]) == ("default", 10)
    assert (row["validation_mean"], row["validation_std"]) == (50.0, 10.0)
    assert (row["test_choice"], row["test_iteration"]) == ("long", 20)
    assert (row["test_mean"], row["test_std"]) == (56.0, 1.0)
    assert (row["mean"], row["std"], row["n"]) == (51.0, 1.0, 2)


def test_the_test_rule_is_the_max_of_the_mean_test_accuracy_and_ties_keep_the_final_set():
    generator = torch.Generator().manual_seed(0)
    candidates = {("default", i): [(float(t), 0.0) for t in torch.randint(0, 100, (3,), generator=generator)]
                  for i in (None, 0, 5, 10, 15)}
    row = select(records_of(candidates), ["test"]).iloc[0]
    best = max(sum(t for t, _ in seeds) / 3 for seeds in candidates.values())
    assert row["test_mean"] == pytest.approx(best)
    tied = {("default", None): [(50.0, 1.0)], ("default", 5): [(50.0, 1.0)]}
    row = select(records_of(tied), ["validation", "test"]).iloc[0]
    assert pd.isna(row["test_iteration"]) and pd.isna(row["validation_iteration"])


def test_the_validation_pick_ignores_the_test_accuracies_it_is_given():
    """Whatever the test accuracies, the validation rule picks the same candidate (its validation accuracy only)."""
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        scrambled = {c: [(float(torch.rand(1, generator=generator)) * 100, v) for _, v in seeds]
                     for c, seeds in CANDIDATES.items()}
        row = select(records_of(scrambled), ["validation"]).iloc[0]
        assert (row["validation_choice"], row["validation_iteration"]) == ("default", 10)


def test_the_validation_rule_without_validation_accuracies_names_the_key():
    no_split = {c: [(t, None) for t, _ in seeds] for c, seeds in CANDIDATES.items()}
    with pytest.raises(ValueError, match=r"validation\.digits\.per_class"):
        select(records_of(no_split), ["validation"])


def test_lrs_and_ars_equal_their_definitions_by_hand():
    """HLR = 0.9 − 0.5 = 0.4, IOR = 0.6 − 0.4 = 0.2; α = 0.5·0.2 − 0.5·0.4 = −0.1, LRS = (e^−0.1 − e^−1)/(e − e^−1)
    = (0.904837 − 0.367879)/(2.718282 − 0.367879) = 0.228454. ARS: β = 0.5·0.2 + 0.5·(0.30 − 0.35) = 0.075,
    (e^0.075 − e^−1)/(e − e^−1) = (1.077884 − 0.367879)/2.350402 = 0.302078. w = 0.8: α = 0.16 − 0.08 = 0.08,
    (1.083287 − 0.367879)/2.350402 = 0.304377."""
    acc = {"real_hard": 0.9, "syn_hard": 0.5, "syn_any": 0.6, "rdm_any": 0.4, "syn_naug": 0.30, "rdm_naug": 0.35}
    assert score("hlr", acc) == pytest.approx(40.0)
    assert score("ior", acc) == pytest.approx(20.0)
    assert score("lrs", acc) == pytest.approx(22.8454, abs=1e-4)
    assert score("ars", acc) == pytest.approx(30.2078, abs=1e-4)
    assert score("lrs", acc, 0.8) == pytest.approx(30.4377, abs=1e-4)
    best = {"real_hard": 0.9, "syn_hard": 0.9, "syn_any": 1.0, "rdm_any": 0.0}
    assert score("lrs", best, 1.0) == pytest.approx(100.0)   # α = 1: the top of [0, 1]
    assert score("lrs", {**best, "syn_hard": 0.0, "syn_any": 0.0, "rdm_any": 1.0, "real_hard": 1.0}) == pytest.approx(0)


def test_a_score_table_averages_the_per_seed_scores(tmp_path):
    """Two seeds with their own four evaluations: the table shows the mean and population std of the two LRS values,
    each from the same seed of every role; a missing role is named."""
    sources, expected = [], []
    cell = {"method": "mtt", "dataset": "digits", "ipc": 1, "arch": "ConvNetD2W32", "protocol": "default"}
    for seed, acc in enumerate([{"real_hard": 0.9, "syn_hard": 0.5, "syn_any": 0.6, "rdm_any": 0.4},
                                {"real_hard": 0.8, "syn_hard": 0.6, "syn_any": 0.7, "rdm_any": 0.3}]):
        for role, value in acc.items():
            path = tmp_path / f"{role}{seed}.json"
            save_json({"accuracy": value}, path)
            sources.append({**cell, "role": role, "choice": "default", "seed": seed, "path": str(path)})
        expected.append(100 * (math.exp(0.5 * (acc["syn_any"] - acc["rdm_any"]) - 0.5 * (acc["real_hard"]
                                                                                          - acc["syn_hard"]))
                               - math.exp(-1)) / (math.exp(1) - math.exp(-1)))
    table = write_table(sources, tmp_path / "t.csv", tmp_path / "t.md", "LRS", measure="lrs")
    assert table["mean"].iloc[0] == pytest.approx(sum(expected) / 2)
    assert table["std"].iloc[0] == pytest.approx(abs(expected[0] - expected[1]) / 2)
    assert "label-robust score" in (tmp_path / "t.md").read_text()
    with pytest.raises(ValueError, match="no rdm_any evaluation"):
        score_records([{**cell, "seed": 0, "role": "syn_any", "value": 50.0}], "ior")


def honest_config(**table) -> dict:
    """The default config with the example's validation split and protocols, and one table."""
    config = load_config(ROOT, ROOT / "config/examples/honest.yaml")
    config["tables"] = [{"name": "t", "cells": [{"method": ["random", "mtt"], "dataset": "digits", "ipc": 1}], **table}]
    return config


def test_a_selecting_table_reads_every_candidate_and_a_score_its_roles():
    config = honest_config(selection={"rules": ["final", "validation", "test"], "snapshot_every": 50,
                                      "choices": ["epochs100"]})
    sources = table_sources(config, "t")
    mtt = [s for s in sources if s["method"] == "mtt"]
    assert len(mtt) == 2 * 5 * 3     # choices × (final + snapshots 0, 50, 100, 150) × seeds
    assert {s["iteration"] for s in mtt} == {None, 0, 50, 100, 150}
    assert "results/evals/mtt/digits/ipc1/ConvNetD2W32/epochs100/it50/seed2.json" in {s["path"] for s in mtt}
    assert len([s for s in sources if s["method"] == "random"]) == 2 * 1 * 3   # a coreset has only its final set
    assert snapshot_distillations(config)[0]["snapshots"][-1] == "results/synsets/mtt/digits/ipc1/snapshots/it150.pt"
    config = honest_config(measure="ars")
    paths = {s["role"]: s["path"] for s in table_sources(config, "t") if s["method"] == "mtt" and s["seed"] == 0}
    assert paths == {"syn_any": "results/evals/mtt/digits/ipc1/ConvNetD2W32/default/seed0.json",
                     "rdm_any": "results/evals/random/digits/ipc1/ConvNetD2W32/default/seed0.json",
                     "syn_naug": "results/evals/mtt/digits/ipc1/ConvNetD2W32/default~noaug/seed0.json",
                     "rdm_naug": "results/evals/random/digits/ipc1/ConvNetD2W32/default~noaug/seed0.json"}
    config = honest_config(measure="hlr")
    paths = {s["role"]: s["path"] for s in table_sources(config, "t") if s["method"] == "mtt" and s["seed"] == 0}
    assert paths["real_hard"] == "results/real/digits/std/ConvNetD2W32/default/seed0.json"


@pytest.mark.parametrize("table,config,message", [
    ({"selection": {"rules": ["final", "validation"]}}, {"validation": {}}, r"needs a held-out validation split; set "
                                                                            r"validation\.digits\.per_class"),
    ({"selection": {"rules": ["final"], "choices": ["epochs100"]}}, {}, "chosen among only by the validation and test"),
    ({"measure": "avg_var", "selection": {"rules": ["test"]}}, {}, "selection rules apply to measure accuracy"),
    ({"measure": "lrs", "cells": [{"method": "mtt", "dataset": "digits", "ipc": 1, "protocol": "soft"}]},
     {"protocols": {"soft": {"soft_labels": True}}}, "which a random subset does not have"),
    ({"selection": {"rules": ["test"], "choices": ["nine"]}}, {}, "unknown evaluation protocol 'nine'"),
], ids=["validation without a split", "choices without a rule", "not accuracy", "soft scores", "unknown choice"])
def test_a_selection_or_score_the_config_cannot_give_is_refused_before_any_job(table, config, message):
    full = {**honest_config(**table), **config}
    with pytest.raises(ValueError, match=message):
        check_config(full)


def test_two_tables_asking_one_distillation_for_different_snapshots_are_refused():
    config = honest_config(selection={"snapshot_every": 50})
    config["tables"].append({"name": "u", "cells": [{"method": "mtt", "dataset": "digits", "ipc": 1,
                                                      "snapshot_every": 40}]})
    with pytest.raises(ValueError, match="snapshots every 50 and every 40 iterations"):
        check_config(config)


def test_plan_cost_counts_the_extra_evaluations_of_the_example():
    config = load_config(ROOT, ROOT / "config/examples/honest.yaml")
    rows = pd.DataFrame(config_cost(config, "cpu")[0])
    total = rows[rows["table"] == "total"].set_index("kind")["jobs"].to_dict()
    assert total["evaluate_snapshot"] == 4 * 2 * 3       # snapshots × choices × seeds
    assert total["evaluate_real"] == 3                     # one per seed, for HLR
    assert total["evaluate"] == 18                         # final sets: (2 methods × 2 choices + 2 ~noaug) × 3 seeds
    assert total["distill"] == 2                           # mtt (with its snapshots) and the random subset


def test_a_selection_table_puts_the_rules_beside_the_paper_and_splits_delta(tmp_path):
    """final 51, validation 50 (it 10), test 56 (it 20, epochs long), paper 60: Δ = −9 = (56 − 60) + (51 − 56)."""
    sources = []
    for record in records_of(CANDIDATES):
        path = tmp_path / f"{record['choice']}-{record['iteration']}-{record['seed']}.json"
        save_json({"accuracy": record["test"] / 100, "validation_accuracy": record["validation"] / 100}, path)
        sources.append({**{k: record[k] for k in ("method", "dataset", "ipc", "arch", "protocol", "choice", "iteration",
                                                 "seed")}, "path": str(path)})
    reported = tmp_path / "reported.csv"
    reported.write_text("paper,table,method,dataset,ipc,arch,mean,std\nmtt,t1,mtt,digits,1,ConvNetD2W32,60.0,\n")
    table = write_table(sources, tmp_path / "t.csv", tmp_path / "t.md", "T", reported_paths=[reported], paper="mtt",
                        table_name="t1", tex_path=tmp_path / "t.tex", rules=["final", "validation", "test"])
    row = table.iloc[0]
    assert (row["diff"], row["test_diff"], row["selection_diff"]) == (-9.0, -4.0, -5.0)
    lines = (tmp_path / "t.md").read_text().splitlines()
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == [
        "method", "dataset", "ipc", "arch", "final", "validation", "test ‡", "paper", "Δ", "Δ test ‡ − paper",
        "Δ final − test ‡", "n"]
    assert [c.strip() for c in lines[4].split("|")[5:12]] == [
        "51.00 ± 1.00", "50.00 ± 10.00 (it 10)", "56.00 ± 1.00 (it 20, long)", "60.0", "−9.0", "−4.0", "−5.0"]
    assert "selected on the test set" in (tmp_path / "t.md").read_text()
    tex = (tmp_path / "t.tex").read_text()
    assert r"test $\ddagger$ $-$ paper" in tex and r"56.00 $\pm$ 1.00 (it 20, long)" in tex and "−" not in tex
    csv = pd.read_csv(tmp_path / "t.csv")
    assert csv.loc[0, "test_iteration"] == 20 and csv.loc[0, "test_choice"] == "long"
