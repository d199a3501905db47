"""The parity harness (distillery.parity). Without the authors' code: its comparison (which must be able to fail),
its patches and state injection (the random calls of code written in the authors' style answered with our draws),
the loading of a checkout's modules, and a run whose two sides are both our code, once equal and once perturbed.
With DISTILLERY_PARITY_REFS naming a folder of checkouts (<dir>/<method> at the ledger's commits, as docs/parity.md
gets them): each method's exact cases at small sizes, through the real harness, must pass."""
import argparse
import json
import math
import os
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import numpy
import pytest
import torch

from distillery.augment import dsa
from distillery.data.sources import DEBIAN_FASHION_MNIST
from distillery.experts import get_recipe
from distillery.experts.train import make_optimizer
from distillery.models import build_model
from distillery.parity import apm, apm_iteration, apm_train, ast, ast_init, att, datm, ftd, lineage, mtt
from distillery.parity.compare import EXACT, CaseResult, Tolerance, compare, compare_all, spread_test
from distillery.parity.context import Context, Method, with_settings
from distillery.parity.patches import (Clock, Patches, normal_from, ordered_shuffle, proxy, rand_from, randint_from,
                                       randperm_from, recording_sgd)
from distillery.parity.reference import Reference, authors_modules, check_checkout, script_args
from distillery.parity.run import METHODS, Plan, plan_parity, run_parity, write_report
from distillery.parity.table import summary_lines
from distillery.parity.workspace import make_workspace
from distillery.seeds import generator

