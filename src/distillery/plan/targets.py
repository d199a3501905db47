"""What the config's tables read: their cells, the expert and synset files behind each number and figure, every
distillation and expert set the config needs, and the notes printed under a table."""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from distillery.choices import (EXPERT_MEASURES, FEATURE_SELECTS, LOGGED_KINDS, MEASURES, NORMS, SCORE_MEASURES,
                                SOURCE_FIGURES)
from distillery.data import get_spec
from distillery.distill.config import DistillConfig
from distillery.distill.snapshots import snapshot_iterations
from distillery.evaluate import EvalConfig
from distillery.experts import get_recipe
from distillery.models import is_model_name
from distillery.plan.honest import (RANDOM, candidate_iterations, check_validation, score_evaluations, selecting,
                                    table_selection)
from distillery.plan.paths import PATHS
from distillery.plan.settings import EXTERNAL, eval_config, eval_seeds, expert_seeds, method_protocol, resolve_method
from distillery.plan.studies import nas_settings, stability_settings
from distillery.report.tables import row_label


@dataclass(frozen=True)
class Cell:
    """One number in a table: `method` distilled on `dataset` at `ipc`, evaluated on `arch` under `protocol`; its
    distillation keeps a snapshot every `snapshot_every` iterations (the cell's, else its table's selection)."""
    table: str
    method: str
    dataset: str
    ipc: int
    arch: str
    protocol: str = "default"
    snapshot_every: int | None = field(default=None, compare=False)


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def table_cells(config: dict, table: str | None = None) -> list[Cell]:
    """Every cell of every table (or of `table`): the product of each cell spec's lists, in order, unique. A cell
    spec without `protocol` evaluates each method under its own (method_protocol)."""
    cells: list[Cell] = []
    for spec in config.get("tables", []):
        if table is not None and spec["name"] != table:
            continue
        every = table_selection(config, spec)["snapshot_every"]
        for row in spec["cells"]:
            for method, dataset, ipc in itertools.product(*(_as_list(row[k]) for k in ("method", "dataset", "ipc"))):
                protocols = _as_list(row["protocol"]) if "protocol" in row else [method_protocol(config, method)]
                archs = _as_list(row.get("arch") or resolve_method(config, method, dataset, ipc)["model"])
                for arch, protocol in itertools.product(archs, protocols):
                    if not is_model_name(arch):
                        raise ValueError(f"table '{spec['name']}': unknown architecture '{arch}'")
                    eval_config(config, protocol)
                    cell = Cell(spec["name"], method, dataset, int(ipc), arch, protocol,
                                row.get("snapshot_every", every))
                    if cell not in cells:
                        cells.append(cell)
    if table is not None and not cells:
        table_spec(config, table)  # names the tables there are
    return cells


def expert_dir(dataset: str, settings: dict) -> dict:
    """The wildcards naming the experts of resolved `settings`: dataset, norm, model, recipe."""
    get_recipe(settings["recipe"])
    norm = "zca" if settings["zca"] else "std"
    return dict(dataset=dataset, norm=norm, model=settings["model"], recipe=settings["recipe"])


def expert_files(config: dict, dataset: str, settings: dict) -> list[str]:
    """Expert trajectory files a distillation with resolved `settings` reads (coresets none, herding and kmeans
    expert 0)."""
    if settings["kind"] in ("merged", EXTERNAL) or settings["kind"] == "coreset" and settings["select"] not in \
            FEATURE_SELECTS:
        return []
    seeds = [0] if settings["kind"] == "coreset" else expert_seeds(config)
    return [PATHS["expert"].format(**expert_dir(dataset, settings), k=k) for k in seeds]


