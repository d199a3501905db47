import io
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from distillery.report.figures import plot_accuracy_vs_ipc, plot_cross_arch, plot_curves, plot_table
from distillery.report.tables import (COLUMNS, COMPARED_COLUMNS, REPORTED_COLUMNS, aggregate, compare, delta_cell,
                                      latex_escape, load_reported, paper_cell, to_latex, to_markdown, write_table)

GOLDEN = Path(__file__).parent / "golden"
REPORTED_CSV = """paper,table,method,dataset,ipc,arch,mean,std
mtt,1,mtt,cifar10,1,ConvNet,46.3,0.8
mtt,1,random,cifar10,1,ConvNet,14.4,2.0
mtt,1,mtt,cifar10,10,ConvNet,65.3,
mtt,2,mtt_noise,cifar10,1,ConvNet,30.0,1.0
ftd,1,mtt,cifar10,1,ConvNet,46.2,0.5
"""


def record(method, ipc, seed, acc, dataset="digits", arch="ConvNet"):
    return {"method": method, "dataset": dataset, "ipc": ipc, "arch": arch, "seed": seed, "accuracy": acc}


def golden_records():
    """mtt and random at IPC 1 (reported), mtt_noise (reported only in another table), mtt at IPC 10 (no std)."""
    accs = [("mtt", 1, [0.45, 0.46, 0.47]), ("random", 1, [0.14, 0.15, 0.16]), ("mtt_noise", 1, [0.40, 0.41]),
            ("mtt", 10, [0.65, 0.66])]
    return [record(m, ipc, seed, a, dataset="cifar10") for m, ipc, values in accs for seed, a in enumerate(values)]


def write_inputs(tmp_path, records):
    paths = []
    for i, rec in enumerate(records):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(rec))
    (tmp_path / "reported.csv").write_text(REPORTED_CSV)
    return paths, tmp_path / "reported.csv"


def test_a_title_note_or_label_from_the_config_is_text_in_the_markdown_never_html_or_table_syntax(tmp_path):
    from distillery.report.stability import to_markdown as stability_markdown

    paths, _ = write_inputs(tmp_path, [record("mtt", 10, 0, 0.9, arch="Conv|Net"), record("mtt", 10, 1, 0.95,
                                                                                          arch="Conv|Net")])
    title = "<script>alert(1)</script> *mtt* | [x](y) & a_b _c_"
    write_table(paths, tmp_path / "t.csv", tmp_path / "t.md", title, notes=["<img src=x> `n`"])
    md = (tmp_path / "t.md").read_text()
    assert md.startswith("## &lt;script&gt;alert(1)&lt;/script&gt; \\*mtt\\* \\| \\[x\\](y) &amp; a_b \\_c\\_\n")
    assert "&lt;img src=x&gt; \\`n\\`" in md and "<" not in md
    row = next(line for line in md.splitlines() if line.startswith("| mtt"))
    assert "Conv\\|Net" in row and len(re.findall(r"(?<!\\)\|", row)) == 9, "the row keeps its 8 cells"
    counts = pd.DataFrame({"method": ["<b>m</b>"], "parameter": ["lr_img"], "multiplier": [1.0], "successes": [1],
                           "runs": [1]})
    assert stability_markdown(counts, "<i>t</i>").startswith("## &lt;i&gt;t&lt;/i&gt;\n") and "<b>" not in \
        stability_markdown(counts, "t")


def test_aggregate_mean_std_n_in_first_seen_order():
    table = aggregate([record("random", 1, 0, 0.5), record("mtt", 1, 0, 0.8), record("random", 1, 1, 0.7),
                       record("mtt", 1, 1, 0.9)])
    assert list(table.columns) == COLUMNS
    assert table["method"].tolist() == ["random", "mtt"]
    assert table["mean"].tolist() == pytest.approx([60.0, 85.0])
    assert table["std"].tolist() == pytest.approx([10.0, 5.0])
    assert table["n"].tolist() == [2, 2]


def test_no_results_is_an_error():
    with pytest.raises(ValueError, match="no evaluation results"):
        aggregate([])