REFS = os.environ.get("DISTILLERY_PARITY_REFS")
ROOT = Path(__file__).resolve().parents[1]
HAS_FASHION = (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file() or Path("data/fashion-mnist").is_dir()
needs_fashion = pytest.mark.skipif(not HAS_FASHION, reason="Fashion-MNIST is not installed (Debian package "
                                                           "dataset-fashion-mnist, or data/fashion-mnist)")
# small enough for seconds; lr_lr 1e-7 keeps the learned lr positive (above it our loop skips the update, the
# ledger's row "Learned lr out of (0, ∞)", and the cases report "updated" as the difference)
TINY = dict(model="ConvNetW32", train_per_class=12, test_per_class=10, ipc=1, syn_steps=3, batch_syn=4, lr_lr=1e-7,
            train_epochs=1, batch_train=32, eval_ipc=2, eval_epochs=2, eval_batch=8)
# DATM at 12 images per class: 3 iterations of 3 steps (chunks 4, 4, 2), 3 experts of 4 epochs, about 10 s
TINY_DATM = dict(train_per_class=12, test_per_class=10, ipc=1, syn_steps=3, batch_syn=4, expert_batch=32, eval_ipc=2,
                 eval_epochs=2, eval_batch=8)
FTD_TINY = {k: TINY[k] for k in ("model", "train_per_class", "test_per_class", "ipc", "syn_steps", "batch_syn", "lr_lr",
                                 "train_epochs", "batch_train")}
# ATT at these sizes: 6 inner steps at lr 0.003 carry the student past the target, so the chosen step (3) is inside
ATT_TINY = {**{k: FTD_TINY[k] for k in FTD_TINY if k != "batch_train"}, "syn_steps": 6, "lr_teacher": 0.003}
# AST's: 4 expert epochs reach its lr x0.6 (after epoch 4 // 2 + 1 = 3); 10 representative picks per class of 12
AST_TINY = dict(TINY, syn_steps=3, expert_epochs=2, train_epochs=4, init_expert_epochs=1)


def test_compare_is_bit_for_bit_at_zero_tolerance_and_relative_to_the_largest_magnitude():
    theirs = torch.tensor([1.0, -4.0, 0.0])
    assert compare("x", theirs.clone(), theirs, EXACT).passed
    q = compare("x", theirs + torch.tensor([0.0, 0.0, 1e-6]), theirs, EXACT)
    assert not q.passed and q.max_abs == pytest.approx(1e-6) and q.max_rel == pytest.approx(1e-6 / 4)
    # the entry at 0 is judged against the tensor's scale (4), not its own magnitude
    assert compare("x", theirs + torch.tensor([0.0, 0.0, 3e-6]), theirs, Tolerance(rtol=1e-6)).passed
    assert not compare("x", theirs + torch.tensor([0.0, 0.0, 5e-6]), theirs, Tolerance(rtol=1e-6)).passed
    assert not compare("x", torch.zeros(2), theirs, Tolerance(rtol=1.0)).passed  # shapes differ
    assert not compare("x", torch.tensor([math.nan, -4.0, 0.0]), theirs, Tolerance(rtol=1.0)).passed
    assert compare("n", 3, 3, EXACT).passed and not compare("n", 3, 4, Tolerance(rtol=1.0)).passed
    # a Python float is float64, never rounded to float32 on the way
    assert compare("acc", 0.6123, 0.6123, EXACT).passed and not compare("acc", 0.6123, 0.6124, EXACT).passed


def test_a_case_fails_when_one_quantity_fails_or_is_missing_and_its_report_names_it():
    ours = {"loss": torch.tensor(1.0), "grad": torch.ones(3), "start": 2}
    assert compare_all("c", ours, dict(ours), EXACT, exact=("start",)).passed
    bad = compare_all("c", ours, {**ours, "grad": torch.tensor([1.0, 1.0, 1.5])}, Tolerance(rtol=1e-3))
    report = bad.to_dict()
    assert not bad.passed and report["failed"] == ["grad"] and report["max_abs"] == 0.5
    missing = compare_all("c", ours, {"loss": torch.tensor(1.0), "grad": torch.ones(3)}, EXACT)
    assert not missing.passed and missing.to_dict()["failed"] == ["start"]
    assert json.loads(json.dumps(missing.to_dict()))["quantities"][-1]["max_abs"] == "inf"


def test_spread_test_compares_the_mean_difference_with_both_sides_spread():
    close = spread_test([0.60, 0.62, 0.64], [0.61, 0.63, 0.65])  # std 0.02 each: spread √0.0008 ≈ 0.0283
    assert close["difference"] == pytest.approx(-0.01) and close["spread"] == pytest.approx(math.sqrt(0.0008))
    assert not close["differ"]
    assert spread_test([0.60, 0.62, 0.64], [0.66, 0.68, 0.70])["differ"]
    with pytest.raises(ValueError, match="at least 2 runs"):
        spread_test([0.6], [0.6, 0.7])


def test_patches_restore_every_attribute_and_item_and_list_each_name_once():
    owner = types.SimpleNamespace(a=1)
    table = {"x": 1}
    with Patches() as patches:
        patches.set(owner, "a", 2, "p", "first")
        patches.set(owner, "b", 3, "p", "again")
        patches.set_item(table, "y", 5, "q", "an item")
        assert (owner.a, owner.b, table["y"]) == (2, 3, 5)
    assert owner.a == 1 and not hasattr(owner, "b") and table == {"x": 1}
    assert [(p.name, p.what) for p in patches.applied] == [("p", "first"), ("q", "an item")]


AUTHOR_STYLE = '''
import torch
import numpy as np

def draws(x):
    """DiffAugment's calls (utils.py:486, :543-549, :592) and distill.py's (:326, :342)."""
    choice = torch.randint(0, 6, size=(1,)).item()
    u = torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)
    shift = torch.randint(-4, 4 + 1, size=[x.size(0), 1, 1], device=x.device)
    return choice, u, shift, torch.randperm(5), np.random.randint(0, 7), torch.optim.Adam
'''


def test_state_injection_answers_author_style_random_calls_with_our_draws(tmp_path):
    (tmp_path / "styled.py").write_text(AUTHOR_STYLE)
    ref = Reference("x", "someone/x", "0" * 7, ("styled.py",))
    x = torch.zeros(3, 1, 2, 2, dtype=torch.float64)
    with authors_modules(ref, tmp_path, ["styled"]) as m:
        g, perm = generator(0, "dsa"), generator(0, "batches")
        m.styled.torch = proxy(torch, {"rand": rand_from(g), "randint": randint_from(g),
                                       "randperm": randperm_from(perm)})
        m.styled.np = proxy(numpy, {"random.randint": lambda *a: 4})
        choice, u, shift, order, start, adam = m.styled.draws(x)
    g = generator(0, "dsa")  # our order: the group, then the per-sample parameters (augment.dsa)
    assert choice == int(torch.randint(6, (1,), generator=g))
    assert torch.equal(u, torch.rand(3, generator=g).double().view(3, 1, 1, 1))
    assert torch.equal(shift, torch.randint(-4, 5, (3,), generator=g).view(3, 1, 1))
    assert torch.equal(order, torch.randperm(5, generator=generator(0, "batches"))) and start == 4
    assert adam is torch.optim.Adam  # what is not overridden is torch's


def test_our_crop_equals_the_reference_formula_for_the_same_draws():
    """MTT's rand_crop (utils.py:592-609) reads padded[b, i + tx + 1, j + ty + 1] (clamped to the 1-px zero border)
    with tx drawn before ty; answered from our generator, its draws are ours (augment._crop: dy, then dx)."""
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8) + 1
    randint = randint_from(generator(3, "dsa"))
    randint(0, 1, size=(1,))  # the group choice of a one-group strategy
    tx, ty = randint(-1, 2, size=[2, 1, 1]), randint(-1, 2, size=[2, 1, 1])
    assert (tx != 0).any() and (ty != 0).any()
    padded = torch.nn.functional.pad(x, [1, 1, 1, 1])[:, 0]
    rows = (torch.arange(8).view(1, 8, 1) + tx + 1).clamp(0, 9)
    cols = (torch.arange(8).view(1, 1, 8) + ty + 1).clamp(0, 9)
    assert torch.equal(dsa(x, generator(3, "dsa"), "crop")[:, 0], padded[torch.arange(2).view(2, 1, 1), rows, cols])


