import re
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from distillery.data import DATASETS
from distillery.experts import get_recipe
from distillery.plan import (CONFIG_FILES, check_config, eval_config, expert_files, expert_overrides, figure_sources,
                             load_config, logged_method_pattern, merge, resolve_method, table_cells, table_notes,
                             table_sources)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def load_default() -> dict:
    return load_config(ROOT)


def test_default_config_is_valid_and_resolves():
    config = load_default()
    validate(config, schema=str(SCHEMA))
    check_config(config)
    cells = table_cells(config)
    assert [(c.method, c.ipc, c.arch, c.protocol) for c in cells] == [
        (method, ipc, "ConvNetD2W32", "ast" if method == "ast" else "default")
        for method in ("random", "mtt", "ftd", "ast", "att") for ipc in (1, 10)]


def test_settings_precedence_table_then_preset_then_overrides():
    config = load_default()
    assert resolve_method(config, "mtt", "cifar10", 1)["syn_steps"] == 50           # ipc1 row
    assert resolve_method(config, "mtt", "cifar10", 50)["zca"] is False            # ipc50 overrides default
    assert resolve_method(config, "mtt", "cifar100", 1)["expert_epochs"] == 3
    assert resolve_method(config, "mtt_noise", "cifar10", 1)["init"] == "noise"      # preset over its base
    config["distill"]["overrides"] = {"iterations": 7}
    assert resolve_method(config, "mtt", "cifar10", 1)["iterations"] == 7
    assert resolve_method(config, "mtt", "tiny-imagenet", 10)["model"] == "ConvNetD4"


def test_expert_files_follow_model_recipe_and_normalisation():
    config = load_default()
    config["experts"]["count"] = 2
    files = expert_files(config, "cifar10", resolve_method(config, "mtt", "cifar10", 1))
    assert files == ["results/experts/cifar10/zca/ConvNet/sgd/0.pt", "results/experts/cifar10/zca/ConvNet/sgd/1.pt"]
    assert expert_files(config, "cifar10", resolve_method(config, "random", "cifar10", 1)) == []


def test_unknown_method_and_missing_hparams_are_named():
    config = load_default()
    with pytest.raises(ValueError, match="unknown method 'mtx'.*choose one of: apm, apm_a0, .*, mtt_robust, mtt_smooth_gp, random"):
        resolve_method(config, "mtx", "digits", 1)
    with pytest.raises(ValueError, match="no 'mtt' hyperparameters for dataset 'svhn'; add hparams.mtt.svhn"):
        resolve_method(config, "mtt", "svhn", 1)


def test_experts_too_short_for_the_start_epochs_fail_before_any_job():
    config = load_default()
    config["experts"]["overrides"] = {"epochs": 5}
    with pytest.raises(ValueError, match="has 5 epochs but this run needs 11"):
        check_config(config)


@pytest.mark.parametrize("cell,field", [
    ({"method": "mtt", "dataset": "cifar11", "ipc": 1}, "cifar11"),
    ({"method": "mtt", "dataset": "digits", "ipc": 0}, "ipc"),
])
def test_schema_rejects_bad_cells(cell, field):
    config = load_default()
    config["tables"] = [{"name": "t", "cells": [cell]}]
    with pytest.raises(Exception, match=field):
        validate(config, schema=str(SCHEMA))


def test_schema_dataset_names_are_the_registry():
    schema = yaml.safe_load(SCHEMA.read_text())
    assert sorted(schema["definitions"]["dataset"]["enum"]) == sorted(DATASETS)


def test_merge_is_snakemakes_deep_merge():
    assert merge({"a": {"x": 1, "y": 2}, "l": [1, 2]}, {"a": {"y": 3}, "l": [9]}) == {"a": {"x": 1, "y": 3}, "l": [9]}


def test_snakefile_loads_the_config_files_the_library_knows():
    snakefile = (ROOT / "workflow/Snakefile").read_text()
    loaded = [line.split("/../")[1].rstrip('"') for line in snakefile.splitlines() if line.startswith("configfile:")]
    assert loaded == list(CONFIG_FILES)


def test_ftd_presets():
    config = load_default()
    ftd = resolve_method(config, "ftd", "cifar10", 1)
    assert (ftd["recipe"], ftd["ema_decay"], ftd["lr_img"]) == ("gsam_a03", 0.9999, 100)
    assert resolve_method(config, "ftd", "cifar10", 50)["recipe"] == "gsam"
    assert resolve_method(config, "ftd_no_ema", "cifar100", 10)["ema_decay"] is None
    robust = resolve_method(config, "mtt_robust", "cifar10", 50)
    assert (robust["perturb"], robust["perturb_scale"], robust["syn_steps"]) == ("gaussian", 0.001, 30)


