"""What the honest columns and DD-Ranking's scores ask of a config (docs/evaluation.md): each dataset's held-out
validation split, a table's selection (rules, snapshots, protocol choices) and the evaluations a score reads, each
checked once with a message naming the key. targets.py turns them into files."""
from __future__ import annotations

from distillery.choices import LOGGED_KINDS, SCORE_MEASURES, SELECTION_RULES
from distillery.distill.snapshots import snapshot_iterations
from distillery.plan.settings import eval_config, protocol_variant
from distillery.report.scores import ROLES, SCORE_ROLES

RANDOM = "random"  # the random real subset of the same IPC that the scores compare with (config/methods.yaml)
DEFAULT_SELECTION = {"rules": ["final"], "snapshot_every": None, "choices": []}


def validation_spec(config: dict, dataset: str) -> dict | None:
    """`validation.<dataset>` as prepare() takes it ({per_class, seed}), or None: no held-out split."""
    spec = (config.get("validation") or {}).get(dataset)
    if not spec:
        return None
    return {"per_class": int(spec["per_class"]), "seed": int(spec.get("seed", 0))}


def split_datasets(config: dict) -> list[str]:
    """The datasets the config holds a validation split out of."""
    return [dataset for dataset in config.get("validation") or {} if validation_spec(config, dataset)]


def table_selection(config: dict, spec: dict) -> dict:
    """A table's selection: its `selection` over the top-level `selection` (for accuracy tables) over
    DEFAULT_SELECTION, key by key; checked (the rules, the choices' protocols, accuracy tables only)."""
    measure = spec.get("measure", "accuracy")
    overall = (config.get("selection") or {}) if measure == "accuracy" else {}
    chosen = {**DEFAULT_SELECTION, **overall, **(spec.get("selection") or {})}
    where = f"table '{spec['name']}'"
    rules = list(chosen["rules"])
    if not rules or len(set(rules)) != len(rules) or any(rule not in SELECTION_RULES for rule in rules):
        raise ValueError(f"{where}: selection.rules {rules} must name each of {', '.join(SELECTION_RULES)} at most "
                         f"once (at least one)")
    for choice in chosen["choices"]:
        eval_config(config, choice)
    if chosen["choices"] and rules == ["final"]:
        raise ValueError(f"{where}: selection.choices {chosen['choices']} are chosen among only by the validation "
                         f"and test rules; add them to selection.rules or drop the choices")
    if measure != "accuracy" and rules != ["final"]:
        raise ValueError(f"{where}: selection rules apply to measure accuracy, not {measure}; keep "
                         f"selection.rules [final] for this table")
    return {"rules": rules, "snapshot_every": chosen["snapshot_every"], "choices": list(chosen["choices"])}


def selecting(selection: dict) -> bool:
    """Whether a table's numbers are chosen among candidates (rules other than final alone)."""
    return selection["rules"] != DEFAULT_SELECTION["rules"]


def check_validation(config: dict, table: str, dataset: str) -> None:
    """A table with the validation rule needs its datasets' held-out splits."""
    if validation_spec(config, dataset) is None:
        raise ValueError(f"table '{table}': selection rule 'validation' on {dataset} needs a held-out validation "
                         f"split; set validation.{dataset}.per_class (e.g. 10% of a class) in the config")


def candidate_iterations(settings: dict, every: int | None) -> list[int | None]:
    """The sets a selection rule chooses among for one distillation: the final set (None), then its snapshots (for
    a kind that iterates and a snapshot_every)."""
    if every is None or settings["kind"] not in LOGGED_KINDS:
        return [None]
    return [None, *snapshot_iterations(every, settings["iterations"])]


def score_evaluations(config: dict, table: str, measure: str, method: str, protocol: str) -> list[tuple]:
    """(role, what is trained: synset | random | real, protocol) of each evaluation a score of a cell reads
    (report.scores.SCORE_ROLES); a random subset cannot be trained on soft labels: refused, naming the cell."""
    if measure not in SCORE_MEASURES:
        raise ValueError(f"'{measure}' is not one of DD-Ranking's scores ({', '.join(SCORE_MEASURES)})")
    found = []
    for role in SCORE_ROLES[measure]:
        what, variant = ROLES[role]
        chosen = protocol_variant(config, protocol, variant)
        if what == RANDOM and eval_config(config, chosen).soft_labels:
            raise ValueError(f"table '{table}': {measure} compares '{method}' under protocol '{protocol}' with the "
                             f"random real subset under the same protocol, but '{protocol}' trains on soft labels, "
                             f"which a random subset does not have; use a hard-label protocol for this table")
        found.append((role, what, chosen))
    return found