def test_a_checkouts_modules_shadow_others_only_while_loaded_and_its_parser_is_read_without_running_main(tmp_path):
    (tmp_path / "utils.py").write_text("WHO = 'theirs'\n")
    (tmp_path / "distill.py").write_text(
        "import argparse, pathlib\nimport utils\n"
        "def main(args):\n    pathlib.Path('ran').write_text('main ran')\n"
        "if __name__ == '__main__':\n    p = argparse.ArgumentParser()\n"
        "    p.add_argument('--ipc', type=int, default=1)\n    p.add_argument('--lr', type=float, default=0.5)\n"
        "    main(p.parse_args())\n")
    ref = Reference("x", "someone/x", "0" * 7, ("utils.py", "distill.py"))
    before = types.ModuleType("utils")
    sys.modules["utils"] = before
    path = list(sys.path)
    try:
        with Patches() as patches, authors_modules(ref, tmp_path, ["utils", "distill"]) as m:
            assert m.utils.WHO == "theirs" and m.distill.utils is m.utils
            args = script_args(tmp_path / "distill.py", ["--ipc", "3"], patches)
        assert (args.ipc, args.lr) == (3, 0.5) and not (Path.cwd() / "ran").exists()
        assert sys.modules["utils"] is before and "distill" not in sys.modules and sys.path == path
        assert [p.name for p in patches.applied] == ["argparse"]
    finally:
        sys.modules.pop("utils", None)


def test_a_script_that_parses_twice_is_read_at_its_last_parse_as_datms(tmp_path):
    """DATM.py parses --cfg, adds one option per key of that file, then parses again (DATM.py:578-589)."""
    (tmp_path / "two.py").write_text(
        "import argparse\nif __name__ == '__main__':\n    p = argparse.ArgumentParser()\n"
        "    p.add_argument('--cfg', default='')\n    first = p.parse_args()\n"
        "    p.add_argument('--ipc', type=int, default=int(first.cfg))\n    p.parse_args()\n    raise SystemExit(3)\n")
    ref = Reference("x", "someone/x", "0" * 7, ("two.py",))
    with Patches() as patches, authors_modules(ref, tmp_path, []):
        args = script_args(tmp_path / "two.py", ["--cfg", "7"], patches, calls=2)
    assert (args.cfg, args.ipc) == ("7", 7)


def test_datm_stand_ins_answer_with_our_draws_keep_their_window_and_read_their_config(tmp_path):
    seen = []
    randint = datm.window_from([0, 2], seen)
    assert (randint(0, 1), randint(0, 3)) == (0, 2) and seen == [[0, 1], [0, 3]]
    with pytest.raises(RuntimeError, match=r"our start epoch 3 lies outside their window \[0, 3\)"):
        datm.window_from([3], [])(0, 3)
    x = numpy.arange(10, 17)
    order = torch.randperm(7, generator=generator(0, "init")).numpy()
    assert datm.permutation_from(generator(0, "init"))(x).tolist() == x[order].tolist() != x.tolist()
    cfg = datm.yacs_stub()["yacs.config"].CfgNode()
    cfg.ipc, cfg.lr_y = 1, 2.0
    (tmp_path / "c.yaml").write_text("ipc: 10\n")
    cfg.merge_from_file(str(tmp_path / "c.yaml"))
    assert (cfg.ipc, cfg["lr_y"]) == (10, 2.0)
    (tmp_path / "c.yaml").write_text("ipcs: 10\n")
    with pytest.raises(KeyError, match="Non-existent config key.*ipcs"):
        cfg.merge_from_file(str(tmp_path / "c.yaml"))


def test_a_folder_that_is_not_the_ledgers_checkout_is_refused_naming_the_fix(tmp_path):
    with pytest.raises(ValueError, match="not a folder.*git clone https://github.com/GeorgeCazenavette"):
        check_checkout(mtt.REFERENCE, tmp_path / "absent")
    with pytest.raises(ValueError, match="distill.py, buffer.py.* missing"):
        check_checkout(mtt.REFERENCE, tmp_path)
    for name in mtt.REFERENCE.files:
        (tmp_path / name).write_text("")
    with pytest.raises(ValueError, match="not a git checkout.*--any-commit"):
        check_checkout(mtt.REFERENCE, tmp_path)
    assert check_checkout(mtt.REFERENCE, tmp_path, any_commit=True) == "unknown"
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    with pytest.raises(ValueError, match=f"not 50dccea.*git -C {tmp_path} checkout 50dccea"):
        check_checkout(mtt.REFERENCE, tmp_path)
    with pytest.raises(ValueError, match="unknown case"):
        plan_parity("mtt", tmp_path, cases=["nope"], any_commit=True)
    with pytest.raises(ValueError, match="unknown size.*ipc"):
        plan_parity("mtt", tmp_path, settings={"ipcs": "2"}, any_commit=True)
    with pytest.raises(ValueError, match="unknown method"):
        plan_parity("nope", tmp_path)


