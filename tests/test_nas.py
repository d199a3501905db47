"""NAS with distilled data: the 720-ConvNet space, NAS-Bench-201 cells, Spearman, the summary table, sampling."""
import itertools
import math

import pytest
import torch
from scipy import stats

from distillery.data import load_meta, prepare
from distillery.synset import save_synset
from distillery.evaluate import EvalConfig, evaluate_synset
from distillery.io import save_json
from distillery.models import build_model, is_model_name
from distillery.models.cell import OPS, arch_to_name, name_to_arch, parse_arch
from distillery.models.convnet import parse_convnet_name
from distillery.nas import (convnet_space, nas_summary, ranks, read_ground_truth, sample, spearman, top_k_spearman,
                            train_architecture, write_nas_table)
from distillery.plan import load_config, nas_architectures, nas_results
from conftest import ROOT

CELLS = ["|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
         "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
         "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"]


def test_convnet_space_is_720_unique_architectures_that_build_and_forward_at_28_and_32_px():
    names = convnet_space()
    assert len(names) == 720 and len(set(names)) == 720
    settings = {tuple(sorted(parse_convnet_name(n).items())) for n in names}
    expected = {tuple(sorted(dict(depth=d, width=w, norm=n, act=a, pool=p).items())) for d, w, n, a, p in
                itertools.product((1, 2, 3, 4), (32, 64, 128, 256),
                                  ("none", "batchnorm", "layernorm", "instancenorm", "groupnorm"),
                                  ("sigmoid", "relu", "leakyrelu"), ("none", "maxpool", "avgpool"))}
    assert settings == expected
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only contend
    try:
        with torch.no_grad():
            for channels, size in ((1, 28), (3, 32)):
                x = torch.randn(2, channels, size, size)
                for name in names:
                    out = build_model(name, channels, 10, size).eval()(x)
                    assert out.shape == (2, 10) and torch.isfinite(out).all(), name
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("x,y", [
    ([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]),
    ([0.3, 0.1, 0.4, 0.1, 0.5, 0.9], [2, 7, 1, 8, 2, 8]),     # ties on both sides
    ([10, 20, 30, 40], [40, 30, 20, 10]),
    ([3, 1, 2], [1, 2, 3]),
    ([55.2, 61.0, 47.3, 61.0, 58.8, 40.1, 49.9], [71.1, 80.2, 70.0, 79.9, 75.3, 65.2, 72.5]),
])
def test_spearman_and_ranks_equal_scipy(x, y):
    assert ranks(x) == stats.rankdata(x).tolist()
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_spearman_is_nan_for_a_constant_ranking_and_rejects_unpaired_values():
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="paired"):
        spearman([1, 2], [1, 2, 3])


def test_top_k_spearman_uses_the_proxys_best_k():
    proxy = {"a": 90, "b": 80, "c": 70, "d": 60, "e": 50}
    truth = {"a": 10, "b": 20, "c": 30, "d": 5, "e": 1}       # the proxy's top 3 are reversed in truth
    assert top_k_spearman(proxy, truth, 3) == (pytest.approx(-1.0), 3)
    assert top_k_spearman(proxy, truth, None)[0] == pytest.approx(stats.spearmanr([90, 80, 70, 60, 50],
                                                                                  [10, 20, 30, 5, 1]).statistic)
    assert top_k_spearman(proxy, truth, 20)[1] == 5           # fewer architectures than k: all of them
    with pytest.raises(ValueError, match="different architectures: f"):
        top_k_spearman(proxy, {**truth, "f": 3}, 3)


@pytest.mark.parametrize("arch", CELLS)
def test_nas_bench_201_cells_round_trip_build_and_forward(arch):
    name = arch_to_name(arch)
    assert name.startswith("NB201_") and is_model_name(name) and name_to_arch(name) == arch
    torch.manual_seed(0)
    for channels, size in ((3, 32), (1, 8)):
        model = build_model(name, channels, 10, size)
        assert model(torch.randn(2, channels, size, size)).shape == (2, 10)