def test_named_evaluation_protocols():
    config = load_default()
    config["protocols"] = {"sam0.01": {"sam_rho": 0.01}}
    assert eval_config(config, "sam0.01").sam_rho == 0.01 and eval_config(config).sam_rho == 0.0
    assert eval_config(config, "sam0.01").epochs == config["evaluation"]["epochs"]
    config["tables"] = [{"name": "t", "cells": [{"method": "mtt", "dataset": "digits", "ipc": 1,
                                                 "protocol": ["default", "sam0.01"]}]}]
    assert [c.protocol for c in table_cells(config)] == ["default", "sam0.01"]
    with pytest.raises(ValueError, match="unknown evaluation protocol 'sam9'"):
        eval_config(config, "sam9")


def test_a_presets_protocol_is_its_cells_default_and_a_table_may_name_another():
    """`protocol:` in a preset (AST's: `ast`, from the shared `protocols:` of config/methods.yaml) is the protocol of
    the method's cells that name none; a cell naming `default` gets the shared one; the note names each row's."""
    config = load_default()
    config["methods"]["mine"] = {"base": "mtt", "protocol": "ast"}
    config["tables"] = [{"name": "t", "cells": [{"method": ["mtt", "mine"], "dataset": "digits", "ipc": 1}]},
                        {"name": "u", "cells": [{"method": "mine", "dataset": "digits", "ipc": 1,
                                                 "protocol": ["ast", "default"]}]}]
    assert [(c.method, c.protocol) for c in table_cells(config, "t")] == [("mtt", "default"), ("mine", "ast")]
    assert [c.protocol for c in table_cells(config, "u")] == ["ast", "default"]
    assert resolve_method(config, "mine", "digits", 1) == {**resolve_method(config, "mtt", "digits", 1),
                                                           "method": "mine"}   # not a distillation setting
    assert table_sources(config, "t")[-1]["method_protocol"] == "ast"
    note = table_notes(config, "u")[0]
    assert note.startswith("Evaluation protocols: mine: `ast` (SGD momentum 0.9, weight decay 0.001, batch 256, "
                           "epochs 0-200, lr ×0.5 in a new optimizer with momentum 0.8 after epoch 101); "
                           "mine [default]: `default` (SGD momentum 0.9, weight decay 0.0005")


@pytest.mark.parametrize("prefix,final,recipe,last,extra", [
    # AST's code (distill.py/buffer.py @8030869): inner momentum 0.9, weightPerturb α 1, log5, ξ_i = i·(N // M)
    ("ast", "ast_perturb", "smooth", ("weight", 1.0),
     dict(inner_momentum=0.9, balance_base=5.0, intermediate_spacing="multiple", representative="logits")),
    # AST's paper: plain inner SGD (Algorithm 2), ρ = 0.1 per filter (Eq. 23), ln (Eq. 20), ⌊i·N/M⌋, features
    ("ast_paper", "ast_paper", "smooth_paper", ("filter", 0.1),
     dict(inner_momentum=0.0, balance_base=2.718281828459045, intermediate_spacing="floor",
          representative="features")),
])
def test_ast_presets_stack_one_component_each(prefix, final, recipe, last, extra):
    """Table VIII's chains: each row the previous plus one component, whatever the cell's command switches (the
    CIFAR-100 IPC 10 command has no balanced loss; hparams.ast gives the chain its hyperparameters and the code's
    representative reading there)."""
    config = load_default()
    names = [f"{prefix}_base", f"{prefix}_init", f"{prefix}_balance", f"{prefix}_intermediate", final]
    rows = [resolve_method(config, m, "cifar100", 10) for m in names]
    switches = [(r["init"], r["balance"], r["intermediate"], r["perturb"]) for r in rows]
    assert switches == [("real", False, "none", "none"), ("representative", False, "none", "none"),
                        ("representative", True, "none", "none"), ("representative", True, "equal", "none"),
                        ("representative", True, "equal", last[0])]
    assert {r["recipe"] for r in rows} == {recipe} and rows[-1]["perturb_scale"] == last[1]
    assert {k: rows[-1][k] for k in extra} == extra and rows[0]["inner_momentum"] == extra["inner_momentum"]
    assert rows[0]["max_start_epoch"] == 30 and rows[0]["batch_syn"] == 128    # hparams.ast, not mtt's
    assert resolve_method(config, "mtt_momentum", "cifar100", 10)["recipe"] == "sgd_momentum"
    assert resolve_method(config, "mtt_momentum", "cifar100", 10)["max_start_epoch"] == 20   # hparams.mtt