def test_lineage_stand_ins_keep_order_config_logs_and_make_the_clock_reproducible():
    images, labels = torch.arange(10.0).view(10, 1), torch.arange(10)
    loader = lineage.ordered_loader(generator(1, "eval-shuffle"))(torch.utils.data.TensorDataset(images, labels),
                                                                  batch_size=4, shuffle=True)
    g = generator(1, "eval-shuffle")
    for _ in range(2):  # one of our permutations per pass, in chunks of the batch size
        order = torch.randperm(10, generator=g)
        assert [b[1].tolist() for b in loader] == [c.tolist() for c in order.split(4)] and len(loader) == 3
    logged = []
    stub = lineage.wandb_stub(logged)
    stub.init(config=types.SimpleNamespace(ipc=3))
    stub.log({"Grand_Loss": 1.5}, step=2)
    assert stub.config._items == {"ipc": 3} and logged == [{"Grand_Loss": 1.5, "_step": 2}]
    clock = Clock(7)
    assert [int(clock() * 1000) % 100000 for _ in range(3)] == [7001, 7002, 7003]
    records = []
    p = torch.nn.Parameter(torch.tensor([1.0]))
    opt = recording_sgd(records)([p], lr=0.5)
    p.grad = torch.tensor([2.0])
    opt.step()
    assert records[0]["grads"][0].item() == 2.0 and records[0]["values"][0].item() == 0.0
    t = torch.ones(2)
    with Patches() as patches:
        lineage.snapshot_copies(patches)
        assert t.cpu() is not t and torch.equal(t.cpu(), t)
    assert t.cpu() is t


def test_every_patch_says_what_it_does_in_the_committed_reports_and_an_unnamed_one_is_refused():
    reports = sorted((ROOT / "benchmarks" / "results").glob("parity_*.json"))
    assert reports
    for path in reports:
        for patch in json.loads(path.read_text())["patches"]:
            assert patch["what"] != patch["name"] and len(patch["what"].split()) >= 5, (path.name, patch)
    a = lineage.Authors(types.SimpleNamespace(), Patches())
    with pytest.raises(KeyError):
        a.override("distill", "torch", "randn", None, "an-undescribed-patch")
    a.override("distill", "torch", "randn", None, "given", "described here")
    assert [(p.name, p.what) for p in a.patches.applied] == [("given", "described here")]


def test_the_docs_tables_are_the_committed_reports():
    reports = sorted((ROOT / "benchmarks" / "results").glob("parity_*.json"))
    generated = subprocess.run([sys.executable, "-m", "distillery.parity.table", *map(str, reports)], check=True,
                               capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}).stdout
    assert generated.strip() in (ROOT / "docs" / "parity.md").read_text(), \
        "docs/parity.md's results tables are stale: paste `python -m distillery.parity.table " \
        "benchmarks/results/parity_*.json` in place of them"
    assert [line.split(" | ")[0][2:] for line in generated.splitlines() if "| `python -m" in line] == list(METHODS)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity")
    sizes = replace(mtt.Sizes(), **TINY)
    ws = make_workspace(tmp / "root", "data", sizes.train_per_class, sizes.test_per_class)
    context = Context(Path("unused"), ws, sizes, tmp / "scratch")
    context.scratch.mkdir()
    return context


@needs_fashion
def test_our_iteration_against_itself_passes_and_a_perturbed_state_fails(ctx):
    state = mtt.iteration_state(ctx, mtt.iteration_config(ctx.sizes, "color_crop"), torch.float64)
    again = mtt.our_iteration(ctx, state)
    same = compare_all("self", mtt.our_iteration(ctx, state), again, mtt.FLOAT64, exact=mtt.EXACT_ITERATION)
    assert same.passed and same.max_abs == 0
    moved = replace(state, images=state.images + 1e-4 * torch.randn(state.images.shape, dtype=torch.float64,
                                                                       generator=torch.Generator().manual_seed(0)))
    differs = compare_all("perturbed", mtt.our_iteration(ctx, moved), again, mtt.FLOAT64, exact=mtt.EXACT_ITERATION)
    failed = set(differs.to_dict()["failed"])
    assert not differs.passed and {"loss", "grad_images", "grad_lr"} <= failed
    assert "images_after" not in failed  # the whole iteration (distill_trajectory) starts from its seed's images
    later = replace(state, start=state.start + 1)  # another start epoch: the loss moves
    assert "loss" in compare_all("start", mtt.our_iteration(ctx, later), again, mtt.FLOAT64).to_dict()["failed"]


@pytest.fixture(scope="module")
def datm_ctx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity-datm")
    sizes = replace(datm.Sizes(), **TINY_DATM)
    ws = make_workspace(tmp / "root", "data", sizes.train_per_class, sizes.test_per_class)
    context = Context(Path("unused"), ws, sizes, tmp / "scratch")
    context.scratch.mkdir()
    return context


@needs_fashion
def test_our_datm_iterations_against_themselves_pass_and_a_threshold_below_the_loss_updates_nothing(datm_ctx):
    (trajectory,), _ = datm.experts(datm_ctx, 1)
    cfg = datm.config(datm_ctx.sizes)
    run = datm.ours(datm_ctx, cfg, [trajectory], torch.float64)
    assert run["window"].tolist() == [[0, 1], [0, 2], [0, 3]] and run["updated"].tolist() == [1, 1, 1]
    same = compare_all("self", datm.ours(datm_ctx, cfg, [trajectory], torch.float64), run, datm.FLOAT64,
                       exact=datm.EXACT_ITERATION)
    assert same.passed and same.max_abs == 0
    below = datm.ours(datm_ctx, replace(cfg, threshold=float(run["first_loss"]) * 0.999), [trajectory],
                      torch.float64)
    assert below["updated"].tolist() == [0, 0, 0] and below["losses"][0] == run["losses"][0]
    for name in ("images", "labels"):
        assert torch.equal(below[f"{name}_after"], below[f"{name}_initial"])
    failed = compare_all("threshold", below, run, datm.FLOAT64, exact=datm.EXACT_ITERATION).to_dict()["failed"]
    assert {"updated", "images_after", "labels_after", "lr_after"} <= set(failed)
    assert not {"window", "start_epochs", "first_loss", "grad_labels"} & set(failed)


