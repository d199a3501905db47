"""Integration tier: the honest-numbers example (config/examples/honest.yaml) through the workflow on digits, shrunk
to test size: a held-out validation split, snapshots, the three selection rules side by side and DD-Ranking's two
scores, in this process (conftest.snakemake), on shared experts of the held-out split (conftest.shared_experts)."""
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import EXPERTS, ROOT, job_counts, snakemake

EXAMPLE = yaml.safe_load((ROOT / "config/examples/honest.yaml").read_text())


def tiny() -> dict:
    """The example with test-sized experts, distillations (10 iterations, snapshots at 0 and 5) and evaluations (one
    seed: an evaluation job is mostly its process's start)."""
    config = {**EXAMPLE, "experts": EXPERTS, "evaluation": {"seeds": 1, "epochs": 20},
              "protocols": {"epochs100": {"epochs": 10}},
              "distill": {"overrides": {"iterations": 10, "syn_steps": 4, "max_start_epoch": 2}}}
    config["tables"] = [dict(table) for table in EXAMPLE["tables"]]
    config["tables"][0]["selection"] = {**config["tables"][0]["selection"], "snapshot_every": 5}
    return config


def accuracies(workdir: Path, method: str, choice: str, iteration: int | None) -> list[float]:
    folder = workdir / f"results/evals/{method}/digits/ipc1/ConvNetD2W32/{choice}"
    folder = folder if iteration is None else folder / f"it{iteration}"
    return [100 * json.loads((folder / "seed0.json").read_text())["accuracy"]]


@pytest.mark.slow
def test_the_honest_example_puts_three_rules_and_two_scores_beside_each_other(tmp_path, shared_experts):
    config = tiny()
    tables = [f"results/tables/honest/{name}.csv" for name in ("accuracy", "lrs", "ars")]
    shared_experts(tmp_path, config)
    dry = snakemake(tmp_path, config, "-n", "--cores", "2", *tables)
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = job_counts(dry.stdout)      # the data and experts are the shared ones
    assert jobs["evaluate_snapshot"] == 2 * 2            # snapshots 0, 5 × choices default, epochs100
    assert jobs["evaluate_split"] == 2 * 2 + 2           # final sets: 2 methods × 2 choices, + 2 without augmentation
    assert jobs["evaluate_real"] == 1 and "train_expert" not in jobs
    assert jobs["distill_snapshots_mtt_digits_ipc1"] == 1 and jobs["distill"] == 1     # mtt with snapshots; random
    result = snakemake(tmp_path, config, "--cores", "2", *tables)
    assert result.returncode == 0, result.stderr[-3000:]

    meta = json.loads((tmp_path / "results/data/digits/meta.json").read_text())
    assert meta["n_train"] == 1347 - 100 and meta["validation"]["n"] == 100
    snapshot = torch.load(tmp_path / "results/synsets/mtt/digits/ipc1/snapshots/it5.pt", weights_only=True)
    assert snapshot["meta"]["iteration"] == 5
    one = json.loads((tmp_path / "results/evals/mtt/digits/ipc1/ConvNetD2W32/default/it5/seed0.json").read_text())
    assert one["iteration"] == 5 and 0 <= one["validation_accuracy"] <= 1

    table = pd.read_csv(tmp_path / "results/tables/honest/accuracy.csv").set_index("method")
    candidates = {(choice, it): accuracies(tmp_path, "mtt", choice, it)
                  for choice in ("default", "epochs100") for it in (None, 0, 5)}
    means = {c: sum(a) / len(a) for c, a in candidates.items()}
    mtt = table.loc["mtt"]
    assert mtt["final_mean"] == pytest.approx(means[("default", None)], abs=1e-4)
    assert mtt["test_mean"] == pytest.approx(max(means.values()), abs=1e-4)
    assert mtt["validation_mean"] == pytest.approx(means[(mtt["validation_choice"],
                                                          None if pd.isna(mtt["validation_iteration"])
                                                          else int(mtt["validation_iteration"]))], abs=1e-4)
    assert mtt["selection_diff"] == pytest.approx(mtt["final_mean"] - mtt["test_mean"], abs=1e-4) and \
        mtt["selection_diff"] <= 0
    header = (tmp_path / "results/tables/honest/accuracy.md").read_text().splitlines()[2]
    assert [c.strip() for c in header.split("|")[5:9]] == ["final", "validation", "test ‡", "paper"]
    assert "selected on the test set" in (tmp_path / "results/tables/honest/accuracy.md").read_text()
    for score in ("lrs", "ars"):
        scores = pd.read_csv(tmp_path / f"results/tables/honest/{score}.csv")
        assert scores["method"].tolist() == ["mtt"] and scores["mean"].between(0, 100).all()
        assert (scores["n"] == 1).all()
    real = json.loads((tmp_path / "results/real/digits/std/ConvNetD2W32/default/seed0.json").read_text())
    assert real["images"] == 1347 - 100 and real["lr"] == 0.01