def test_write_table_without_reported_numbers_leaves_paper_columns_empty(tmp_path):
    paths, _ = write_inputs(tmp_path, [record("mtt", 10, 0, 0.9), record("mtt", 10, 1, 0.95)])
    write_table(paths, tmp_path / "t.csv", tmp_path / "t.md", "A title")
    frame = pd.read_csv(tmp_path / "t.csv")
    assert list(frame.columns) == COMPARED_COLUMNS
    row = frame.iloc[0].to_dict()
    assert {k: row[k] for k in COLUMNS} == {"method": "mtt", "dataset": "digits", "ipc": 10, "arch": "ConvNet",
                                            "mean": 92.5, "std": 2.5, "n": 2}
    assert all(math.isnan(row[k]) for k in ["reported_mean", "reported_std", "diff"])
    md = (tmp_path / "t.md").read_text()
    header = "| method   | dataset   |   ipc | arch    |         ours |   paper |   Δ |   n |"
    assert md.startswith(f"## A title\n\n{header}\n")
    assert "| mtt      | digits    |    10 | ConvNet | 92.50 ± 2.50 |         |     |   2 |" in md
    assert "final training epoch" in md and "no selection on the test set" in md
    assert not (tmp_path / "t.tex").exists()


def test_markdown_beside_paper_numbers_matches_golden(tmp_path):
    paths, reported = write_inputs(tmp_path, golden_records())
    write_table(paths, tmp_path / "t.csv", tmp_path / "t.md", "CIFAR-10 (MTT Table 1)", reported_paths=[reported],
                paper="mtt", table_name="1", tex_path=tmp_path / "t.tex")
    assert (tmp_path / "t.md").read_text(encoding="utf-8") == (GOLDEN / "table.md").read_text(encoding="utf-8")
    frame = pd.read_csv(tmp_path / "t.csv")
    assert frame["reported_mean"].isna().tolist() == [False, False, True, False]
    assert frame["reported_mean"].dropna().tolist() == [46.3, 14.4, 65.3]
    assert frame["reported_std"].dropna().tolist() == [0.8, 2.0]
    assert frame["diff"].dropna().tolist() == [-0.3, 0.6, 0.2]
    assert (tmp_path / "t.tex").read_text().startswith("\\begin{table}")
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_compare_matches_only_the_given_paper_and_table():
    table = aggregate(golden_records())
    reported = pd.read_csv(io.StringIO(REPORTED_CSV))  # a plain frame: table read as int, matched as text
    result = compare(table, reported, paper="mtt", table_name="1")
    assert list(result.columns) == COMPARED_COLUMNS
    assert result[["method", "ipc"]].values.tolist() == [["mtt", 1], ["random", 1], ["mtt_noise", 1], ["mtt", 10]]
    assert result["reported_mean"].tolist()[:2] == [46.3, 14.4]  # not FTD's 46.2 for the same cell
    assert math.isnan(result["reported_mean"][2])  # mtt_noise is reported only in table 2
    assert result["diff"].tolist()[:2] == [46.0 - 46.3, 15.0 - 14.4]
    assert result["diff"][3] == 65.5 - 65.3 and math.isnan(result["reported_std"][3])
    ftd = compare(table, reported, paper="ftd", table_name="1")
    assert ftd["reported_mean"].tolist()[0] == 46.2 and ftd["reported_mean"][1:].isna().all()


def test_compare_with_two_papers_for_one_cell_is_an_error():
    table = aggregate(golden_records())
    reported = pd.read_csv(io.StringIO(REPORTED_CSV))
    with pytest.raises(ValueError, match="ambiguous.*'method': 'mtt'"):
        compare(table, reported, paper=None, table_name="1")


def test_load_reported_concatenates_and_checks_columns(tmp_path):
    (tmp_path / "a.csv").write_text(REPORTED_CSV)
    (tmp_path / "b.csv").write_text(f"{','.join(REPORTED_COLUMNS)},source\natt,3,att,svhn,10,ConvNet,79.7,0.21,Table 3\n")
    both = load_reported([tmp_path / "a.csv", tmp_path / "b.csv"])
    assert list(both.columns) == REPORTED_COLUMNS and len(both) == 6
    assert both["table"].tolist()[-1] == "3" and both["ipc"].tolist()[-1] == 10
    assert math.isnan(both["std"][2]) and both["std"].tolist()[-1] == 0.21
    empty = load_reported([])
    assert list(empty.columns) == REPORTED_COLUMNS and empty.empty
    (tmp_path / "bad.csv").write_text("paper,method,dataset,ipc,arch,mean\nmtt,mtt,cifar10,1,ConvNet,46.3\n")
    with pytest.raises(ValueError, match="bad.csv: the columns must start with paper,table,method"):
        load_reported([tmp_path / "bad.csv"])