@needs_fashion
def test_a_run_reports_each_case_its_verdict_and_patches_and_fails_when_a_case_fails(ctx, tmp_path):
    def ours_twice(c: Context) -> CaseResult:
        state = mtt.iteration_state(c, mtt.iteration_config(c.sizes), torch.float32)
        with Patches() as patches:
            patches.note("nothing", "no change")
        result = compare_all("equal", mtt.our_iteration(c, state), mtt.our_iteration(c, state), mtt.FLOAT32)
        result.patches = [p.name for p in patches.applied]
        return result

    def perturbed(c: Context) -> CaseResult:
        state = mtt.iteration_state(c, mtt.iteration_config(c.sizes), torch.float32)
        other = replace(state, cfg=replace(state.cfg, lr_teacher=state.cfg.lr_teacher * 1.001))
        return compare_all("perturbed", mtt.our_iteration(c, state), mtt.our_iteration(c, other), mtt.FLOAT32)

    method = Method(mtt.REFERENCE, ctx.sizes, {"equal": ours_twice, "perturbed": perturbed})
    plan = Plan("ours", method, ["equal", "perturbed"], ctx.sizes, tmp_path, "unknown")
    report = run_parity(plan, "data", "test")
    assert [c["passed"] for c in report["cases"]] == [True, False] and not report["passed"]
    assert report["cases"][0]["patches"] == ["nothing"] and report["machine"]["torch"] == torch.__version__
    assert "lr_after" in report["cases"][1]["failed"] and report["sizes"]["model"] == "ConvNetW32"
    write_report(report, tmp_path / "r.json")
    lines = summary_lines([json.loads((tmp_path / "r.json").read_text())])
    assert lines[2].startswith("| ours | unknown | equal | pass |") and "**fail**" in lines[3]


def test_sizes_from_the_command_line_are_typed_and_checked():
    sizes = with_settings(mtt.Sizes(), {"ipc": "3", "lr_img": "100", "model": "ConvNet"})
    assert (sizes.ipc, sizes.lr_img, sizes.model) == (3, 100.0, "ConvNet")
    with pytest.raises(ValueError, match="ipc='x' is not a int"):
        with_settings(mtt.Sizes(), {"ipc": "x"})


@pytest.mark.skipif(not REFS or not (Path(REFS or ".") / "mtt").is_dir(),
                    reason="DISTILLERY_PARITY_REFS does not name a folder with the MTT checkout (<dir>/mtt); "
                           "docs/parity.md says how to get it")
@needs_fashion
def test_mtt_exact_cases_pass_against_the_authors_code():
    cases = [c for c in METHODS["mtt"].cases if c != "end_to_end"]
    plan = plan_parity("mtt", Path(REFS) / "mtt", cases, {k: str(v) for k, v in TINY.items()})
    report = run_parity(plan)
    assert report["passed"], [c["failed"] for c in report["cases"] if not c["passed"]]
    assert [c["name"] for c in report["cases"]] == cases


@pytest.mark.skipif(not REFS or not (Path(REFS or ".") / "datm").is_dir(),
                    reason="DISTILLERY_PARITY_REFS does not name a folder with the DATM checkout (<dir>/datm); "
                           "docs/parity.md says how to get it")
@needs_fashion
def test_datm_exact_cases_pass_against_the_authors_code():
    plan = plan_parity("datm", Path(REFS) / "datm", None, {k: str(v) for k, v in TINY_DATM.items()})
    report = run_parity(plan)
    assert report["passed"], [c["failed"] for c in report["cases"] if not c["passed"]]
    assert [c["name"] for c in report["cases"]] == list(METHODS["datm"].cases)
    threshold = next(c for c in report["cases"] if c["name"] == "threshold")
    assert "below: float64" in threshold["notes"][-2] and "updated [0, 0, 0]" in threshold["notes"][-2]
    assert all(p["what"] != p["name"] for p in report["patches"])
# APM (distillery.parity.apm*): tiny sizes on the module's workspace (12 train, 10 test images a class)
APM_TINY = dict(model="ConvNetW32", train_per_class=12, test_per_class=10, teacher_epochs=1, ipc=1, batch_syn=8,
                update_syn=3, student_epochs=3, checkpoints=2, student_batch=4, iterations=4,
                teacher_train_per_class=2, teacher_test_per_class=1, teacher_dsa_epochs=2, eval_ipc=2, eval_epochs=2,
                eval_batch=8)


@pytest.fixture(scope="module")
def apm_ctx(ctx, tmp_path_factory):
    context = Context(Path("unused"), ctx.ws, replace(apm.Sizes(), **APM_TINY), tmp_path_factory.mktemp("apm"))
    return context