def test_nas_bench_201_parameters_are_the_skeleton_plus_the_cells_convolutions():
    def count(arch):
        return sum(p.numel() for p in build_model(arch_to_name(arch), 3, 10, 32).parameters())

    skips = count(CELLS[2])
    one_conv = count("|nor_conv_3x3~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|")
    # one 3x3 conv (no bias) + BN per cell: 5 cells at each of 16, 32 and 64 channels
    assert one_conv - skips == sum(5 * (9 * c * c + 2 * c) for c in (16, 32, 64))


def test_a_cell_of_none_edges_ignores_its_input():
    model = build_model(arch_to_name("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"), 3, 10, 16).eval()
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(model(x)[0], model(x)[1])


@pytest.mark.parametrize("arch,message", [
    ("|nor_conv_3x3~0|+|none~0|none~1|", "3 nodes"),
    ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown operation 'conv_5x5'"),
    ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", "inputs ~0..~1 in order"),
])
def test_bad_arch_strings_are_named(arch, message):
    with pytest.raises(ValueError, match=message):
        parse_arch(arch)
    assert len(OPS) == 5


def test_missing_ground_truth_says_what_to_supply_and_where(tmp_path):
    path = tmp_path / "nb201.csv"
    with pytest.raises(FileNotFoundError) as error:
        read_ground_truth(path, "apm/table3")
    message = str(error.value)
    assert str(path) in message and "'arch,accuracy'" in message and "`ground_truth`" in message
    assert "apm/table3" in message and "|nor_conv_3x3~0|" in message
    path.write_text("architecture,acc\nx,1\n")
    with pytest.raises(ValueError, match="header 'arch,accuracy'"):
        read_ground_truth(path)
    path.write_text(f"arch,accuracy\n\"{CELLS[0]}\",91.5\n{CELLS[1]},80.25\n")
    assert read_ground_truth(path) == {arch_to_name(CELLS[0]): 91.5, arch_to_name(CELLS[1]): 80.25}


def records(source, accuracy, seconds=30.0, images=10):
    return [{"source": source, "arch": arch, "accuracy": acc, "seconds": seconds, "images": images}
            for arch, acc in accuracy.items()]


def test_summary_correlates_each_source_with_the_real_ranking_and_totals_its_time(tmp_path):
    real = {f"A{i}": 0.9 - 0.1 * i for i in range(6)}
    proxy = {f"A{i}": 0.1 * i for i in range(6)}              # the exact reverse of the real ranking
    rows = records("real", real, seconds=600, images=1347) + records("mtt", proxy)
    table = nas_summary(rows, ["real", "mtt"], top=[3, 5])
    assert table.columns.tolist() == ["source", "images", "architectures", "top3", "top5", "minutes"]
    assert table.iloc[0][["top3", "top5", "minutes", "images"]].tolist() == [1.0, 1.0, 60.0, 1347]
    assert table.iloc[1][["top3", "top5", "minutes"]].tolist() == [pytest.approx(-1.0), pytest.approx(-1.0), 3.0]
    with pytest.raises(ValueError, match="add it to the study's sources"):
        nas_summary(records("mtt", proxy), ["mtt"])
    paths = []
    for i, record in enumerate(rows):
        paths.append(tmp_path / f"{i}.json")
        save_json(record, paths[-1])
    write_nas_table(paths, ["real", "mtt"], tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "acc.csv", "T", [3])
    markdown = (tmp_path / "t.md").read_text()
    assert markdown.startswith("## T") and "| mtt " in markdown and "-1.00" in markdown
    assert len((tmp_path / "acc.csv").read_text().splitlines()) == 13


def test_summary_against_ground_truth_covers_all_architectures():
    truth = {"A": 70.0, "B": 60.0, "C": 50.0, "D": 40.0}
    table = nas_summary(records("apm", {"A": 0.3, "B": 0.4, "C": 0.2, "D": 0.1}), ["apm"], truth=truth)
    assert table["spearman"].tolist() == [pytest.approx(stats.spearmanr([3, 4, 2, 1], [7, 6, 5, 4]).statistic)]


