"""Integration tier: each method family's presets run end to end through the workflow on digits (AST and its
ablation, ATT's matched steps and stability study, APM's groups and soft labels, DATM), in this process
(conftest.snakemake), on the session's shared digits experts (conftest.shared_experts)."""
import json

import pandas as pd
import pytest
import torch

from conftest import EXPERTS, job_counts, snakemake


AST_TINY = {
    "experts": EXPERTS,
    "evaluation": {"seeds": 1, "epochs": 10},
    "distill": {"overrides": {"iterations": 6, "syn_steps": 4, "max_start_epoch": 2}},
    "tables": [
        {"name": "ablation", "cells": [{"method": ["ast_base", "ast_init", "ast_balance", "ast_intermediate", "ast"],
                                        "dataset": "digits", "ipc": 2}]},
        {"name": "smooth", "measure": "avg_var", "figures": ["smoothness"],
         "cells": [{"method": ["mtt", "mtt_momentum", "ast_base"], "dataset": "digits", "ipc": 2}]},
        {"name": "experts", "measure": "expert_accuracy",
         "cells": [{"method": ["mtt", "ast_base"], "dataset": "digits", "ipc": 2}]},
        {"name": "speed", "measure": "seconds_per_iteration",
         "cells": [{"method": "ast", "dataset": "digits", "ipc": 2}]},
    ],
}