def test_ast_table7_rows_differ_only_in_the_expert_recipe():
    """AST Table VII: the same distillation (ast_base) from SGD, momentum, momentum + GP and smooth experts."""
    config = load_config(ROOT, ROOT / "config/paper/ast.yaml")
    for table, recipes in (("ast/table7a", ["sgd", "sgd_momentum", "smooth_gp", "smooth"]),
                           ("ast/table7b", ["sgd", "sgd_momentum", "smooth_gp", "smooth"])):
        rows = [resolve_method(config, c.method, c.dataset, c.ipc) for c in table_cells(config, table)]
        assert [r["recipe"] for r in rows] == recipes
        settings = [{k: v for k, v in r.items() if k not in ("method", "recipe")} for r in rows]
        assert all(s == settings[0] for s in settings), table
        assert settings[0]["inner_momentum"] == 0.9 and settings[0]["init"] == "real"


def test_table_sources_follow_the_measure():
    config = load_default()
    cells = [{"method": ["mtt", "ast"], "dataset": "digits", "ipc": 1}]
    config["tables"] = [{"name": m, "measure": m, "cells": cells}
                        for m in ("accuracy", "expert_accuracy", "avg_var", "seconds_per_iteration")]
    config["tables"].append({"name": "fig", "measure": "avg_var", "figures": ["smoothness"], "cells": cells})
    check_config(config)
    paths = {t["name"]: [s["path"] for s in table_sources(config, t["name"])] for t in config["tables"]}
    assert paths["accuracy"] == [f"results/evals/{m}/digits/ipc1/ConvNetD2W32/{p}/seed{s}.json"
                                 for m, p in (("mtt", "default"), ("ast", "ast")) for s in range(3)]
    stats = [f"results/experts/digits/std/ConvNetD2W32/{r}/stats.json" for r in ("sgd", "smooth")]
    assert paths["expert_accuracy"] == paths["avg_var"] == stats
    assert paths["seconds_per_iteration"] == [f"results/synsets/{m}/digits/ipc1/log.csv" for m in ("mtt", "ast")]
    assert table_sources(config, "avg_var")[1] == {"method": "ast", "dataset": "digits", "ipc": 1,
                                                   "arch": "ConvNetD2W32", "protocol": "ast",
                                                   "method_protocol": "ast", "path": stats[1]}
    assert figure_sources(config, "fig", "smoothness") == {"sgd": {"path": stats[0], "syn_steps": 20},
                                                          "smooth": {"path": stats[1], "syn_steps": 20}}
    logs = figure_sources(config, "accuracy", "match_steps")
    assert logs == {f"{m} (N_s = 20)": {"path": f"results/synsets/{m}/digits/ipc1/log.csv", "syn_steps": 20}
                    for m in ("mtt", "ast")}
    assert figure_sources(config, "fig", "accuracy_vs_ipc") == {}


@pytest.mark.parametrize("measure,cell,needle", [
    ("speed", {"method": "mtt", "dataset": "digits", "ipc": 1}, "unknown measure 'speed'"),
    ("avg_var", {"method": "random", "dataset": "digits", "ipc": 1}, "needs trajectory methods"),
])
def test_bad_measures_fail_before_any_job(measure, cell, needle):
    config = load_default()
    config["tables"] = [{"name": "t", "measure": measure, "cells": [cell]}]
    with pytest.raises(ValueError, match=needle):
        check_config(config)


def test_paper_configs_train_experts_at_their_recipes_batch():
    """The default config's digits batch (32) must not leak into the paper configs (deep merge)."""
    for paper in sorted((ROOT / "config/paper").glob("*.yaml")):
        config = load_config(ROOT, paper)
        for dataset in ("cifar10", "cifar100", "tiny-imagenet", "fashion-mnist"):
            overrides = expert_overrides(config, dataset)
            assert get_recipe("sgd", **overrides).batch == 256 and get_recipe("sgd_b512", **overrides).batch == 512