def test_nas_subset_is_a_seeded_sample_of_the_space():
    config = load_config(ROOT, ROOT / "config/paper/ftd.yaml")
    assert len(nas_architectures(config, "ftd/table5")) == 720
    five = nas_architectures({**config, "nas_subset": 5}, "ftd/table5")
    assert len(set(five)) == 5 and set(five) <= set(convnet_space())
    assert five == nas_architectures({**config, "nas_subset": 5}, "ftd/table5")
    assert five != nas_architectures({**config, "nas_subset": 5, "seed": 1}, "ftd/table5")
    assert sample(["a", "b"], 10, 0) == ["a", "b"]
    jobs = nas_results({**config, "nas_subset": 5}, "ftd/table5")
    assert [j["source"] for j in jobs] == ["real"] * 5 + ["mtt"] * 5 + ["ftd"] * 5
    assert jobs[5]["path"] == f"results/nas/ftd/table5/mtt/{five[0]}.json"


def test_bench201_study_without_its_file_plans_no_architectures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(ROOT, ROOT / "config/paper/apm.yaml")
    assert nas_architectures(config, "apm/table3") == []
    truth = tmp_path / "data/nas-bench-201/cifar10.csv"
    truth.parent.mkdir(parents=True)
    truth.write_text("arch,accuracy\n" + "".join(f"{a},{90 - i}\n" for i, a in enumerate(CELLS)))
    assert nas_architectures(config, "apm/table3") == [arch_to_name(a) for a in CELLS]


def test_train_architecture_on_the_real_split(tmp_path):
    prepare("digits", tmp_path, tmp_path / "digits")
    result = train_architecture("real", None, tmp_path / "digits", "ConvNetD1W32NNARAP", 0, EvalConfig(epochs=2))
    assert result["images"] == 1347 and result["source"] == "real" and result["seconds"] > 0
    assert 0.2 < result["accuracy"] <= 1.0 and result["eval"]["epochs"] == 2


def test_train_architecture_on_a_synset_is_its_evaluation_at_the_learned_lr(tmp_path):
    prepare("digits", tmp_path, tmp_path / "digits")
    g = torch.Generator().manual_seed(0)
    meta = {"method": "mtt", "dataset": "digits", "ipc": 2, "num_classes": 10, "zca": False,
            "dataset_sha256": load_meta(tmp_path / "digits")["sha256"]["train.pt"]}
    save_synset(tmp_path / "synset.pt", torch.randn(20, 1, 8, 8, generator=g), torch.arange(10).repeat(2), 0.02,
                None, meta)
    cfg = EvalConfig(epochs=3)
    result = train_architecture("mtt", tmp_path / "synset.pt", tmp_path / "digits", "ConvNetD2W32BNALMP", 1, cfg)
    expected = evaluate_synset(tmp_path / "synset.pt", tmp_path / "digits", "ConvNetD2W32BNALMP", 1, cfg)
    assert result["accuracy"] == expected["accuracy"] and result["lr"] == 0.02
    assert result["images"] == 20 and result["source"] == "mtt"


def test_nas_config_errors_name_the_study_and_field():
    from snakemake.utils import validate

    from distillery.plan import check_config
    from test_plan import SCHEMA

    config = load_config(ROOT)
    study = {"name": "s", "space": "bench201", "dataset": "digits", "ipc": 1, "sources": ["random"]}
    with pytest.raises(Exception, match="ground_truth"):
        validate({**config, "nas": [study]}, schema=str(SCHEMA))
    with pytest.raises(Exception, match="'fancy' is not one of"):
        validate({**config, "nas": [{**study, "space": "fancy", "ground_truth": "x.csv"}]}, schema=str(SCHEMA))
    convnet = {**study, "space": "convnet"}
    with pytest.raises(ValueError, match="NAS study 's': the convnet space ranks against .* add 'real'"):
        check_config({**config, "nas": [convnet]})
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        check_config({**config, "nas": [{**convnet, "sources": ["real", "nope"]}]})
    with pytest.raises(ValueError, match="`protocols` names 'mtt', which is not a source"):
        check_config({**config, "nas": [{**convnet, "sources": ["real"], "protocols": {"mtt": "soft"}}]})
    check_config({**config, "nas": [{**convnet, "sources": ["real", "random"]}]})