def test_cells_show_paper_precision_and_signed_delta():
    assert paper_cell(46.3, 0.8, " ± ") == "46.3 ± 0.8"
    assert paper_cell(46.35, 0.21, " ± ") == "46.35 ± 0.21"
    assert paper_cell(46.0, 1.0, " ± ") == "46.0 ± 1.0"
    assert paper_cell(46.3, float("nan"), " ± ") == "46.3"
    assert paper_cell(float("nan"), float("nan"), " ± ") == ""
    assert [delta_cell(d) for d in [1.23, -3.44, -0.04, float("nan")]] == ["+1.2", "\u22123.4", "0.0", ""]


def test_latex_escape():
    assert latex_escape("mtt_noise 50% a&b") == r"mtt\_noise 50\% a\&b"
    assert latex_escape(r"#$~^{}\x") == r"\#\$\textasciitilde{}\textasciicircum{}\{\}\textbackslash{}x"


def test_latex_table_is_structurally_valid():
    records = golden_records() + [record("mtt_noise", 1, 0, 0.4, dataset="cifar10", arch="Conv&Net")]
    compared = compare(aggregate(records), pd.read_csv(io.StringIO(REPORTED_CSV)), "mtt", "1")
    tex = to_latex(compared, "CIFAR-10 at 100% of_the data")
    lines = tex.splitlines()
    environments = re.findall(r"\\(begin|end)\{(\w+)\}", tex)
    assert environments == [("begin", "table"), ("begin", "tabular"), ("end", "tabular"), ("end", "table")]
    assert r"\caption{CIFAR-10 at 100\% of\_the data}" in lines
    spec = re.search(r"\\begin\{tabular\}\{([lcr]+)\}", tex).group(1)
    assert spec == "llrlrrrr"
    body = lines[lines.index(r"\toprule") + 1:lines.index(r"\bottomrule")]
    rows = [line for line in body if line != r"\midrule"]
    assert len(rows) == 1 + 5 and body[1] == r"\midrule"
    for row in rows:
        assert row.endswith(r" \\")
        assert len(re.split(r"(?<!\\)&", row[:-3])) == len(spec)
    assert rows[0] == r"method & dataset & ipc & arch & ours & paper & $\Delta$ & n \\"
    assert rows[1] == r"mtt & cifar10 & 1 & ConvNet & 46.00 $\pm$ 0.82 & 46.3 $\pm$ 0.8 & $-0.3$ & 3 \\"
    assert rows[3] == r"mtt\_noise & cifar10 & 1 & ConvNet & 40.50 $\pm$ 0.50 &  &  & 2 \\"
    assert rows[5] == r"mtt\_noise & cifar10 & 1 & Conv\&Net & 40.00 $\pm$ 0.00 &  &  & 1 \\"
    assert to_markdown(compared, "t").count("\n|") == 2 + 5


