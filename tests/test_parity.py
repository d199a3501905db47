"""The parity harness (distillery.parity). Without the authors' code: its comparison (which must be able to fail),
its patches and state injection (the random calls of code written in the authors' style answered with our draws),
the loading of a checkout's modules, and a run whose two sides are both our code, once equal and once perturbed.
With DISTILLERY_PARITY_REFS naming a folder of checkouts (<dir>/mtt at the ledger's commit, as docs/parity.md gets
them): MTT's exact cases at small sizes, through the real harness, must pass."""
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
from distillery.parity import lineage, mtt
from distillery.parity.compare import EXACT, CaseResult, Tolerance, compare, compare_all, spread_test
from distillery.parity.context import Context, Method, with_settings
from distillery.parity.patches import Clock, Patches, proxy, rand_from, randint_from, randperm_from, recording_sgd
from distillery.parity.reference import Reference, authors_modules, check_checkout, script_args
from distillery.parity.run import METHODS, Plan, plan_parity, run_parity, write_report
from distillery.parity.table import summary_lines
from distillery.parity.workspace import make_workspace
from distillery.seeds import generator

REFS = os.environ.get("DISTILLERY_PARITY_REFS")
HAS_FASHION = (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file() or Path("data/fashion-mnist").is_dir()
needs_fashion = pytest.mark.skipif(not HAS_FASHION, reason="Fashion-MNIST is not installed (Debian package "
                                                           "dataset-fashion-mnist, or data/fashion-mnist)")
# small enough for seconds; lr_lr 1e-7 keeps the learned lr positive (above it our loop skips the update, the
# ledger's row "Learned lr out of (0, ∞)", and the cases report "updated" as the difference)
TINY = dict(model="ConvNetW32", train_per_class=12, test_per_class=10, ipc=1, syn_steps=3, batch_syn=4, lr_lr=1e-7,
            train_epochs=1, batch_train=32, eval_ipc=2, eval_epochs=2, eval_batch=8)


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