@needs_fashion
def test_apm_first_iteration_pieces_are_the_loops_update_and_a_perturbed_setting_fails(apm_ctx):
    cfg = apm.distill_config(replace(apm_ctx.sizes, checkpoints=1, update_syn=4))  # one student, two chunks
    ours = apm_iteration.our_first_iteration(apm_ctx, cfg, torch.float32)
    start = apm_iteration.initial_set(apm_ctx, cfg, torch.float32)[0]
    # the loop's first step (SGD, its momentum buffer empty) is −lr_img·0.3·gradient of the pieces' state: the
    # harness's replica of the loop's draws (subset, teacher, refresh seed) is the loop's
    step = cfg.lr_img * cfg.lr_img_decay * ours["grad_images"]
    assert torch.allclose(ours["images_after"], start - step, rtol=0, atol=1e-6) and step.abs().max() > 1e-4
    assert ours["updated"] == 1 and [k for k in ours if k.startswith("student_")] == ["student_0"]
    other = apm_iteration.our_first_iteration(apm_ctx, replace(cfg, alpha=2 * cfg.alpha), torch.float32)
    assert compare_all("self", ours, dict(ours), apm.FLOAT32, exact=apm_iteration.EXACT).passed
    failed = set(compare_all("alpha", other, ours, apm.FLOAT32, exact=apm_iteration.EXACT).to_dict()["failed"])
    assert {"loss", "grad_images"} <= failed and not failed & {"teacher_logits", "student_0"}


def test_apm_recorders_keep_the_image_updates_terms_per_iteration_and_the_stand_ins_do_what_they_say():
    rec = apm_iteration.Recorded()
    x = torch.ones(2, requires_grad=True)
    real = torch.Tensor.backward
    with Patches() as patches:
        apm_iteration.recording_backward(patches, rec)
        (2 * x).sum().backward()
        rec.training = True  # inside their train(): the student's own losses are not recorded
        (3 * x).sum().backward()
        rec.training = False
        (4 * x).sum().backward()
    assert [t.item() for t in rec.terms] == [4.0, 8.0] and torch.Tensor.backward is real
    assert x.grad.tolist() == [9.0, 9.0]  # every call still back-propagated
    rec.students, rec.terms = [[torch.zeros(1)] * 2], [torch.tensor(float(v)) for v in range(1, 19)]
    cfg = apm.distill_config(apm.Sizes(), batch_syn=8, update_syn=3)  # 3 chunks × (2 checkpoints + CE) = 9 terms
    assert [t.item() for t in apm_iteration.iteration_terms(rec, cfg)] == [45.0, 126.0]
    stubs = apm.einops_stubs()
    with pytest.raises(RuntimeError, match="einops stand-in was used"):
        stubs["einops.layers.torch"].Rearrange("b c h w -> b c")
    ds = apm.KeepDtype(torch.zeros(3, 1, 2, 2, dtype=torch.float64), torch.arange(3))
    assert ds[1][0].dtype == torch.float64 and len(ds) == 3
    images, labels = torch.arange(8.0), torch.tensor([1, 0, 1, 0, 1, 0, 1, 0])
    assert apm_train.per_class((images, labels), 2, 2)[0].tolist() == [1.0, 3.0, 0.0, 2.0]
    parser = argparse.ArgumentParser()
    parser.add_argument("--ipc", type=int, default=50)
    with Patches() as patches:
        apm.parse_with(patches, ["--ipc", "3"])
        assert parser.parse_args().ipc == 3
    assert [p.name for p in patches.applied] == ["argv"]


@pytest.mark.skipif(not REFS or not (Path(REFS or ".") / "apm").is_dir(),
                    reason="DISTILLERY_PARITY_REFS does not name a folder with the APM checkout (<dir>/apm); "
                           "docs/parity.md says how to get it")
@needs_fashion
def test_apm_exact_cases_pass_against_the_authors_code():
    cases = list(METHODS["apm"].cases)
    plan = plan_parity("apm", Path(REFS) / "apm", cases, {k: str(v) for k, v in APM_TINY.items()})
    report = run_parity(plan)
    assert report["passed"], [c["failed"] for c in report["cases"] if not c["passed"]]
    assert [c["name"] for c in report["cases"]] == cases
def sizes_of(module: types.ModuleType, settings: dict) -> object:
    return replace(module.Sizes(), **settings)


@needs_fashion
def test_our_ema_iteration_is_the_update_rule_and_a_changed_decay_fails_on_the_ema_alone(ctx):
    state = mtt.iteration_state(ctx, ftd.ema_config(sizes_of(ftd, FTD_TINY)), torch.float64)
    ours = ftd.our_ema_iteration(ctx, state)
    d = state.cfg.ema_decay
    assert d == 0.75  # e <- d·e + (1 − d)·x from the initial images, after one update of the raw images
    assert torch.allclose(ours["ema_after"], d * state.images + (1 - d) * ours["images_after"], rtol=0, atol=1e-12)
    assert compare_all("self", ftd.our_ema_iteration(ctx, state), ours, ftd.FLOAT64).max_abs == 0
    other = replace(state, cfg=replace(state.cfg, ema_decay=0.5))
    assert compare_all("decay", ftd.our_ema_iteration(ctx, other), ours, ftd.FLOAT64).to_dict()["failed"] == \
        ["ema_after"]


