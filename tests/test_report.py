import json

import pandas as pd
import pytest
import torch

from distillery.report import COLUMNS, aggregate, plot_curves, write_table


def record(method, ipc, seed, acc):
    return {"method": method, "dataset": "digits", "ipc": ipc, "arch": "ConvNet", "seed": seed, "accuracy": acc}


def test_aggregate_mean_std_n_in_first_seen_order():
    table = aggregate([record("random", 1, 0, 0.5), record("mtt", 1, 0, 0.8), record("random", 1, 1, 0.7),
                       record("mtt", 1, 1, 0.9)])
    assert list(table.columns) == COLUMNS
    assert table["method"].tolist() == ["random", "mtt"]
    assert table["mean"].tolist() == pytest.approx([60.0, 85.0])
    assert table["std"].tolist() == pytest.approx([10.0, 5.0])
    assert table["n"].tolist() == [2, 2]


def test_write_table_csv_and_markdown(tmp_path):
    paths = []
    for i, rec in enumerate([record("mtt", 10, 0, 0.9), record("mtt", 10, 1, 0.95)]):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(rec))
    write_table(paths, tmp_path / "t.csv", tmp_path / "t.md", "A title")
    frame = pd.read_csv(tmp_path / "t.csv")
    assert frame.to_dict("records") == [{"method": "mtt", "dataset": "digits", "ipc": 10, "arch": "ConvNet",
                                         "mean": 92.5, "std": 2.5, "n": 2}]
    md = (tmp_path / "t.md").read_text()
    assert md.startswith("## A title\n")
    assert "| mtt      | digits    |    10 | ConvNet |  92.50 |  2.50 |   2 |" in md
    assert "final epoch" in md


def test_curves_figure_is_written(tmp_path):
    pd.DataFrame({"iteration": [1, 2, 3], "loss": [1.0, 0.8, 0.7], "lr": [0.01, 0.011, 0.012],
                  "seconds": [0.1] * 3}).to_csv(tmp_path / "log.csv", index=False)
    plot_curves(tmp_path / "log.csv", tmp_path / "curves.png", "t")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_no_results_is_an_error():
    with pytest.raises(ValueError, match="no evaluation results"):
        aggregate([])


def test_image_grid_places_each_image_in_its_row_and_column():
    from distillery.report.figures import image_grid
    images = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, 2, 2) / 10
    grid = image_grid(images, rows=2, pad=1)
    assert grid.shape == (2 * 4, 3 * 4, 3)
    assert grid[1, 1, 0] == 0.0 and grid[1, 5, 0] == pytest.approx(0.1) and grid[5, 1, 0] == pytest.approx(0.3)
    assert grid[0, 0, 0] == 1.0