def assert_png_and_pdf(png):
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    pdf = png.with_suffix(".pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000


def summary(rows):
    return pd.DataFrame(rows, columns=COLUMNS)


def test_curves_figure_is_written_as_png_and_pdf(tmp_path):
    pd.DataFrame({"iteration": [1, 2, 3], "loss": [1.0, 0.8, 0.7], "lr": [0.01, 0.011, 0.012],
                  "seconds": [0.1] * 3}).to_csv(tmp_path / "log.csv", index=False)
    plot_curves(tmp_path / "log.csv", tmp_path / "curves.png", "t")
    assert_png_and_pdf(tmp_path / "curves.png")


def test_accuracy_vs_ipc_figure_is_written_as_png_and_pdf(tmp_path):
    table = summary([("mtt", "cifar10", ipc, arch, mean, 0.5, 3) for ipc, mean in [(1, 46.0), (10, 65.0), (50, 71.0)]
                     for arch in ["ConvNet", "ResNet18"]] + [("random", "cifar10", 1, "ConvNet", 14.4, 2.0, 3)])
    plot_accuracy_vs_ipc(table, tmp_path / "acc.png", "accuracy vs IPC")
    assert_png_and_pdf(tmp_path / "acc.png")


def test_cross_arch_grid_rows_are_methods_and_columns_archs():
    from distillery.report.figures import cross_arch_grid
    table = summary([("mtt", "cifar10", 10, "ConvNet", 64.3, 0.7, 3), ("mtt", "cifar10", 10, "ResNet18", 46.4, 0.6, 3),
                     ("random", "cifar10", 10, "ConvNet", 26.0, 1.2, 3)])
    grid = cross_arch_grid(table)
    assert grid.index.tolist() == ["mtt", "random"] and grid.columns.tolist() == ["ConvNet", "ResNet18"]
    assert grid.loc["mtt"].tolist() == [64.3, 46.4] and grid.loc["random", "ConvNet"] == 26.0
    assert math.isnan(grid.loc["random", "ResNet18"])
    two_ipcs = cross_arch_grid(pd.concat([table, table.assign(ipc=1)]))
    assert two_ipcs.index.tolist() == ["mtt · IPC 10", "random · IPC 10", "mtt · IPC 1", "random · IPC 1"]


def test_cross_arch_heat_map_is_written_as_png_and_pdf(tmp_path):
    table = summary([(m, "cifar10", 10, arch, mean, 0.5, 3) for m, base in [("mtt", 60.0), ("random", 25.0)]
                     for arch, mean in [("ConvNet", base), ("ResNet18", base - 10), ("VGG11", base - 8)]])
    plot_cross_arch(table, tmp_path / "cross.png", "cross-architecture")
    assert_png_and_pdf(tmp_path / "cross.png")


def test_figure_path_must_be_png_or_pdf(tmp_path):
    table = summary([("mtt", "cifar10", 10, "ConvNet", 64.3, 0.7, 3)])
    with pytest.raises(ValueError, match="must end in .png or .pdf"):
        plot_cross_arch(table, tmp_path / "cross.svg")
    assert list(tmp_path.iterdir()) == []


def test_plot_table_draws_the_named_figure_from_a_table_csv(tmp_path):
    paths, reported = write_inputs(tmp_path, golden_records())
    write_table(paths, tmp_path / "t.csv", tmp_path / "t.md", "t", reported_paths=[reported], paper="mtt", table_name=1)
    plot_table("accuracy_vs_ipc", tmp_path / "t.csv", tmp_path / "figures" / "acc.png", "t")
    assert_png_and_pdf(tmp_path / "figures" / "acc.png")
    with pytest.raises(ValueError, match="figure must be one of accuracy_vs_ipc, cross_arch, smoothness, match_steps, got 'bars'"):
        plot_table("bars", tmp_path / "t.csv", tmp_path / "bars.png")


def test_image_grid_places_each_image_in_its_row_and_column():
    from distillery.report.figures import image_grid
    images = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, 2, 2) / 10
    grid = image_grid(images, rows=2, pad=1)
    assert grid.shape == (2 * 4, 3 * 4, 3)
    assert grid[1, 1, 0] == 0.0 and grid[1, 5, 0] == pytest.approx(0.1) and grid[5, 1, 0] == pytest.approx(0.3)
    assert grid[0, 0, 0] == 1.0


def test_transcribed_paper_numbers_cover_every_declared_table_cell():
    """Each reported table of each paper config has a paper value for every one of its cells, and no stray rows."""
    from pathlib import Path

    from distillery.plan import load_config, method_protocol, table_cells

    root = Path(__file__).resolve().parents[1]
    for paper_config in sorted((root / "config/paper").glob("*.yaml")):
        config = load_config(root, paper_config)
        reported = load_reported(root / f for f in config["reported_files"])
        for spec in config["tables"]:
            if "reported" not in spec:
                continue
            rows = reported[(reported["paper"] == spec["reported"]["paper"])
                            & (reported["table"] == spec["reported"]["table"])]
            have = set(zip(rows["method"], rows["dataset"], rows["ipc"], rows["arch"]))
            want = {(c.method if c.protocol == method_protocol(config, c.method) else f"{c.method} [{c.protocol}]",
                     c.dataset, c.ipc, c.arch) for c in table_cells(config, spec["name"])}
            assert want == have, (paper_config.name, spec["name"], want ^ have)
            assert rows["mean"].notna().all()