def group_files(dataset: str, settings: dict) -> list[str]:
    """The independently distilled groups a `merged` method concatenates: groups_of at group_ipc, groups
    0 … ipc/group_ipc − 1 (each its own job, with seed + group)."""
    if settings["kind"] != "merged":
        return []
    return [PATHS["group_synset"].format(method=settings["groups_of"], dataset=dataset, ipc=settings["group_ipc"],
                                         group=g) for g in range(settings["ipc"] // settings["group_ipc"])]


def table_spec(config: dict, table: str) -> dict:
    for spec in config.get("tables", []):
        if spec["name"] == table:
            return spec
    raise ValueError(f"no table named '{table}' in the config; tables: "
                     f"{', '.join(t['name'] for t in config.get('tables', []))}")


def table_sources(config: dict, table: str) -> list[dict]:
    """The files behind every number of `table`, each with its cell's keys (method, dataset, ipc, arch, protocol),
    the method's own protocol (`method_protocol`: a row under another is labelled with it) and `path`: evaluation
    JSONs per seed (accuracy), the experts' stats.json (expert_accuracy, avg_var) or the distillation's log.csv
    (seconds_per_iteration). A table that selects (selection_sources) or a score (score_sources) names each
    evaluation's `choice`, `seed` and its `iteration` or `role` too."""
    spec = table_spec(config, table)
    measure = spec.get("measure", "accuracy")
    if measure not in MEASURES:
        raise ValueError(f"table '{table}': unknown measure '{measure}'; choose one of: {', '.join(MEASURES)}")
    selection = table_selection(config, spec)
    sources = []
    for cell in table_cells(config, table):
        keys = dict(method=cell.method, dataset=cell.dataset, ipc=cell.ipc, arch=cell.arch, protocol=cell.protocol)
        where = dict(method=cell.method, dataset=cell.dataset, ipc=cell.ipc)
        own = {"method_protocol": method_protocol(config, cell.method)}
        if measure == "accuracy" and selecting(selection):
            sources += [{**source, **own} for source in selection_sources(config, cell, selection)]
            continue
        if measure == "accuracy":
            sources += [{**keys, **own, "path": PATHS["eval"].format(**keys, seed=seed)} for seed in eval_seeds(config)]
            continue
        if measure in SCORE_MEASURES:
            sources += [{**source, **own} for source in score_sources(config, cell, measure)]
            continue
        settings = resolve_method(config, cell.method, cell.dataset, cell.ipc)
        if settings["kind"] != "trajectory" and not (measure == "seconds_per_iteration"
                                                     and settings["kind"] in LOGGED_KINDS):
            raise ValueError(f"table '{table}': measure {measure} needs trajectory methods; '{cell.method}' is a "
                             f"{settings['kind']}")
        if measure in EXPERT_MEASURES:
            path = PATHS["expert_stats"].format(**expert_dir(cell.dataset, settings))
        else:
            path = PATHS["distill_log"].format(**where)
        sources.append({**keys, **own, "path": path})
    return sources


def selection_sources(config: dict, cell: Cell, selection: dict) -> list[dict]:
    """Every evaluation a selecting cell chooses among: its final set and snapshots (candidate_iterations) × its
    own protocol and the table's choices × the evaluation seeds; a snapshot's evaluation is PATHS["snapshot_eval"]."""
    if "validation" in selection["rules"]:
        check_validation(config, cell.table, cell.dataset)
    keys = dict(method=cell.method, dataset=cell.dataset, ipc=cell.ipc, arch=cell.arch, protocol=cell.protocol)
    settings = resolve_method(config, cell.method, cell.dataset, cell.ipc)
    sources = []
    for choice in dict.fromkeys([cell.protocol, *selection["choices"]]):
        for iteration in candidate_iterations(settings, cell.snapshot_every):
            for seed in eval_seeds(config):
                where = {**keys, "protocol": choice, "seed": seed}
                path = PATHS["eval"].format(**where) if iteration is None else \
                    PATHS["snapshot_eval"].format(**where, iteration=iteration)
                sources.append({**keys, "choice": choice, "iteration": iteration, "seed": seed, "path": path})
    return sources


def score_sources(config: dict, cell: Cell, measure: str) -> list[dict]:
    """The evaluations a score of `cell` reads (plan.honest.score_evaluations), per seed, each with its `role` and what
    it `evaluates`: the cell's set or the random subset of its IPC (PATHS["eval"]), or `real`, the whole training
    split in the cell's `norm` (PATHS["real_eval"])."""
    keys = dict(method=cell.method, dataset=cell.dataset, ipc=cell.ipc, arch=cell.arch, protocol=cell.protocol)
    norm = "zca" if resolve_method(config, cell.method, cell.dataset, cell.ipc)["zca"] else "std"
    sources = []
    for role, what, protocol in score_evaluations(config, cell.table, measure, cell.method, cell.protocol):
        evaluates = cell.method if what == "synset" else what   # RANDOM, or "real"
        for seed in eval_seeds(config):
            where = {**keys, "method": evaluates, "protocol": protocol, "seed": seed}
            path = PATHS["real_eval"].format(**where, norm=norm) if what == "real" else PATHS["eval"].format(**where)
            sources.append({**keys, "role": role, "evaluates": evaluates, "norm": norm, "choice": protocol,
                            "seed": seed, "path": path})
    return sources


def snapshot_distillations(config: dict) -> list[dict]:
    """The distillations that keep snapshots (a cell's snapshot_every, for a kind that iterates), each once: method,
    dataset, ipc, every, its snapshot files and a rule name; two tables asking one distillation for different
    intervals are an error."""
    found: dict[tuple, dict] = {}
    for cell in table_cells(config):
        if cell.snapshot_every is None:
            continue
        settings = resolve_method(config, cell.method, cell.dataset, cell.ipc)
        if settings["kind"] not in LOGGED_KINDS:
            continue
        key = (cell.method, cell.dataset, cell.ipc)
        if key in found and found[key]["every"] != cell.snapshot_every:
            raise ValueError(f"{cell.method} on {cell.dataset} ipc{cell.ipc}: tables ask for snapshots every "
                             f"{found[key]['every']} and every {cell.snapshot_every} iterations; give one "
                             f"snapshot_every for this distillation")
        where = dict(method=cell.method, dataset=cell.dataset, ipc=cell.ipc)
        iterations = snapshot_iterations(cell.snapshot_every, settings["iterations"])
        found[key] = {**where, "every": cell.snapshot_every,
                      "snapshots": [PATHS["snapshot"].format(**where, iteration=i) for i in iterations],
                      "rule": re.sub(r"\W", "_", f"distill_snapshots_{cell.method}_{cell.dataset}_ipc{cell.ipc}")}
    return list(found.values())


def figure_sources(config: dict, table: str, figure: str) -> dict[str, dict]:
    """Files a table figure reads besides the table: {label: {path, syn_steps}} for its trajectory cells —
    smoothness: the stats.json of each expert set (labelled by recipe); match_steps: each distillation's
    log.csv (labelled by method and N_s). Other figures: {}. Labels name the dataset and IPC when they vary."""
    if figure not in SOURCE_FIGURES:
        return {}
    cells = table_cells(config, table)
    several = len({(c.dataset, c.ipc) for c in cells}) > 1
    sources: dict[str, dict] = {}
    for cell in cells:
        settings = resolve_method(config, cell.method, cell.dataset, cell.ipc)
        if settings["kind"] != "trajectory":
            continue
        if figure == "smoothness":
            label, path = settings["recipe"], PATHS["expert_stats"].format(**expert_dir(cell.dataset, settings))
            where = cell.dataset
        else:
            label = f"{cell.method} (N_s = {settings['syn_steps']})"
            path = PATHS["distill_log"].format(method=cell.method, dataset=cell.dataset, ipc=cell.ipc)
            where = f"{cell.dataset} IPC {cell.ipc}"
        sources.setdefault(f"{where} · {label}" if several else label,
                           {"path": path, "syn_steps": settings["syn_steps"]})
    return sources


INITIAL_SHARE_WARNING = 0.10  # warn before any job where an EMA result keeps more of its initial images


def initial_share_line(dataset: str, settings: dict) -> tuple[str, float] | None:
    """('ftd cifar10 IPC 10: EMA decay 0.9995 ^ 5000 iterations keeps 8.2% of the initial images', 0.082), or
    None without an EMA."""
    if settings.get("ema_decay") is None:  # also imported sets, whose settings are no DistillConfig
        return None
    share = DistillConfig.from_dict(settings).initial_share()
    return (f"{settings['method']} {dataset} IPC {settings['ipc']}: EMA decay {settings['ema_decay']} ^ "
            f"{settings['iterations']} iterations keeps {100 * share:.1f}% of the initial images"), share


def initial_share_warnings(config: dict) -> list[str]:
    """One warning per distillation whose EMA result would keep more than INITIAL_SHARE_WARNING of its initial
    images (decay^iterations), naming the cell, the decay and the iterations."""
    warnings = []
    for dataset, settings in distillations(config):
        found = initial_share_line(dataset, settings)
        if found and found[1] > INITIAL_SHARE_WARNING:
            warnings.append(f"{found[0]} (more than {100 * INITIAL_SHARE_WARNING:.0f}%): the result is largely its "
                            f"initialisation; raise iterations or lower ema_decay unless that is the run to reproduce")
    return list(dict.fromkeys(warnings))


def protocol_text(cfg: EvalConfig) -> str:
    """An evaluation protocol in words, for a table's note: its optimizer, epochs, lr decay and labels."""
    after = "" if cfg.decay_momentum is None else f" with momentum {cfg.decay_momentum:g}"
    decay = (f"lr ×{cfg.decay:g} in a new optimizer{after} after epoch {cfg.epochs // 2 + 1}"
             if cfg.schedule == "rebuild" else f"lr ×{cfg.decay:g} from epoch {cfg.epochs // 2 + 1}, one optimizer")
    extra = (f", SAM ρ {cfg.sam_rho:g}" if cfg.sam_rho > 0 else "") + \
        (f", on the set's soft labels ({'L1' if cfg.soft_loss == 'l1' else 'soft cross-entropy'})"
         if cfg.soft_labels else "")
    return (f"SGD momentum {cfg.momentum:g}, weight decay {cfg.weight_decay:g}, batch {cfg.batch}, "
            f"epochs 0-{cfg.epochs}, {decay}{extra}")


def protocol_note(config: dict, table: str) -> str:
    """Which evaluation protocol each row of an accuracy table used, and what the protocol is."""
    rows: dict[str, list[str]] = {}
    for cell in table_cells(config, table):
        label = row_label(cell.method, cell.protocol, method_protocol(config, cell.method))
        if label not in rows.setdefault(cell.protocol, []):
            rows[cell.protocol].append(label)
    described = [f"{', '.join(labels)}: `{name}` ({protocol_text(eval_config(config, name))})"
                 for name, labels in rows.items()]
    return "Evaluation protocols: " + "; ".join(described) + "."


def table_notes(config: dict, table: str) -> list[str]:
    """Notes printed under a table: its config `note`, the evaluation protocol of each row (accuracy tables), then
    the share of initial images each EMA cell keeps."""
    spec = table_spec(config, table)
    notes = [spec["note"]] if spec.get("note") else []
    if spec.get("measure", "accuracy") == "accuracy":
        notes.append(protocol_note(config, table))
    shares = []
    for cell in table_cells(config, table):
        found = initial_share_line(cell.dataset, resolve_method(config, cell.method, cell.dataset, cell.ipc))
        if found and found[0] not in shares:
            shares.append(found[0])
    if shares:
        notes.append("EMA results (FTD, ATT: no bias correction, so decay^iterations of the result is still the "
                     "initial images): " + "; ".join(shares) + ".")
    return notes


def distillations(config: dict) -> list[tuple[str, dict]]:
    """(dataset, resolved settings) of every synthetic set the tables and NAS studies read."""
    found = [(cell.dataset, resolve_method(config, cell.method, cell.dataset, cell.ipc))
             for cell in table_cells(config)]
    for spec in config.get("tables", []):  # the random subsets DD-Ranking's scores compare with
        if spec.get("measure") in SCORE_MEASURES:
            found += [(cell.dataset, resolve_method(config, RANDOM, cell.dataset, cell.ipc))
                      for cell in table_cells(config, spec["name"])]
    for spec in config.get("nas") or []:
        found += [(spec["dataset"], settings) for source in spec["sources"]
                  if (settings := nas_settings(config, spec["name"], source)) is not None]
    return found


# DVC (dvc.yaml): one stage per entry of `dvc_experts` in config/config.yaml, keyed <dataset>-<norm>-<model>-<recipe>.
def expert_sets(config: dict) -> list[dict]:
    """The expert sets (dataset, norm, model, recipe) the config's tables, NAS and stability studies read, in order;
    a merged method's are those of its groups."""
    sets: list[dict] = []

    def add(dataset: str, settings: dict) -> None:
        if settings["kind"] == "merged":
            settings = resolve_method(config, settings["groups_of"], dataset, settings["group_ipc"])
        if expert_files(config, dataset, settings) and expert_dir(dataset, settings) not in sets:
            sets.append(expert_dir(dataset, settings))

    for dataset, settings in distillations(config):
        add(dataset, settings)
    for spec in config.get("stability") or []:
        for method in spec["methods"]:
            add(spec["dataset"], stability_settings(config, spec["name"], method))
    return sets


def expert_set_files(config: dict, dataset: str, norm: str, model: str, recipe: str) -> list[str]:
    """Every file of one expert set (experts 0 … experts.count − 1): the Snakemake targets of its DVC stage."""
    get_spec(dataset)
    get_recipe(recipe)
    if norm not in NORMS or not is_model_name(model):
        raise ValueError(f"not an expert set: norm '{norm}' ({' or '.join(NORMS)}), model '{model}'")
    where = dict(dataset=dataset, norm=norm, model=model, recipe=recipe)
    return [PATHS["expert"].format(**where, k=k) for k in expert_seeds(config)]
