"""The settings of one distillation: method kind, components and hyperparameters, validated on creation."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields, replace

from distillery.augment import DEFAULT_STRATEGY
from distillery.choices import (APM_SUBSETS, DISAGREEMENTS, DISTANCES, INITS, INTERMEDIATES, KINDS, MATCHES, MEMORIES,
                                PERTURBS, REPRESENTATIVES, SELECTS, SPACINGS)
from distillery.typecheck import SettingError, check_types

# Components only trajectory matching uses, with their "off" value.
TRAJECTORY_COMPONENTS = (("match", "fixed"), ("intermediate", "none"), ("balance", False), ("perturb", "none"),
                         ("ema_decay", None), ("memory", "full"), ("chunk", None), ("inner_momentum", 0.0),
                         ("learn_labels", False), ("threshold", None), ("min_start_epoch", 0),
                         ("current_max_start_epoch", None))

# What a coreset reads: which images `select` picks (herding, kmeans and forgetting through the experts' model, domain
# and recipe), with its seed; no other setting changes its set.
CORESET_SETTINGS = ("method", "kind", "ipc", "model", "zca", "recipe", "select", "init_clusters", "seed")


def uses(kind: str, name: str) -> bool:
    """Whether a distillation of `kind` reads the setting `name`: a coreset only CORESET_SETTINGS, trajectory matching
    every setting but `select`, the other kinds neither `select` nor the trajectory components. A setting forced on
    every distillation (distill.overrides) is applied where it is read, and a job's params hold only what it reads,
    so a coreset cell neither fails on nor reruns for a distillation setting."""
    if kind == "coreset":
        return name in CORESET_SETTINGS
    return name != "select" and (kind == "trajectory" or name not in dict(TRAJECTORY_COMPONENTS))


@dataclass(frozen=True)
class DistillConfig:
    method: str
    kind: str
    ipc: int
    model: str = "ConvNet"
    zca: bool = False
    recipe: str = "sgd"
    select: str = "random"  # coreset selection: random | herding (expert features) | forgetting (Toneva) | kmeans
    # trajectory matching (MTT, reference notes §1.3-1.4)
    iterations: int = 5000
    syn_steps: int = 20
    expert_epochs: int = 3
    max_start_epoch: int = 25
    lr_img: float = 1000.0
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01
    batch_syn: int | None = None
    init: str = "real"               # real | noise | representative (AST: k-means on expert 0's features) |
                                     # correct (DATM: real images an expert classifies correctly)
    init_clusters: int = 10          # k-means clusters per class for representative init and kmeans select
    representative: str = "features" # features: the paper's reading (K = min(IPC, init_clusters) clusters of expert
                                     # 0's features, IPC/K members nearest each centre) | logits: AST's code
                                     # (init_clusters clusters of a random expert's logits, the IPC // init_clusters
                                     # rows nearest each centre; distill.py:112-193)
    momentum: float = 0.5            # of the image and lr optimisers
    inner_momentum: float = 0.0      # μ of the student's SGD: b_0 = g_0, b_n = μ·b_{n−1} + g_n, θ_{n+1} = θ_n − α·b_n
                                     # (0: MTT's plain SGD; AST's distill.py: 0.9)
    ema_decay: float | None = None   # FTD: the result is an EMA of the images (None: the images themselves)
    perturb: str = "none"            # noise on the expert start θ*_t (gaussian: FTD's "MTT + Robust Learning";
                                     # filter: AST's filter-normalised perturbation, Eq. 23; weight: AST's code,
                                     # distill.py:weightPerturb)
    perturb_scale: float = 0.0       # σ of the gaussian start noise; ρ of filter; α of weight
    # AST's student side (Shen et al. 2023, Sec. IV-C2 and IV-D1)
    balance: bool = False            # scale every inner-step CE by ν(t) (Eq. 20)
    balance_theta: float = 8.0       # ϑ in ν(t)
    balance_base: float = 5.0        # the base of ν's log: 5 as AST's distill.py; the paper writes log (e)
    intermediate: str = "none"       # intermediate matching: none | equal (β_i = 1) | varied (β_i = i/M)
    intermediate_spacing: str = "multiple"  # ξ_i = i·⌊N/M⌋ (multiple, AST's code) | ⌊i·N/M⌋ (floor, the paper)
    # ATT (Liu et al. 2024): match the target at the student step nearest to it instead of step N
    match: str = "fixed"             # fixed (θ̂_N) | adaptive (θ̂_k, k = argmin_k distance(θ̂_k, θ*_{t+M}))
    match_distance: str = "l2"       # the selection distance: l1 (ATT's code, its preset) | l2 (squared, paper)
    # DATM (Guo et al. 2024): the start-epoch window, learned soft labels and the loss threshold
    min_start_epoch: int = 0         # start epochs are drawn from [min_start_epoch, upper)
    current_max_start_epoch: int | None = None  # upper grows from this to max_start_epoch over expansion_end_epoch
                                     # iterations (DATM's Sequential_Generation); None: upper = max_start_epoch
    expansion_end_epoch: int = 3000  # iterations over which the window's upper bound grows (DATM's cfg.py default)
    learn_labels: bool = False       # learn logits y as labels: inner loss −Σ softmax(y)·log_softmax(z), own SGD
    lr_y: float = 2.0                # lr of the labels' SGD (DATM cfg.py default)
    momentum_y: float = 0.9          # momentum of the labels' SGD (DATM's Momentum_y)
    threshold: float | None = None   # an iteration whose matching loss exceeds this updates nothing (None: never)
    # memory of the unroll (distill/memory.py): full (create_graph, grows with N) | recompute (exact, keeps N
    # parameter vectors, no graphs) | constant (TESLA: memory independent of N, first-order: drops Hessian terms)
    memory: str = "full"
    chunk: int | None = None         # images per forward/backward piece of an inner step (None: the whole batch)
    # APM (Chen et al. 2024, kind adversarial; defaults: Table A9's common row). Other kinds ignore these.
    student_epochs: int = 250        # E: each fresh student trains epochs 0 … E (APM's range(Epoch+1))
    checkpoints: int = 5             # K: student checkpoints in the image loss, every E // K epochs and the last
    mid_gap: int = 2                 # students (and teacher, subset) refreshed every mid_gap+1 iterations
    lr_net: float = 0.02             # the students' lr, and the evaluation lr of the result
    alpha: float = 0.1               # weight of the teacher's CE on the images (Eq. 4)
    disagreement: str = "l1"         # student–teacher logit distance: l1 | l2 | cosine
    update_syn: int | None = None    # images per chunk of the image gradient (None: all selected at once)
    apm_subset: str = "iteration"    # batch_syn images drawn every iteration (APM's code) | every refresh (paper)
    student_batch: int = 256         # the students' minibatch
    lr_img_decay: float = 1.0        # lr_img is multiplied by this for the second half of the iterations
    # merged (APM Fig. 4): the set is ipc / group_ipc independently distilled groups of `groups_of`, concatenated
    groups_of: str | None = None
    group_ipc: int | None = None
    dsa: str = DEFAULT_STRATEGY
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> None:
            raise SettingError(f"method '{self.method}'", field, getattr(self, field), why)

        check_types(self, f"method '{self.method}'")
        if self.kind not in KINDS:
            bad("kind", f"is not one of {', '.join(KINDS)}")
        if self.init not in INITS:
            bad("init", f"is not one of {', '.join(INITS)}")
        if self.select not in SELECTS:
            bad("select", f"is not one of {', '.join(SELECTS)}")
        if self.select != "random" and self.kind != "coreset":
            bad("select", "applies only to kind coreset")
        if self.ipc < 1:
            bad("ipc", "must be at least 1")
        for name in ("iterations", "syn_steps", "expert_epochs", "max_start_epoch"):
            if getattr(self, name) < 1:
                bad(name, "must be at least 1")
        for name in ("lr_img", "lr_lr", "lr_teacher", "lr_y"):
            if not getattr(self, name) > 0:
                bad(name, "must be a positive learning rate")
        self._check_window()
        if not 0 <= self.momentum_y < 1:
            bad("momentum_y", "must be in [0, 1)")
        if self.threshold is not None and not self.threshold > 0:
            bad("threshold", "must be positive (or null for no loss threshold)")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            bad("ema_decay", "must be in [0, 1) (or null for no EMA)")
        if self.perturb not in PERTURBS:
            bad("perturb", f"is not one of {', '.join(PERTURBS)}")
        if self.perturb != "none" and not self.perturb_scale > 0:
            bad("perturb_scale", f"must be positive with perturb={self.perturb}")
        if self.init_clusters < 1:
            bad("init_clusters", "must be at least 1")
        if self.representative not in REPRESENTATIVES:
            bad("representative", f"is not one of {', '.join(REPRESENTATIVES)}")
        if self.init == "representative" and self.representative == "logits" and self.ipc % self.init_clusters:
            bad("representative", f"takes the IPC // init_clusters images nearest each of the init_clusters k-means "
                                  f"centres (AST's code), so IPC {self.ipc} must be a multiple of init_clusters "
                                  f"{self.init_clusters} (the code picks none at IPC 1); use 'features' (the "
                                  f"paper's reading)")
        if not isinstance(self.balance, bool):
            bad("balance", "must be true or false")
        if not self.balance_theta > 1:
            bad("balance_theta", "must be greater than 1 (ν takes its log)")
        if not self.balance_base > 1:
            bad("balance_base", "must be greater than 1 (5 as AST's code, 2.718281828459045 for the paper's log)")
        if self.intermediate not in INTERMEDIATES:
            bad("intermediate", f"is not one of {', '.join(INTERMEDIATES)}")
        if self.intermediate_spacing not in SPACINGS:
            bad("intermediate_spacing", f"is not one of {', '.join(SPACINGS)}")
        if not 0 <= self.inner_momentum < 1:
            bad("inner_momentum", "must be in [0, 1) (0: plain SGD in the inner loop)")
        if self.match not in MATCHES:
            bad("match", f"is not one of {', '.join(MATCHES)}")
        if self.match_distance not in DISTANCES:
            bad("match_distance", f"is not one of {', '.join(DISTANCES)}")
        if self.intermediate != "none" and self.match == "fixed" and self.syn_steps < self.expert_epochs:
            bad("intermediate", f"needs syn_steps ({self.syn_steps}) >= expert_epochs ({self.expert_epochs}), "
                                f"else a matching point falls on student step 0")
        if self.memory not in MEMORIES:
            bad("memory", f"is not one of {', '.join(MEMORIES)}")
        if self.chunk is not None and (isinstance(self.chunk, bool) or not isinstance(self.chunk, int)
                                       or self.chunk < 1):
            bad("chunk", "must be an integer of at least 1 (or null for the whole synthetic minibatch)")
        self._check_combination()
        if self.batch_syn is not None and self.batch_syn < 1:
            bad("batch_syn", "must be at least 1 (or null for all synthetic images)")
        for name in ("student_epochs", "checkpoints", "student_batch"):
            if getattr(self, name) < 1:
                bad(name, "must be at least 1")
        if self.checkpoints > self.student_epochs:
            bad("checkpoints", f"must not exceed student_epochs ({self.student_epochs})")
        if self.mid_gap < 0:
            bad("mid_gap", "must be at least 0")
        if not self.lr_net > 0:
            bad("lr_net", "must be a positive learning rate")
        if not self.alpha >= 0:
            bad("alpha", "must be at least 0")
        if self.disagreement not in DISAGREEMENTS:
            bad("disagreement", f"is not one of {', '.join(DISAGREEMENTS)}")
        if self.apm_subset not in APM_SUBSETS:
            bad("apm_subset", f"is not one of {', '.join(APM_SUBSETS)}")
        if self.kind == "merged":
            if not self.groups_of or self.group_ipc is None or self.group_ipc < 1:
                bad("groups_of", "and group_ipc (>= 1) are needed by a merged method")
            if self.ipc % self.group_ipc:
                bad("ipc", f"must be a multiple of group_ipc {self.group_ipc} (whole groups are merged)")
        if self.update_syn is not None and self.update_syn < 1:
            bad("update_syn", "must be at least 1 (or null for all selected images at once)")
        if not self.lr_img_decay > 0:
            bad("lr_img_decay", "must be positive")

    def _check_combination(self) -> None:
        """Components combine freely within trajectory matching (any experts, init, perturbation, loss weighting,
        match target, EMA); the other kinds do not unroll a student against expert trajectories, so a trajectory
        component set on them would be silently ignored: rejected, naming both settings."""
        if self.kind == "trajectory":
            return
        used = [f"{name}={getattr(self, name)!r}" for name, off in TRAJECTORY_COMPONENTS
                if getattr(self, name) != off]
        if self.init in ("representative", "correct") and self.kind in ("adversarial", "coreset"):
            used.append(f"init={self.init!r}")
        if used:
            hint = {"coreset": "select picks the images; use select kmeans for representative picks",
                    "adversarial": "APM starts from real or noise images and matches teacher predictions",
                    "merged": "set them on the groups' method (groups_of)"}[self.kind]
            raise ValueError(f"method '{self.method}': kind={self.kind!r} does not combine with {', '.join(used)} "
                             f"(trajectory-matching components; {hint}): drop them or use kind 'trajectory'")

    def _check_window(self) -> None:
        """The start-epoch window [min_start_epoch, upper) must hold an epoch at every iteration."""
        def bad(field: str, why: str) -> None:
            raise SettingError(f"method '{self.method}'", field, getattr(self, field), why)

        if not 0 <= self.min_start_epoch < self.max_start_epoch:
            bad("min_start_epoch", f"must be in [0, max_start_epoch {self.max_start_epoch}): start epochs are drawn "
                                   f"from [min_start_epoch, max_start_epoch)")
        first = self.current_max_start_epoch
        if first is not None and not self.min_start_epoch < first <= self.max_start_epoch:
            bad("current_max_start_epoch", f"must be in (min_start_epoch {self.min_start_epoch}, max_start_epoch "
                                           f"{self.max_start_epoch}] (or null for a fixed window)")
        if self.expansion_end_epoch < 1:
            bad("expansion_end_epoch", "must be at least 1 iteration")

    @classmethod
    def from_dict(cls, settings: dict) -> "DistillConfig":
        """Build from a resolved method dict; an unknown key is an error (a typo would otherwise be ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"method '{settings.get('method')}': unknown setting(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(sorted(known))}")
        return cls(**settings)

    def initial_share(self, updates: int | None = None) -> float | None:
        """The weight of the initial images in the EMA result after `updates` EMA steps (default: one per
        iteration): decay^updates, since e ← d·e + (1−d)·x starts at the initial images with no bias correction
        (FTD's and ATT's ModelEmaV2). None without an EMA (only trajectory matching keeps one)."""
        if self.ema_decay is None or self.kind != "trajectory":
            return None
        return self.ema_decay ** (self.iterations if updates is None else updates)

    def to_dict(self) -> dict:
        return asdict(self)

    def job_params(self) -> dict:
        """The settings its kind reads (`uses`) that differ from the defaults, plus method, kind and ipc: what a
        Snakemake job records as its params, so a release that adds a setting (with a default) does not rerun
        finished jobs, nor a change of a setting the job does not read."""
        defaults = {f.name: f.default for f in fields(self)}
        kept = ("method", "kind", "ipc")
        return {k: v for k, v in asdict(self).items()
                if k in kept or v != defaults.get(k) and uses(self.kind, k)}


def fit_batch_syn(cfg: DistillConfig, num_classes: int) -> DistillConfig:
    """`cfg` with batch_syn at most the synthetic set's size (IPC × classes): a larger minibatch is the whole set, the
    same images (the references' code selects them all too), so it is lowered to that size, logged and recorded as
    used. (APM's code would still scale its image gradient by size / batch_syn there; ours does not either way.)"""
    size = cfg.ipc * num_classes
    if cfg.kind not in ("trajectory", "adversarial") or cfg.batch_syn is None or cfg.batch_syn <= size:
        return cfg
    logging.getLogger("distillery").warning(
        "method '%s': batch_syn=%d is larger than the synthetic set (IPC %d x %d classes = %d images): using %d",
        cfg.method, cfg.batch_syn, cfg.ipc, num_classes, size, size)
    return replace(cfg, batch_syn=size)