@needs_fashion
def test_att_cases_choose_a_step_inside_the_path_and_the_tie_case_ties_every_step(ctx):
    s = sizes_of(att, ATT_TINY)
    ours = ftd.our_ema_iteration(ctx, mtt.iteration_state(ctx, att.att_config(s), torch.float64))
    assert 1 < ours["match_step"] < s.syn_steps
    tie = mtt.iteration_state(ctx, att.tie_config(s), torch.float64)
    assert ftd.our_ema_iteration(ctx, tie)["match_step"] == s.syn_steps  # every step ties: the code's choice, the last
    paper = replace(tie, cfg=replace(tie.cfg, match_distance="l2"))  # the paper's reading ties to the earliest
    assert ftd.our_ema_iteration(ctx, paper)["match_step"] == 1


ATT_STYLE = '''
import torch

def match(path, target):
    """distill_ATT.py:476-524's selection: L1 per step, a running minimum with >=, the loss at the chosen step."""
    params, current, index = [path[0]], 10000, None
    for theta in path[1:]:
        params.append(theta)
        with torch.no_grad():
            distance = torch.nn.functional.l1_loss(params[-1], target, reduction="sum")
            if current >= distance:
                current, index = distance, len(params) - 1
    loss = torch.nn.functional.mse_loss(params[index], target, reduction="sum")
    return loss, torch.nn.functional.mse_loss(params[0], target, reduction="sum")
'''


@pytest.mark.parametrize("gaps,chosen", [([3.0, 1.0, 2.0, 4.0], 2), ([3.0, 1.0, 1.0, 2.0], 3)])
def test_the_match_step_hook_reads_the_step_author_style_code_takes_its_loss_at(tmp_path, gaps, chosen):
    (tmp_path / "distill_ATT.py").write_text(ATT_STYLE)
    ref = Reference("x", "someone/x", "0" * 7, ("distill_ATT.py",))
    target = torch.zeros(2)
    path = [torch.full((2,), 9.0)] + [torch.tensor([g, 0.0]) for g in gaps]  # θ_0, then θ_1 … θ_4 at L1 gap g
    found = {}
    with Patches() as patches, authors_modules(ref, tmp_path, ["distill_ATT"]) as m:
        a = lineage.Authors(m, patches)
        att.match_step(a, found)
        a.install()
        loss, _ = m.distill_ATT.match(path, target)
    assert found == {"match_step": chosen} and loss.item() == gaps[chosen - 1] ** 2
    assert [p.name for p in patches.applied] == ["match-step"]


class GsamLike:
    """GSAM's interface as FTD's epoch() drives it (set_closure, step, model) over our own optimizer."""

    def __init__(self, model: torch.nn.Module, recipe_name: str):
        self.model, (self.opt, _) = model, make_optimizer(model, get_recipe(recipe_name))

    def set_closure(self, loss_fn, inputs, targets):
        def closure():
            loss = loss_fn(self.model(inputs), targets)
            self.opt.zero_grad()
            loss.backward()
            return loss
        self.closure = closure

    def step(self):
        return None, self.opt.step(self.closure)


@needs_fashion
def test_gsam_replay_retakes_each_recorded_step_and_fails_for_another_alpha(ctx):
    images, labels = ctx.ws.train[0][:8], ctx.ws.train[1][:8]
    model = build_model(ctx.sizes.model, 1, ctx.ws.num_classes, images.shape[-1])
    steps = []
    recorded = ftd.RecordingGsam(GsamLike(model, "gsam_a03"), steps)
    for half in (slice(0, 4), slice(4, 8)):
        recorded.set_closure(torch.nn.functional.cross_entropy, images[half], labels[half])
        recorded.step()
    assert len(steps) == 2 and not torch.equal(steps[0][0], steps[1][0])  # the weights before each step
    ours, theirs, after = ftd.our_gsam_steps(ctx, get_recipe("gsam_a03"), steps)
    assert torch.equal(ours, theirs)
    assert torch.equal(after[0], steps[1][0])  # our step from the same weights ends where the next one began
    other, _, _ = ftd.our_gsam_steps(ctx, get_recipe("gsam"), steps)  # alpha 1 instead of 0.3
    assert not compare("directions", other, theirs, ftd.FLOAT32).passed


@pytest.mark.skipif(not REFS or not (Path(REFS or ".") / "ftd").is_dir(),
                    reason="DISTILLERY_PARITY_REFS does not name a folder with the FTD checkout (<dir>/ftd); "
                           "docs/parity.md says how to get it")
@needs_fashion
def test_ftd_cases_pass_against_the_authors_code():
    plan = plan_parity("ftd", Path(REFS) / "ftd", None, {k: str(v) for k, v in FTD_TINY.items()})
    report = run_parity(plan)
    assert report["passed"], [c["failed"] for c in report["cases"] if not c["passed"]]
    assert [c["name"] for c in report["cases"]] == list(METHODS["ftd"].cases)
    assert {"recording-ema", "no-evaluation", "recording-gsam"} <= {p["name"] for p in report["patches"]}


@pytest.mark.skipif(not REFS or not (Path(REFS or ".") / "att").is_dir(),
                    reason="DISTILLERY_PARITY_REFS does not name a folder with the ATT checkout (<dir>/att); "
                           "docs/parity.md says how to get it")