@pytest.mark.slow
def test_ast_and_its_ablation_run_through_the_workflow(tmp_path, shared_experts):
    """AST's presets, expert statistics (Avg_Var, expert accuracy), Figure 9 and the timing table on digits."""
    dry = snakemake(tmp_path, AST_TINY, "-n", "--cores", "2")
    assert dry.returncode == 0, dry.stderr[-3000:]
    # smooth_table needs no distillation of mtt_momentum: the stats of its experts only
    assert job_counts(dry.stdout) == {"all": 1, "cost": 1, "prepare_data": 1, "train_expert": 6, "expert_stats": 3,
                                      "distill": 5, "evaluate": 5, "table": 4, "table_figure": 1,
                                      "plot_cell": 5}
    shared_experts(tmp_path, AST_TINY)
    assert "train_expert" not in job_counts(snakemake(tmp_path, AST_TINY, "-n", "--cores", "2").stdout)
    result = snakemake(tmp_path, AST_TINY, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    ablation = pd.read_csv(tmp_path / "results/tables/ablation.csv")
    assert ablation["method"].tolist() == ["ast_base", "ast_init", "ast_balance", "ast_intermediate", "ast"]
    assert ablation["mean"].between(0, 100).all()
    smooth = pd.read_csv(tmp_path / "results/tables/smooth.csv")
    assert smooth["method"].tolist() == ["mtt", "mtt_momentum", "ast_base"] and (smooth["mean"] > 0).all()
    assert (smooth["n"] == 2).all()                                    # one Avg_Var per expert
    experts = pd.read_csv(tmp_path / "results/tables/experts.csv")
    assert experts["mean"].between(0, 100).all() and (experts["n"] == 2).all()
    speed = pd.read_csv(tmp_path / "results/tables/speed.csv")
    assert speed["n"].tolist() == [5] and (speed["mean"] > 0).all()    # 6 iterations, the first left out
    assert "Avg_Var" in (tmp_path / "results/tables/smooth.md").read_text()
    figure = tmp_path / "results/figures/tables/smooth/smoothness.png"
    assert figure.read_bytes()[:4] == b"\x89PNG"
    synset = torch.load(tmp_path / "results/synsets/ast/digits/ipc2/synset.pt", weights_only=True)
    assert synset["meta"]["init"] == "representative" and synset["meta"]["perturb"] == "weight"
    assert synset["meta"]["inner_momentum"] == 0.9


ATT_TINY = {
    "experts": EXPERTS,
    "evaluation": {"seeds": 1, "epochs": 10},
    "distill": {"overrides": {"iterations": 6, "max_start_epoch": 2}},
    "methods": {"att_ns4": {"base": "att", "syn_steps": 4}, "att_ns8": {"base": "att", "syn_steps": 8}},
    "tables": [{"name": "steps", "figures": ["match_steps"],
                "cells": [{"method": ["att_ns4", "att_ns8"], "dataset": "digits", "ipc": 1}]}],
    "stability": [{"name": "study", "methods": ["mtt", "att"], "dataset": "digits", "ipc": 1,
                   "parameters": ["lr_img", "lr_lr"], "multipliers": [1, 1e9], "seeds": 2, "iterations": 3}],
}


@pytest.mark.slow
def test_att_match_steps_and_stability_study_run_through_the_workflow(tmp_path, shared_experts):
    shared_experts(tmp_path, ATT_TINY)
    result = snakemake(tmp_path, ATT_TINY, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    log = pd.read_csv(tmp_path / "results/synsets/att_ns8/digits/ipc1/log.csv")
    assert log["match_step"].between(1, 8).all() and len(log) == 6
    assert (tmp_path / "results/figures/tables/steps/match_steps.png").read_bytes()[:4] == b"\x89PNG"
    counts = pd.read_csv(tmp_path / "results/stability/study/counts.csv")
    assert len(counts) == 2 * 2 * 2 and (counts["runs"] == 2).all()
    ok = counts.set_index(["method", "parameter", "multiplier"])["successes"]
    assert ok[("mtt", "lr_img", 1)] == 2 and ok[("att", "lr_img", 1)] == 2   # the tuned settings run
    assert ok[("mtt", "lr_lr", 1e9)] == 0                                     # the learned lr is driven below 0
    assert (tmp_path / "results/figures/stability/study/stability.png").read_bytes()[:4] == b"\x89PNG"
    assert "lr_lr" in (tmp_path / "results/stability/study/counts.md").read_text()


APM_TINY = {
    "experts": EXPERTS,
    "evaluation": {"seeds": 1, "epochs": 10},
    "protocols": {"soft": {"soft_labels": True}},
    "distill": {"overrides": {"iterations": 4, "student_epochs": 4, "checkpoints": 2}},
    "methods": {"apm_groups1": {"kind": "merged", "groups_of": "apm", "group_ipc": 1}},
    "tables": [{"name": "apm", "cells": [{"method": "random", "dataset": "digits", "ipc": 2},
                                         {"method": ["apm", "apm_groups1"], "dataset": "digits", "ipc": 2,
                                          "protocol": "soft"}]}],
}


@pytest.mark.slow
def test_apm_with_a_two_group_parallel_run_through_the_workflow(tmp_path, shared_experts):
    shared_experts(tmp_path, APM_TINY)
    result = snakemake(tmp_path, APM_TINY, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "results/tables/apm.csv")
    assert table["method"].tolist() == ["random", "apm [soft]", "apm_groups1 [soft]"]
    assert table["mean"].between(0, 100).all()
    teacher = torch.load(tmp_path / "results/experts/digits/std/ConvNetD2W32/teacher/0.pt", weights_only=True)
    assert teacher["trajectory"].shape[0] == 2                         # initial and final weights only
    groups = [torch.load(tmp_path / f"results/synsets/apm/digits/ipc1/group{g}/synset.pt", weights_only=True)
              for g in range(2)]
    assert [g["meta"]["seed"] for g in groups] == [0, 1]
    merged = torch.load(tmp_path / "results/synsets/apm_groups1/digits/ipc2/synset.pt", weights_only=True)
    assert merged["labels"].tolist() == [c for c in range(10) for _ in range(2)]
    assert merged["soft_labels"].shape == (20, 10)
    for c in range(10):   # class c's two images are group 0's and group 1's
        assert torch.equal(merged["images"][2 * c], groups[0]["images"][c])
        assert torch.equal(merged["images"][2 * c + 1], groups[1]["images"][c])
    evaluation = json.loads(next((tmp_path / "results/evals/apm").rglob("seed0.json")).read_text())
    assert evaluation["protocol"] == "soft" and evaluation["eval"]["soft_labels"] is True


DATM_TINY = {
    "experts": EXPERTS,
    "evaluation": {"seeds": 2, "epochs": 100},   # soft labels train slower than hard ones: 20 epochs underfit them
    "protocols": {"soft_ce": {"soft_labels": True, "soft_loss": "soft_ce", "batch": 128}},
    "hparams": {"datm": {"digits": {"default": {"iterations": 20, "syn_steps": 8},
                                    "ipc1": {"max_start_epoch": 3},
                                    "ipc10": {"iterations": 10, "current_max_start_epoch": 2, "max_start_epoch": 4,
                                              "expansion_end_epoch": 5}}}},
    "tables": [{"name": "datm", "cells": [{"method": "random", "dataset": "digits", "ipc": [1, 10]},
                                          {"method": "datm", "dataset": "digits", "ipc": [1, 10],
                                           "protocol": ["soft_ce", "default"]}]}],
}


@pytest.mark.slow
def test_datm_on_digits_runs_with_soft_and_hard_labels_and_beats_random_at_ipc1(tmp_path, shared_experts):
    shared_experts(tmp_path, DATM_TINY)
    result = snakemake(tmp_path, DATM_TINY, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "results/tables/datm.csv")
    assert table[["method", "ipc"]].values.tolist() == [["random", 1], ["random", 10], ["datm [soft_ce]", 1],
                                                        ["datm", 1], ["datm [soft_ce]", 10], ["datm", 10]]
    mean = table.set_index(["method", "ipc"])["mean"]
    assert mean["datm [soft_ce]", 1] > mean["random", 1]
    synset = torch.load(tmp_path / "results/synsets/datm/digits/ipc1/synset.pt", weights_only=True)
    assert synset["soft_labels"].shape == (10, 10) and synset["soft_labels"].is_floating_point()
    assert synset["labels"].tolist() == list(range(10)) and synset["lr"] > 0
    assert synset["meta"]["init"] == "correct" and synset["meta"]["learn_labels"] is True
    log = pd.read_csv(tmp_path / "results/synsets/datm/digits/ipc10/log.csv")
    assert log["start_epoch"].max() < 4 and set(log["over_threshold"]) <= {0, 1}
    assert log["start_epoch"][:3].max() < 2                       # the window starts at [0, 2)
    soft = json.loads((tmp_path / "results/evals/datm/digits/ipc1/ConvNetD2W32/soft_ce/seed0.json").read_text())
    assert soft["eval"]["soft_loss"] == "soft_ce" and soft["eval"]["batch"] == 128 and soft["lr"] == synset["lr"]
