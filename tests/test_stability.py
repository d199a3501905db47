"""ATT's stability study: trials on a tiny digits setup, success counts, the table and the bar chart."""
import math

import pandas as pd
import pytest

from distillery.distill.stability import stability_trial
from distillery.io import load_json, save_json
from distillery.report.stability import plot_stability, stability_counts, write_stability

SETTINGS = dict(method="mtt", kind="trajectory", ipc=1, model="ConvNetD2W16", syn_steps=4, expert_epochs=2,
                max_start_epoch=1, lr_img=100.0, lr_lr=1e-5, lr_teacher=0.01)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A prepared digits dataset and one 2-epoch expert."""
    from distillery.data import prepare
    from distillery.experts import run_expert_training

    root = tmp_path_factory.mktemp("stability")
    prepare("digits", root, root / "digits")
    run_expert_training(root / "digits", root / "expert0.pt", "ConvNetD2W16", "sgd", 0,
                        overrides={"epochs": 2, "batch": 64})
    return root / "digits", [root / "expert0.pt"]


def record(method, parameter, multiplier, seed, success):
    return {"method": method, "parameter": parameter, "multiplier": multiplier, "seed": seed, "success": success,
            "iterations": 5}


def hand_made():
    """mtt fails everything at lr_lr ×100; att fails one seed at lr_img ×10; mtt is seen first."""
    return ([record("mtt", "lr_lr", 100, s, False) for s in range(2)]
            + [record("mtt", "lr_lr", 1, s, True) for s in range(2)]
            + [record("att", "lr_lr", 100, s, True) for s in range(2)]
            + [record("att", "lr_img", 10, s, s == 0) for s in range(2)]
            + [record("mtt", "lr_img", 10, s, True) for s in range(2)]
            + [record("att", "lr_lr", 1, s, True) for s in range(2)])


def test_counts_per_method_parameter_and_multiplier():
    counts = stability_counts(hand_made())
    assert list(counts.columns) == ["method", "parameter", "multiplier", "successes", "runs"]
    assert counts.values.tolist() == [["mtt", "lr_img", 10.0, 2, 2], ["att", "lr_img", 10.0, 1, 2],
                                      ["mtt", "lr_lr", 1.0, 2, 2], ["att", "lr_lr", 1.0, 2, 2],
                                      ["mtt", "lr_lr", 100.0, 0, 2], ["att", "lr_lr", 100.0, 2, 2]]
    with pytest.raises(ValueError, match="repeat"):
        stability_counts(hand_made() + [record("mtt", "lr_lr", 1, 0, True)])
    with pytest.raises(ValueError, match="no stability records"):
        stability_counts([])


def test_write_stability_and_plot(tmp_path):
    paths = []
    for i, rec in enumerate(hand_made()):
        paths.append(tmp_path / f"trial{i}.json")
        save_json(rec, paths[-1])
    counts = write_stability(paths, tmp_path / "s.csv", tmp_path / "s.md", "Stability")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "s.csv"), counts, check_dtype=False)
    md = (tmp_path / "s.md").read_text()
    assert md.startswith("## Stability") and "### lr_img" in md and "### lr_lr" in md
    lr_lr = md.split("### lr_lr")[1]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lr_lr.splitlines() if line[:2] == "| "]
    assert rows == [["method", "×1", "×100"], ["mtt", "2/2", "0/2"], ["att", "2/2", "2/2"]]
    assert "differ only by seed" in md and "per run: 5." in md
    plot_stability(tmp_path / "s.csv", tmp_path / "fig" / "stability.png", title="ATT Fig. 4")
    for suffix in (".png", ".pdf"):
        assert (tmp_path / "fig" / f"stability{suffix}").stat().st_size > 1000


def test_trial_succeeds_with_the_preset(digits, tmp_path):
    prepared, experts = digits
    out = tmp_path / "ok.json"
    rec = stability_trial(SETTINGS, prepared, experts, "lr_img", 2.0, 1, 3, out)
    assert load_json(out) == rec
    assert rec["success"] is True and rec["reason"] == "" and rec["iterations_done"] == 3
    assert rec["value"] == 200.0 and rec["multiplier"] == 2.0 and rec["seed"] == 1
    assert rec["method"] == "mtt" and rec["dataset"] == "digits" and rec["ipc"] == 1
    assert math.isfinite(rec["final_loss"]) and rec["final_lr"] > 0


def test_trial_with_an_absurd_lr_lr_fails_and_is_recorded(digits, tmp_path):
    prepared, experts = digits
    out = tmp_path / "bad.json"
    rec = stability_trial(SETTINGS, prepared, experts, "lr_lr", 1e9, 0, 3, out)
    assert load_json(out) == rec
    assert rec["success"] is False and rec["iterations_done"] < 3
    assert "skipped iteration(s) in a row" in rec["reason"]
    assert rec["final_loss"] is None or rec["final_lr"] is None or rec["final_lr"] <= 0


def test_other_errors_propagate_and_write_nothing(digits, tmp_path):
    prepared, experts = digits
    with pytest.raises(ValueError, match="max_start_epoch"):  # experts too short: a setup bug, not a failed run
        stability_trial({**SETTINGS, "max_start_epoch": 5}, prepared, experts, "lr_img", 1.0, 0, 1,
                        tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("settings,parameter,message", [
    (SETTINGS, "lr_teacher", "must be one of lr_img, lr_lr"),
    ({"method": "random", "kind": "coreset", "ipc": 1}, "lr_img", "needs kind trajectory"),
    (SETTINGS, "lr_img", "must be a positive learning rate"),  # multiplier 0 below
])
def test_bad_arguments_are_clear_errors(settings, parameter, message, tmp_path):
    multiplier = 0.0 if message.startswith("must be a positive") else 2.0
    with pytest.raises(ValueError, match=message):
        stability_trial(settings, tmp_path / "none", [], parameter, multiplier, 0, 1, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