@needs_fashion
def test_att_cases_pass_against_the_authors_code_with_their_step_inside_the_path_and_at_the_tie():
    plan = plan_parity("att", Path(REFS) / "att", None, {k: str(v) for k, v in ATT_TINY.items()})
    report = run_parity(plan)
    assert report["passed"], [c["failed"] for c in report["cases"] if not c["passed"]]
    steps = {c["name"]: next(q["scale"] for q in c["quantities"] if q["name"] == "match_step")
             for c in report["cases"] if c["name"].startswith("distill_iteration")}
    assert steps == {"distill_iteration": 3, "distill_iteration_float32": 3, "distill_iteration_dsa": 3,
                     "distill_iteration_tie": ATT_TINY["syn_steps"]}
def test_normal_and_shuffle_stand_ins_answer_with_our_draws_and_refuse_what_they_cannot_answer():
    normal = normal_from(generator(0, "perturb"))
    drawn = normal(mean=0, std=1, size=torch.Size([2, 3]))
    assert torch.equal(drawn, torch.randn((2, 3), generator=generator(0, "perturb")))
    g = generator(0, "perturb")
    torch.randn((2, 3), generator=g)  # the next draw continues the stream, scaled and shifted
    assert torch.equal(normal(2.0, 3.0, (4,)), torch.randn(4, generator=g) * 3.0 + 2.0)
    with pytest.raises(TypeError, match="numbers for mean and std"):
        normal(torch.zeros(2), 1.0, (2,))
    shuffle = ordered_shuffle(iter([[2, 0, 1]]), "the files")
    items = ["a", "b", "c"]
    shuffle(items)
    assert items == ["c", "a", "b"]
    with pytest.raises(RuntimeError, match="shuffled the files more often"):
        shuffle(items)
    with pytest.raises(RuntimeError, match="not a permutation of 3"):
        ordered_shuffle(iter([[0, 0, 1]]), "x")(items)


def test_asts_generator_stand_in_refuses_to_run():
    with pytest.raises(RuntimeError, match="lacks"):
        ast.generator_stub().Generator()


def test_representative_picks_pass_on_a_tie_and_fail_on_a_pick_that_is_farther():
    """Two classes of 4 rows, 2 centres each (1 pick per centre): class 0's second centre is the midpoint of rows 2
    and 3 (a tie: either pick passes); a pick that is farther from its centre fails, naming the quantities."""
    features = torch.tensor([[0.0, 0], [10, 0], [0, 5], [0, 7], [0, 0], [1, 0], [9, 0], [20, 0]])
    centres = torch.tensor([[0.2, 0], [0, 6], [0.4, 0], [19, 0]])
    pool = torch.arange(8.0).view(8, 1, 1, 1)
    ours, theirs = torch.tensor([0, 2, 4, 7]), torch.tensor([0, 3, 4, 7])
    result, tied = ast_init.compare_picks("r", ours, theirs, features, centres, pool, ipc=2, per_centre=1)
    assert result.passed and tied == [1]
    swapped = torch.tensor([2, 0, 7, 4])  # a class's picks in another slot order: matched to their centres first
    assert torch.equal(ast_init.match_to_centres(swapped, features, centres, 2, 1), ours)
    assert ast_init.compare_picks("r", swapped, theirs, features, centres, pool, 2, 1)[0].passed
    wrong, _ = ast_init.compare_picks("r", torch.tensor([0, 2, 5, 7]), theirs, features, centres, pool, 2, 1)
    assert not wrong.passed and {"distance_to_centre", "rows_untied"} <= set(wrong.to_dict()["failed"])


@needs_fashion
def test_asts_components_are_in_our_iteration_and_their_switches_name_them(ctx):
    """The iteration compared is the one with AST's components: without the perturbation or the momentum the
    loss moves, so a side that dropped one would fail the case."""
    cfg = ast.iteration_config(ctx.sizes)
    assert ast.switches(cfg) == ["--balance_loss", "--agg_middle_loss", "--weight_perturb"]
    assert (cfg.inner_momentum, cfg.balance_base, cfg.perturb_scale) == (0.9, 5.0, 1.0)
    state = mtt.iteration_state(ctx, cfg, torch.float64)
    ours = mtt.our_iteration(ctx, state)
    assert compare_all("self", mtt.our_iteration(ctx, state), ours, ast.FLOAT64, exact=mtt.EXACT_ITERATION).passed
    for change in ({"perturb": "none"}, {"inner_momentum": 0.0}):
        other = replace(state, cfg=replace(cfg, **change))
        assert "loss" in compare_all("off", mtt.our_iteration(ctx, other), ours, ast.FLOAT64).to_dict()["failed"]


@pytest.mark.skipif(not REFS or not (Path(REFS or ".") / "ast").is_dir(),
                    reason="DISTILLERY_PARITY_REFS does not name a folder with the AST checkout (<dir>/ast); "
                           "docs/parity.md says how to get it")
@needs_fashion
def test_ast_exact_cases_pass_against_the_authors_code():
    cases = list(METHODS["ast"].cases)
    plan = plan_parity("ast", Path(REFS) / "ast", cases, {k: str(v) for k, v in AST_TINY.items()})
    report = run_parity(plan)
    assert report["passed"], [c["failed"] for c in report["cases"] if not c["passed"]]
    assert [c["name"] for c in report["cases"]] == cases
