"""Integration tier: the Snakemake workflow, in a temporary directory: its command line parsed and run in this
process (conftest.snakemake), or as its own process where the CLI itself is tested."""
import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ENV, EXPERTS, ROOT, job_counts, snakemake, snakemake_cli

TINY = {
    "experts": EXPERTS,
    "evaluation": {"seeds": 2, "epochs": 20},
    "distill": {"overrides": {"iterations": 10, "syn_steps": 4, "max_start_epoch": 2}},
    "hparams": {"mtt": {"digits": {"ipc2": {"zca": True}}}},  # IPC 2 runs in the ZCA domain
    "tables": [{"name": "tiny", "title": "Tiny", "cells": [{"method": ["random", "mtt", "ftd"], "dataset": "digits", "ipc": 1},
                                                        {"method": "mtt", "dataset": "digits", "ipc": 2}]}],
}


def test_default_config_dry_run_job_list(tmp_path):
    result = snakemake(tmp_path, None, "-n", "--cores", "2")
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout) == {"all": 1, "cost": 1, "prepare_data": 1, "train_expert": 15, "distill": 10,
                                         "evaluate": 30, "table": 1, "table_figure": 1, "plot_images": 2,
                                         "plot_cell": 8}


def test_mtt_paper_config_dry_run_job_list(tmp_path):
    """Exactly the cells of MTT Tables 1-4 and Figure 5, with experts shared across methods and IPCs."""
    result = snakemake(tmp_path, None, "-n", "--cores", "2", "--configfile", str(ROOT / "config/paper/mtt.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout) == {
        "all": 1,
        "cost": 1,               # the cost table of the report
        "prepare_data": 9,       # cifar10, cifar100, tiny-imagenet, six ImageNet subsets
        "fit_zca": 2,            # cifar10, cifar100
        "train_expert": 1100,    # 100 each: cifar10 zca/std, cifar100 zca/std, tiny, 6 subsets
        "distill": 64,           # Table 1: 4 methods x 3 datasets x 3 IPC; Table 4: 12; Figure 5: 16
        "evaluate": 335,         # 5 seeds x (36 + 3 extra archs of Table 3 + 12 + 16)
        "table": 5,
        "table_figure": 2,       # Table 1 accuracy vs IPC, Table 3 heat map
        "plot_images": 27,       # the coresets' images (random, herding, forgetting of Table 1)
        "plot_cell": 37,         # trajectory methods only (images and curves): 9 + 12 + 16
    }


def test_the_workflow_passes_snakemake_lint(tmp_path):
    """`snakemake --lint`: every rule has its log, conda env and no long run: block; the Snakefile no absolute path."""
    result = snakemake(tmp_path, None, "--lint")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "your workflow is in a good condition" in result.stdout + result.stderr


@pytest.mark.parametrize("cell,needle", [
    ({"method": "mtt", "dataset": "cifar11", "ipc": 1}, "unknown dataset 'cifar11'; choose one of: digits"),
    ({"method": "mtt", "dataset": "digits", "ipc": 0}, "ipc"),
])
def test_bad_config_fails_before_any_job(tmp_path, cell, needle):
    result = snakemake(tmp_path, {"tables": [{"name": "t", "cells": [cell]}]}, "-n", "--cores", "1")
    assert result.returncode != 0
    assert needle in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("config,needle", [
    ({"evalution": {"seeds": 1}}, "unknown key 'evalution' at the top level; did you mean 'evaluation'?"),
    ({"evaluation": {"epochs": "ten"}}, "evaluation.epochs: 'ten' is not an integer"),
    ({"distill": {"overrides": {"lr_img": "ten"}}}, "lr_img='ten' must be a number"),
], ids=["misspelt key", "wrong type", "wrong type in a method setting"])
def test_config_mistakes_fail_before_any_job_naming_the_field(tmp_path, config, needle):
    result = snakemake(tmp_path, config, "-n", "--cores", "1")
    assert result.returncode != 0 and needle in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_a_yaml_error_is_named_with_its_file_and_line_by_the_config_check(tmp_path):
    """Snakemake reads --configfile before the workflow runs and names neither file nor line; the check does."""
    (tmp_path / "my.yaml").write_text("evaluation: {seeds: 1\ntables: [x\n")
    assert snakemake_cli(tmp_path, None, "-n", "--configfile", str(tmp_path / "my.yaml")).returncode != 0
    check = subprocess.run([sys.executable, "-m", "distillery.plan", "check", str(tmp_path / "my.yaml")], cwd=ROOT,
                           capture_output=True, text=True, env=ENV)
    assert check.returncode != 0 and f"{tmp_path / 'my.yaml'}, line 2, column 7: not valid YAML" in check.stderr
    ok = subprocess.run([sys.executable, "-m", "distillery.plan", "check", "config/paper/mtt.yaml"], cwd=ROOT,
                        capture_output=True, text=True, env=ENV)
    assert ok.returncode == 0 and "the config is valid" in ok.stdout


@pytest.mark.slow
def test_tiny_workflow_end_to_end(tmp_path, shared_experts):
    shared_experts(tmp_path, TINY)
    result = snakemake(tmp_path, TINY, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "results/tables/tiny.csv")
    assert list(table.columns) == ["method", "dataset", "ipc", "arch", "mean", "std", "n", "reported_mean",
                                   "reported_std", "diff"]
    assert table[["reported_mean", "reported_std", "diff"]].isna().all().all()  # no paper numbers for digits
    assert table[["method", "dataset", "ipc", "arch", "n"]].values.tolist() == [
        ["random", "digits", 1, "ConvNetD2W32", 2], ["mtt", "digits", 1, "ConvNetD2W32", 2],
        ["ftd", "digits", 1, "ConvNetD2W32", 2], ["mtt", "digits", 2, "ConvNetD2W32", 2]]
    assert table["mean"].between(0, 100).all() and (table["std"] >= 0).all()
    markdown = (tmp_path / "results/tables/tiny.md").read_text()
    assert markdown.startswith("## Tiny") and "| mtt " in markdown and "| random " in markdown
    figures = tmp_path / "results/figures"
    assert (tmp_path / "results/data/digits/zca.pt").exists()
    assert (tmp_path / "results/experts/digits/zca/ConvNetD2W32/sgd/1.pt").exists()
    assert (tmp_path / "results/experts/digits/std/ConvNetD2W32/gsam/1.pt").exists()  # FTD's flat experts
    for png in ["random/digits/ipc1/images.png", "mtt/digits/ipc1/images.png", "mtt/digits/ipc1/curves.png",
                "mtt/digits/ipc2/images.png"]:
        assert (figures / png).read_bytes()[:4] == b"\x89PNG"
    log = pd.read_csv(tmp_path / "results/synsets/mtt/digits/ipc1/log.csv")
    assert log["iteration"].tolist() == list(range(1, 11)) and (log["lr"] > 0).all()
    assert "mtt ipc1 10/10" in (tmp_path / "results/logs/distill/mtt/digits/ipc1.log").read_text()
    assert (tmp_path / "results/tables/tiny.tex").read_text().count("\\begin{tabular}") == 1
    again = snakemake(tmp_path, TINY, "-n", "--cores", "2")
    assert "Nothing to be done" in again.stdout + again.stderr
    report = snakemake(tmp_path, TINY, "--cores", "1", "--report", "results/report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "results/report.html").read_text()
    assert "tiny.md" in html and "images.png" in html and "cost.html" in html


def test_ftd_paper_config_dry_run_job_list(tmp_path):
    """FTD Tables 1-4 and Figure 4: flat (GSAM) experts beside MTT's, SAM evaluations as their own jobs."""
    result = snakemake(tmp_path, None, "-n", "--cores", "2", "--configfile", str(ROOT / "config/paper/ftd.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout) == {
        "all": 1,
        "cost": 1,               # the cost table of the report
        "prepare_data": 7,       # cifar10, cifar100, tiny-imagenet, imagenette, imagewoof, imagefruit, imagemeow
        "fit_zca": 2,
        "train_expert": 1700,    # sgd: cifar10 zca/std, cifar100 zca/std, tiny, 4 subsets (900);
                                 # gsam_a03: cifar10 zca; gsam: cifar10 std, cifar100 zca, tiny, 4 subsets (800)
        "distill": 42,           # Table 1: 22, Table 2: 16, Table 4: 4 ftd_no_ema
        "evaluate": 265,         # 5 seeds x (22 + 16 + 6 extra archs + 4) + 5 SAM protocols x 5 seeds
        "table": 5,
        "table_figure": 2,
        "plot_cell": 42,
        "nas_train": 2160,       # Table 5: 720 ConvNets x (real, MTT, FTD at CIFAR-10 IPC 50, Table 3's sets)
        "nas_table": 1,
    }


def test_ast_paper_config_dry_run_job_list(tmp_path):
    """AST Tables I-VIII and Figure 9: four more expert recipes, expert statistics, the timing table."""
    result = snakemake(tmp_path, None, "-n", "--cores", "2", "--configfile", str(ROOT / "config/paper/ast.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout) == {
        "all": 1,
        "cost": 1,               # the cost table of the report
        "prepare_data": 7,       # cifar10, cifar100, tiny-imagenet, imagenette, imagewoof, imagefruit, imagemeow
        "fit_zca": 2,
        "train_expert": 1650,    # 50 each of 33 expert sets: sgd 9, gsam(_a03) 8, smooth 9, and sgd_momentum,
                                 # adam, smooth_gp on cifar100 std and tiny-imagenet (6), smooth_paper (VIII paper)
        "expert_stats": 10,      # sgd, sgd_momentum, adam, smooth_gp, smooth on cifar100 std and tiny-imagenet
        "distill": 95,           # I: 3, II: 2, III: 47 (+ the mtt cell of I), V: 24, VII: 7, VIII: 4 (ast_perturb is
                                 # not III's ast: distill.sh:14 has no balanced loss), VIII paper: 5, variants: 2 ast_sh
        "evaluate": 525,         # 5 seeds x 105 cells (IV adds 9 architectures to III's cells; variants: ast_sh x 2,
                                 # ast under the shared protocol)
        "table": 17,
        "table_figure": 3,       # III accuracy vs IPC, IV heat map, Figure 9
        "plot_images": 24,       # the 24 coreset cells
        "plot_cell": 71,         # all but the 24 coreset cells
    }


def test_att_paper_config_dry_run_job_list(tmp_path):
    """ATT Tables 1-3, Figure 4 (matched steps; stability study) and its timing."""
    result = snakemake(tmp_path, None, "-n", "--cores", "2", "--configfile", str(ROOT / "config/paper/att.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout) == {
        "all": 1,
        "cost": 1,               # the cost table of the report
        "prepare_data": 7,
        "fit_zca": 2,
        "train_expert": 2600,    # 100 each of 26 sets: sgd 9 (MTT), gsam(_a03) 8 (FTD), sgd_b512 9 (ATT)
        "distill": 51,           # Table 2: 24, Table 3: 24, Figure 4 left: 3 (Table 1 and the timing reuse Table 2's)
        "evaluate": 345,         # 5 seeds x (24 + 24 + 3 + 18 other architectures of Table 1)
        "stability_trial": 320,  # 2 methods x 2 parameters x 4 multipliers x 20 seeds
        "stability_counts": 1,
        "table": 5,
        "table_figure": 3,       # Table 1 heat map, Table 2 accuracy vs IPC, Figure 4 matched steps
        "plot_cell": 51,
    }


def test_apm_paper_config_dry_run_job_list(tmp_path):
    """APM Tables 1, 2, A4-A7 and Figure 4: teachers, soft-label evaluations, 15 groups merged into 15 sets."""
    result = snakemake(tmp_path, None, "-n", "--cores", "2", "--configfile", str(ROOT / "config/paper/apm.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout) == {
        "all": 1,
        "cost": 1,               # the cost table of the report
        "prepare_data": 4,       # cifar10, cifar100, tiny-imagenet, imagenet-64
        "fit_zca": 2,
        "train_expert": 1500,    # 100 each: 8 teacher sets (ConvNet x 4 datasets, VGG11 and ResNet18 proxies x 2),
                                 # MTT's sgd 4 and FTD's gsam 3 for their rows
        "distill_group": 15,     # Figure 4: 10 groups of IPC 50 (CIFAR-10), 5 of IPC 10 (Tiny ImageNet)
        "distill": 70,           # Table 1: 33, A5: 4, A6: 12, A7: 6, Figure 4: 15 merges
        "evaluate": 540,         # 5 seeds x 108 cells
        "table": 7,
        "table_figure": 2,
        "plot_images": 27,       # coresets and merges
        "plot_cell": 43,         # trajectory and APM distillations (not coresets, not merges)
        "nas_table": 1,          # Table 3 without its ground-truth file: no architectures, the table job fails
    }


CELLS = ["|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|",
         "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|",
         "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|"]
NAS_TINY = {
    "evaluation": {"seeds": 1, "epochs": 2},
    "nas_subset": 3,
    "tables": [{"name": "t", "cells": [{"method": "random", "dataset": "digits", "ipc": 2}]}],
    "nas": [{"name": "quick", "space": "convnet", "dataset": "digits", "ipc": 2, "sources": ["real", "random"],
             "epochs": 3, "top": [2, 3]},
            {"name": "cells", "space": "bench201", "dataset": "digits", "ipc": 2, "sources": ["random"], "epochs": 2,
             "ground_truth": "nb201.csv"}],
}


def test_nas_bench_201_study_without_its_file_fails_saying_what_to_supply(tmp_path):
    run = snakemake(tmp_path, NAS_TINY, "--cores", "1", "results/nas/cells/correlation.csv")
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert job_counts(output) == {"nas_table": 1}, "no architecture is planned without the file"
    assert "nb201.csv" in output and "'arch,accuracy'" in output and "`ground_truth`" in output


@pytest.mark.slow
def test_quick_nas_runs_through_the_workflow(tmp_path):
    (tmp_path / "nb201.csv").write_text("arch,accuracy\n" + "".join(f"{a},{90 - i}\n" for i, a in enumerate(CELLS[:2])))
    targets = ["results/nas/quick/correlation.md", "results/nas/cells/correlation.md"]
    result = snakemake(tmp_path, NAS_TINY, "--cores", "2", *targets)
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout + result.stderr) == {"prepare_data": 1, "distill": 1, "nas_train": 3 * 2 + 2,
                                                         "nas_table": 2}
    table = pd.read_csv(tmp_path / "results/nas/quick/correlation.csv")
    assert table["source"].tolist() == ["real", "random"]
    assert table["architectures"].tolist() == [3, 3] and table["images"].tolist() == [1347, 20]
    assert table.loc[0, "top2"] == 1.0 and table.loc[0, "top3"] == 1.0
    assert table[["top2", "top3"]].abs().le(1).all().all() and (table["minutes"] > 0).all()
    accuracies = pd.read_csv(tmp_path / "results/nas/quick/accuracies.csv")
    assert len(accuracies) == 6 and accuracies["accuracy"].between(0, 100).all()
    assert "## quick" in (tmp_path / "results/nas/quick/correlation.md").read_text()
    cells = pd.read_csv(tmp_path / "results/nas/cells/correlation.csv")
    assert cells.columns.tolist() == ["source", "images", "architectures", "spearman", "minutes"]
    assert cells["architectures"].tolist() == [2]
    assert abs(cells.loc[0, "spearman"]) == 1.0 or math.isnan(cells.loc[0, "spearman"])  # nan: a tie
    one = json.loads(next((tmp_path / "results/nas/quick/random").glob("*.json")).read_text())
    assert one["eval"]["epochs"] == 3 and one["lr"] == 0.01 and one["seconds"] > 0


def test_combinations_example_dry_run(tmp_path):
    """Three combinations of components from different papers plan like any method, sharing experts."""
    result = snakemake(tmp_path, None, "-n", "--cores", "2", "--configfile",
                       str(ROOT / "config/examples/combinations.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout) == {
        "all": 1, "cost": 1, "prepare_data": 1,
        "train_expert": 15,      # sgd (mtt), gsam (att_ftd_intermediate, ftd_representative_balanced), smooth
        "distill": 5, "evaluate": 15, "table": 1, "plot_images": 1, "plot_cell": 4,
    }