def test_named_protocols_label_their_rows():
    """A row under its method's own protocol (`method_protocol`, default "default") is the method; under another,
    "method [protocol]"."""
    records = [{**record("mtt", 1, s, 0.5), "protocol": p} for s in range(2) for p in ("default", "sam0.01")]
    records += [{**record("ast", 1, s, 0.5), "protocol": p, "method_protocol": "ast"} for s in range(2)
                for p in ("ast", "default")]

    table = aggregate(records)
    assert table["method"].tolist() == ["mtt", "mtt [sam0.01]", "ast", "ast [default]"]
    assert table["n"].tolist() == [2, 2, 2, 2]
    avg_var = [{"method": "ast_base", "dataset": "digits", "ipc": 1, "arch": "ConvNet", "protocol": "ast",
                "method_protocol": "ast", "value": v} for v in (0.5, 0.7)]     # a measure other than accuracy
    assert aggregate(avg_var)["method"].tolist() == ["ast_base"]


def test_other_measures_read_their_sources_and_say_what_they_are(tmp_path):
    from distillery.report.tables import load_records

    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"avg_var": [0.5, 0.7], "final_test_accuracy": [0.8, 0.9]}))
    log = tmp_path / "log.csv"
    log.write_text("iteration,loss,lr,seconds\n1,1.0,0.01,5.0\n2,0.9,0.01,0.2\n3,0.8,0.01,0.4\n")
    keys = {"method": "ast", "dataset": "digits", "ipc": 1, "arch": "ConvNet", "protocol": "default"}
    expected = {"avg_var": ([0.5, 0.7], "0.6000 ± 0.1000", "Avg_Var"),
                "expert_accuracy": ([80.0, 90.0], "85.00 ± 5.00", "expert networks"),
                "seconds_per_iteration": ([0.2, 0.4], "0.300 ± 0.100", "warm-up")}
    for measure, (values, shown, note) in expected.items():
        source = {**keys, "path": log if measure == "seconds_per_iteration" else stats}
        records = load_records([source], measure)
        assert [r["value"] for r in records] == pytest.approx(values)
        write_table([source], tmp_path / "t.csv", tmp_path / "t.md", "t", measure=measure)
        md = (tmp_path / "t.md").read_text()
        assert shown in md and note in md and "no selection on the test set" not in md
    with pytest.raises(ValueError, match="unknown measure"):
        load_records([{**keys, "path": stats}], "speed")


def test_smoothness_figure_from_expert_stats(tmp_path):
    for name, scale in (("sgd", 1.0), ("smooth", 0.1)):
        (tmp_path / f"{name}.json").write_text(json.dumps({
            "epoch_changes": [[scale * 2, scale], [scale * 3, scale]],
            "test_accuracy": [[0.1, 0.5, 0.6], [0.1, 0.4, 0.7]]}))
    stats = {name: {"path": tmp_path / f"{name}.json"} for name in ("sgd", "smooth")}
    plot_table("smoothness", None, tmp_path / "fig" / "smoothness.png", "t", sources=stats)
    assert (tmp_path / "fig" / "smoothness.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "fig" / "smoothness.pdf").exists()
    with pytest.raises(ValueError, match="no expert statistics"):
        plot_table("smoothness", None, tmp_path / "empty.png", sources={})


def test_match_steps_figure_from_distillation_logs(tmp_path):
    for name, steps in (("att", [3, 5, 8, 9]), ("mtt", [10, 10, 10, 10])):
        pd.DataFrame({"iteration": range(1, 5), "loss": 1.0, "lr": 0.01, "start_epoch": 0, "match_step": steps,
                      "seconds": 0.1}).to_csv(tmp_path / f"{name}.csv", index=False)
    logs = {f"{n} (N_s = 10)": {"path": tmp_path / f"{n}.csv", "syn_steps": 10} for n in ("att", "mtt")}
    plot_table("match_steps", None, tmp_path / "steps.png", "t", sources=logs)
    assert (tmp_path / "steps.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "steps.pdf").exists()