def test_digits_expert_batch_stays_with_digits_in_a_users_own_config(tmp_path):
    """A user's config with a CIFAR-10 (or Fashion-MNIST) table over the default trains batch-256 experts;
    digits keeps its batch 32; experts.overrides still reach every dataset."""
    user = tmp_path / "user.yaml"
    user.write_text("tables:\n  - name: mine\n    cells:\n      - {method: mtt, dataset: cifar10, ipc: 1}\n")
    config = load_config(ROOT, user)
    assert get_recipe("sgd", **expert_overrides(config, "cifar10")).batch == 256
    assert get_recipe("sgd", **expert_overrides(config, "fashion-mnist")).batch == 256
    assert get_recipe("sgd", **expert_overrides(config, "digits")).batch == 32
    config["experts"]["overrides"] = {"epochs": 5}
    assert get_recipe("sgd", **expert_overrides(config, "cifar10")).epochs == 5
    assert get_recipe("sgd", **expert_overrides(config, "digits")) == get_recipe("sgd", batch=32, epochs=5)


def test_schema_problems_name_the_field_the_nearest_key_and_the_type():
    from distillery.plan import SCHEMA, check_schema

    config = load_default()
    config["evaluation"] = {**config["evaluation"], "epoch": 5, "seeds": "3"}
    config["evalution"] = {}
    with pytest.raises(ValueError) as error:
        check_schema(config, ROOT / SCHEMA)
    assert str(error.value).splitlines()[1:] == [
        "  evaluation.seeds: '3' is not an integer",
        "  unknown key 'epoch' in evaluation; did you mean 'epochs'? (allowed: batch, decay, decay_momentum, "
        "default_lr, dsa, epochs, momentum, sam_rho, schedule, seeds, soft_labels, soft_loss, weight_decay)",
        "  unknown key 'evalution' at the top level; did you mean 'evaluation'? (allowed: data_dir, device, distill, "
        "dvc_experts, evaluation, experts, hparams, methods, nas, nas_subset, protocols, reliability, reported_files, "
        "resources, runtime, seed, selection, stability, tables, validation)"]
    check_schema(load_default(), ROOT / SCHEMA)  # the default config fits


def test_every_shipped_config_fits_the_schema_which_refuses_unknown_top_level_keys():
    from distillery.plan import SCHEMA, check_schema

    for extra in [*sorted((ROOT / "config/paper").glob("*.yaml")), ROOT / "config/examples/combinations.yaml"]:
        check_schema(load_config(ROOT, extra), ROOT / SCHEMA)


def test_each_cell_is_resolved_once_per_config_and_a_changed_config_resolves_again(monkeypatch):
    """The planner's passes over a config (checks, table and figure sources, expert sets, a job's resources) and
    every later call share one resolution per (method, dataset, ipc); a changed setting resolves anew."""
    from collections import Counter

    from distillery.plan import expert_sets, rule_resources, settings

    calls = Counter()
    resolve = settings._resolve
    monkeypatch.setattr(settings, "_resolve", lambda config, *cell: calls.update([cell]) or resolve(config, *cell))
    config = load_default()
    config["seed"] = 4242  # a config no other test resolved
    check_config(config)
    for spec in config["tables"]:
        table_sources(config, spec["name"])
        figure_sources(config, spec["name"], "match_steps")
    expert_sets(config)
    rule_resources(config, "distill", "digits", job={"method": "mtt", "dataset": "digits", "ipc": "10"})
    assert resolve_method(config, "mtt", "digits", "10")["seed"] == 4242
    cells = {(c.method, c.dataset, c.ipc) for c in table_cells(config)}
    assert len(cells) == 10 and calls == Counter(cells)  # once each, whatever the passes
    config["distill"]["overrides"] = {"iterations": 7}
    assert resolve_method(config, "mtt", "digits", 10)["iterations"] == 7
    assert calls[("mtt", "digits", 10)] == 2


def test_the_logged_method_pattern_matches_exactly_the_methods_that_write_a_log():
    """plot_cell's method constraint: trajectory and APM methods (and presets based on them), no coreset or merge."""
    config = load_config(ROOT)
    config["methods"]["mtt_long"] = {"base": "mtt", "syn_steps": 80}
    pattern = re.compile(logged_method_pattern(config))
    for method in ["random", "mtt", "ftd", "ast", "att", "apm", "mtt_long"]:
        logged = resolve_method(config, method, "cifar10", 10)["kind"] in ("trajectory", "adversarial")
        assert bool(pattern.fullmatch(method)) == logged == (method != "random"), method
    assert not any(pattern.fullmatch(name) for name in ["mtt_x", "xmtt", "external:mtt", ""])
    assert re.compile(logged_method_pattern({"methods": {"random": {"kind": "coreset"}}})).fullmatch("random") is None
