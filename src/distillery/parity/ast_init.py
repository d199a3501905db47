"""AST's representative init against its code @8030869: distill.py's --pix_init avg (get_repre_images,
distill.py:112-193: k-means with 10 centres on the logits of the final snapshot of a random expert, per class, then
the IPC // 10 rows nearest each centre) against our init `representative` with the code's reading `logits`, the same
expert forced on their side.

A centre of a two-member cluster is the midpoint of its members, so both are exactly as near it: which one the code
takes is decided by float32 rounding (its logits, centres and distances are float32, np.argsort), ours by the lower
row (float64, a stable sort). The case compares the picks' distances to their centres, and the picks themselves
where they are not such a tie."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distillery.distill.matching import initial_images
from distillery.distill.run import expected_expert, representative_features
from distillery.experts import get_recipe
from distillery.experts.train import train_expert
from distillery.functional import FlatModel
from distillery.models import build_model
from distillery.parity.ast import INIT_CELL, cell_settings, distill_run, iteration_config
from distillery.parity.compare import EXACT, CaseResult, Tolerance, compare
from distillery.parity.context import Context, finish, working_dir
from distillery.parity.lineage import Authors, dataset_branch, fixed_clock, on_cpu
from distillery.parity.mtt import distill_argv
from distillery.parity.patches import Patches, ordered_shuffle
from distillery.parity.reference import quiet, script_args
from distillery.parity.workspace import DATASET, export_experts
from distillery.plan import PATHS, expert_dir
from distillery.seeds import generator

DISTANCE = Tolerance(rtol=1e-6)  # float32 centres: a tie's two distances differ by rounding (~1e-7)
CODE_CLUSTERS = 10               # distill.py:113, ipc_visual
EXPERT_CHOICE = ("random.shuffle in distill.py orders the expert files and a file's experts so that buffer[0] is the "
                 "expert ours draws (role init-expert)")
KMEANS_N_INIT = ("scikit-learn's KMeans(n_clusters, random_state=0) in distill.py:157, :161 runs 10 initialisations "
                 "as its default did when the commit was made (2023-11-15; scikit-learn 1.4, 2024-01, made the "
                 "default n_init 'auto', one k-means++ run); the fits are kept for their centres")


class _Stop(Exception):
    """Raised in their run once its initial images are set."""


def init_experts(ctx: Context) -> tuple[list[Path], Path]:
    """init_experts sgd experts (seeds 0, 1, …) as our files (their paths) and exported as one buffer file; made
    once per run."""
    def make() -> tuple[list[Path], Path]:
        s, ws = ctx.sizes, ctx.ws
        recipe = get_recipe("sgd", epochs=s.init_expert_epochs)
        trajectories = [train_expert(*ws.train, s.model, ws.num_classes, recipe, k)[0] for k in range(s.init_experts)]
        root = ctx.folder("init-ours")
        buffers = export_experts(ws, trajectories, s.model, "sgd", root, ctx.folder("init-buffers"))
        folder = expert_dir(DATASET, {"model": s.model, "zca": False, "recipe": "sgd"})
        return [root / PATHS["expert"].format(**folder, k=k) for k in range(s.init_experts)], buffers
    return ctx.once("init-experts", make)


def rows_in(images: Tensor, pool: Tensor) -> Tensor:
    """The index in `pool` of each of `images` (the first equal row): which real images a set holds."""
    flat = pool.flatten(1)
    return torch.tensor([int((flat == x.flatten()).all(1).nonzero()[0]) for x in images])


def match_to_centres(ours: Tensor, features: Tensor, centres: Tensor, ipc: int, per_centre: int) -> Tensor:
    """Our picks reordered to their slots: for each of their centres (`per_centre` slots in a row), the
    `per_centre` picks of the same class (`ipc` slots) nearest it. k-means numbers its centres arbitrarily (float32
    and float64 runs may number the same clusters differently), so our pick for a centre may sit at another slot."""
    matched = ours.clone()
    for slot in range(0, len(ours), per_centre):
        rows = ours[slot // ipc * ipc:(slot // ipc + 1) * ipc]
        gaps = (features[rows].double() - centres[slot].double()).pow(2).sum(1)
        matched[slot:slot + per_centre] = rows[torch.sort(gaps, stable=True).indices[:per_centre]]
    return matched


def compare_picks(name: str, ours: Tensor, theirs: Tensor, features: Tensor, centres: Tensor, pool: Tensor,
                  ipc: int, per_centre: int) -> tuple[CaseResult, list[int]]:
    """Two sides' picked rows of `pool`, `ipc` per class, their slot i picked as nearest `centres[i]` in `features`:
    ours, matched to their centres (match_to_centres), must be each of our picks once; the squared distances of
    both sides' picks to the centre (float64) must agree to DISTANCE, and the rows themselves, and their images bit
    for bit, wherever the two rows are not equally near (a tie). Returns the result and the tied slots."""
    def distance(rows: Tensor) -> Tensor:
        return (features[rows].double() - centres.double()).pow(2).sum(1)

    matched = match_to_centres(ours, features, centres, ipc, per_centre)
    near_ours, near_theirs = distance(matched), distance(theirs)
    gap = (near_ours - near_theirs).abs() <= DISTANCE.rtol * torch.maximum(near_ours, near_theirs)
    tied = (matched != theirs) & gap
    keep = ~tied
    by_class = [ours.view(-1, ipc).sort(1).values, matched.view(-1, ipc).sort(1).values]
    quantities = [compare("ours_once_per_centre", *by_class, EXACT),
                  compare("distance_to_centre", near_ours, near_theirs, DISTANCE),
                  compare("rows_untied", matched[keep], theirs[keep], EXACT),
                  compare("images_untied", pool[matched[keep]], pool[theirs[keep]], EXACT)]
    return CaseResult(name, all(q.passed for q in quantities), DISTANCE, quantities), tied.nonzero().view(-1).tolist()


def representative_case(ctx: Context) -> CaseResult:
    """distill.py's --pix_init avg against our init representative with INIT_CELL's reading; their run stops once
    its images are set."""
    started = time.perf_counter()
    s, ws = ctx.sizes, ctx.ws
    cell = cell_settings(INIT_CELL)
    cfg = iteration_config(s, ipc=s.init_ipc, init="representative", representative=cell["representative"],
                           init_clusters=cell["init_clusters"], recipe="sgd")
    paths, buffers = init_experts(ctx)
    student = FlatModel(build_model(s.model, ws.train[0].shape[1], ws.num_classes, ws.train[0].shape[-1]))
    features = representative_features(cfg, ws.meta, ws.train[0], paths, student,
                                       expected_expert(cfg, ws.meta, student.num_params))
    images, _ = initial_images(cfg, *ws.train, ws.num_classes, features)
    k = int(torch.randint(len(paths), (1,), generator=generator(cfg.seed, "init-expert")))  # the expert ours read
    seen: dict[str, Tensor] = {}
    fits: list[Any] = []

    class StopAtImages(torch.optim.SGD):
        def __init__(self, params: Any, *args: Any, **kwargs: Any):
            params = list(params)
            if params[0].dim() == 4:  # optimizer_img: the images are set (distill.py:220, :234)
                seen["images"] = params[0].detach().clone()
                raise _Stop
            super().__init__(params, *args, **kwargs)

    import sklearn.cluster  # imported here as by their code: only this case needs scikit-learn
    real_kmeans = sklearn.cluster.KMeans

    def kmeans(*args: Any, n_init: Any = 10, **kwargs: Any) -> Any:
        fits.append(real_kmeans(*args, n_init=n_init, **kwargs))
        return fits[-1]

    with Patches() as patches, distill_run(ctx, patches, []) as m:
        argv = distill_argv(ws, cfg, buffers, 1)
        argv[argv.index("--pix_init") + 1] = "avg"
        args = script_args(ctx.reference / "distill.py", argv, patches)
        a = Authors(m, patches)
        on_cpu(a, ["distill", "utils"])
        dataset_branch(a, ["distill"], ws.reference_name, ws.train, ws.test, ws.meta)
        fixed_clock(a, cfg.seed)
        orders = iter([[0], [k] + [i for i in range(len(paths)) if i != k]])  # the one file, then its experts
        a.override("distill", "random", "shuffle", ordered_shuffle(orders, "the expert files and experts"),
                   "expert-choice", EXPERT_CHOICE)
        a.override("distill", "torch", "optim.SGD", StopAtImages, "stop-after-init",
                   "distill.py's image optimizer keeps the initial images and stops the run")
        patches.set(sklearn.cluster, "KMeans", kmeans, "kmeans-n-init", KMEANS_N_INIT)
        a.install()
        try:
            with working_dir(ctx.fresh("init")), quiet():
                m.distill.main(args)
        except _Stop:
            pass
    # per class a fit with 10 centres (the picks'), then one with IPC centres (unused): distill.py:157, :161
    per_centre = cfg.ipc // CODE_CLUSTERS
    centres = torch.cat([torch.from_numpy(fit.cluster_centers_) for fit in fits[0::2]]).repeat_interleave(per_centre, 0)
    ours, theirs = rows_in(images, ws.train[0]), rows_in(seen["images"], ws.train[0])
    result, tied = compare_picks("representative_init", ours, theirs, features, centres, ws.train[0], cfg.ipc,
                                 per_centre)
    matched = match_to_centres(ours, features, centres, cfg.ipc, per_centre)
    ties = "; ".join(f"slot {i} (class {i // cfg.ipc}): ours row {int(matched[i])}, theirs {int(theirs[i])}"
                     for i in tied) or "none"
    result.notes = [f"ours: init representative, reading {cfg.representative} (preset {INIT_CELL[0]} at "
                    f"{INIT_CELL[1]} IPC {INIT_CELL[2]}, distill.sh:14), IPC {cfg.ipc}, {cfg.init_clusters} "
                    f"centres, k-means random_state = seed {cfg.seed}; theirs: --pix_init avg (random_state 0)",
                    f"{len(paths)} sgd experts of {s.init_expert_epochs} epochs in one buffer file; ours read expert "
                    f"{k} (role init-expert), their random.shuffle of the files and of the file's experts put expert "
                    f"{k} first (buffer[0][-1])",
                    f"{int((matched == theirs).sum())} of {len(ours)} picks the same row for the same centre "
                    f"({int((matched != ours).sum())} of ours at another slot: k-means numbered the centres "
                    f"otherwise); ties (two rows equally near a centre, their float32 rounding picks one, ours the "
                    f"lower row): {ties}",
                    "distances to their centres (float32 k-means on float32 logits) in float64 from our logits"]
    return finish(result, patches, ctx, started)
