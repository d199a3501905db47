"""DD-Ranking's scores (Li et al., "DD-Ranking: Rethinking the Evaluation of Dataset Distillation", arXiv 2505.13300;
code NUS-HPC-AI-Lab/DD-Ranking @b8b0966, ddranking/metrics/hard_label.py:380-383, soft_label.py:561-564,
aug_robust.py:577-580), computed from evaluations this workflow runs under its own protocol: fresh networks,
accuracy after the final epoch, no selection on the test set (DD-Ranking's code keeps the best test accuracy over
epochs and searches the lr on the test set: docs/evaluation.md).

With A(x, labels/augmentation) the test accuracy of a network trained on x, as a fraction:
  hard-label recovery      HLR = A(real, hard) − A(syn, hard)
  improvement over random  IOR = A(syn, any) − A(random, any)      (any: the cell's own protocol)
  label-robust score       LRS = (e^α − e^−1) / (e − e^−1),  α = w·IOR − (1 − w)·HLR
  augmentation-robust      ARS = (e^β − e^−1) / (e − e^−1),  β = γ·(A(syn, aug) − A(random, aug))
                                                                 + (1 − γ)·(A(syn, no aug) − A(random, no aug))
As fractions α, β ∈ [−1, 1], so LRS and ARS ∈ [0, 1] as DD-Ranking's README states (we show them in %, HLR and IOR
in percentage points). `real` is the whole (non-held-out) training split, `random` the random real subset at the
cell's IPC. Scores are computed per evaluation seed (the same seed of every role) and then averaged."""
from __future__ import annotations

import math
from typing import Iterable

# Each evaluation a score reads: role -> (what is trained on: the cell's set | the random subset | the real training
# split, the variant of the cell's protocol it runs: None = itself, or a plan.settings.PROTOCOL_VARIANTS name).
ROLES = {"syn_any": ("synset", None), "syn_hard": ("synset", "hard"), "rdm_any": ("random", None),
         "real_hard": ("real", "hard"), "syn_naug": ("synset", "noaug"), "rdm_naug": ("random", "noaug")}
SCORE_ROLES = {"lrs": ("syn_any", "syn_hard", "rdm_any", "real_hard"), "hlr": ("real_hard", "syn_hard"),
               "ior": ("syn_any", "rdm_any"), "ars": ("syn_any", "rdm_any", "syn_naug", "rdm_naug")}
WEIGHT = 0.5  # DD-Ranking's default w and γ (hard_label.py:325 lrs_lambda, aug_robust.py:515 ars_lambda)
ROW_KEYS = ("method", "dataset", "ipc", "arch", "protocol")
SCORE_NOTES = {
    "hlr": "ours: DD-Ranking's hard-label recovery HLR = Acc(real training split, hard labels) − Acc(synthetic set, "
           "hard labels), in percentage points (lower is better)",
    "ior": "ours: DD-Ranking's improvement over random IOR = Acc(synthetic set) − Acc(random real subset of the same "
           "IPC), both under the cell's protocol, in percentage points",
    "lrs": "ours: DD-Ranking's label-robust score LRS = (e^α − e^−1)/(e − e^−1) with α = w·IOR − (1−w)·HLR (w = "
           "{weight}; IOR = Acc(synthetic, the cell's protocol) − Acc(random real subset, same protocol); HLR = "
           "Acc(real training split, hard labels) − Acc(synthetic, hard labels); accuracies as fractions), in %",
    "ars": "ours: DD-Ranking's augmentation-robust score ARS = (e^β − e^−1)/(e − e^−1) with β = γ·(Acc(synthetic) − "
           "Acc(random)) + (1−γ)·(the same two trained without augmentation) (γ = {weight}; accuracies as "
           "fractions; random: a random real subset of the same IPC), in %",
}
SCORE_PROTOCOL = ("Every accuracy is our protocol's: fresh networks, test accuracy read once after the final epoch, "
                  "mean ± std (population) of the per-seed scores over n evaluation seeds, each seed's score from the "
                  "same seed of every evaluation. DD-Ranking's own numbers keep the best test accuracy over epochs "
                  "and search the evaluation lr on the test set, so they are selected on the test set; ours are not. "
                  "Source: Li et al. 2025 (arXiv 2505.13300) and NUS-HPC-AI-Lab/DD-Ranking; docs/evaluation.md.")


def normalised(x: float) -> float:
    """DD-Ranking's map of [−1, 1] onto [0, 1]: (e^x − e^−1) / (e − e^−1)."""
    return (math.exp(x) - math.exp(-1)) / (math.exp(1) - math.exp(-1))


def score(measure: str, acc: dict[str, float], weight: float = WEIGHT) -> float:
    """One seed's `measure` from its accuracies by role (fractions): HLR and IOR in percentage points, LRS and ARS in
    percent."""
    hlr = acc["real_hard"] - acc["syn_hard"] if measure in ("hlr", "lrs") else None
    ior = acc["syn_any"] - acc["rdm_any"] if measure in ("ior", "lrs", "ars") else None
    if measure == "hlr":
        return 100 * hlr
    if measure == "ior":
        return 100 * ior
    if measure == "lrs":
        return 100 * normalised(weight * ior - (1 - weight) * hlr)
    if measure == "ars":
        return 100 * normalised(weight * ior + (1 - weight) * (acc["syn_naug"] - acc["rdm_naug"]))
    raise ValueError(f"unknown score '{measure}'; choose one of: {', '.join(SCORE_ROLES)}")


def score_records(records: Iterable[dict], measure: str, weight: float = WEIGHT) -> list[dict]:
    """Per row (method, dataset, ipc, arch, protocol) and seed, the score of that seed's evaluations: each record
    has its row's keys, `role`, `seed` and `value` (an accuracy in %, as tables.load_records reads it). A missing
    role is an error naming it."""
    accuracies: dict[tuple, dict[str, float]] = {}
    for record in records:
        key = (*(record[k] for k in ROW_KEYS), record["seed"])
        accuracies.setdefault(key, {})[record["role"]] = record["value"] / 100
    out = []
    for key, acc in accuracies.items():
        missing = [role for role in SCORE_ROLES[measure] if role not in acc]
        if missing:
            raise ValueError(f"{measure} of {dict(zip(ROW_KEYS, key))}: no {', '.join(missing)} evaluation")
        out.append({**dict(zip(ROW_KEYS, key[:-1])), "seed": key[-1], "value": score(measure, acc, weight)})
    return out
