"""GPU and host memory of one job, known before it runs, in named parts; and `memory: auto`.

A job's GPU peak is the larger of (a) loading its data and (b) its compute: what stays on the device (the
data splits it loads, parameters, expert rows, synthetic images with their gradient, momentum and EMA) plus
the bytes autograd saves for backward at the peak (budget/calibrate.py: counted, not guessed) plus a working
set (the activations of one step in flight, the recompute mode's replay buffers). What must fit the GPU is

    required = peak · (1 + MARGIN_FRACTION) + MARGIN_GB

the margin standing for what the model does not count: the CUDA context and library workspaces (the fixed
part) and the caching allocator's rounding and fragmentation (the fraction). GB here is 2^30 bytes. Loading a
split to the device holds 12 bytes per pixel for a moment (uint8 → float → the normalised copy while the float
one lives; data/prepare.py load_split), then 4: ImageNet-1K at 64 px would peak at 176 GB while loading. So a split
whose load would take more than a quarter of the declared GPU (data.host.split_on_device, the rule the jobs follow)
stays on the host as uint8, and the device holds its labels and the batch being normalised (12 bytes per pixel).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from distillery.budget import calibrate
from distillery.choices import AUTO, EXACT_MEMORIES, FEATURE_SELECTS
from distillery.data.host import LOAD_BYTES_PER_PIXEL, split_on_device
from distillery.data.registry import DatasetSpec, get_spec
from distillery.distill.apm import checkpoint_epochs
from distillery.distill.config import DistillConfig
from distillery.evaluate import EvalConfig
from distillery.experts.recipes import Recipe, get_recipe

GB = 2**30
MARGIN_FRACTION = 0.10
MARGIN_GB = 2.0
HOST_BASE_GB = {"gpu": 3.0, "cpu": 1.0}  # a Python process with torch (and the CUDA libraries)
FLOAT = 4                                # every job computes in float32
ROWS_AT_ONCE = 1024                      # evaluate.accuracy's and expert_stats' batch: the most rows of a split
                                         # kept on the host that a job moves at once, besides its own batches


@dataclass
class Estimate:
    """Bytes of one job: `parts` held at its compute peak on the device, `load` at the peak of loading its data,
    `host` in host memory (besides the device's, which moves to the host when the job runs on the CPU);
    `host_splits` the data splits it keeps on the host (data.host.HostSplit)."""

    parts: dict[str, float]
    load: float = 0.0
    host: dict[str, float] = field(default_factory=dict)
    host_splits: tuple[str, ...] = ()

    @property
    def peak(self) -> float:
        return max(self.load, sum(self.parts.values()))

    @property
    def required(self) -> float:
        """Bytes the GPU must have: the peak with the margin."""
        return self.peak * (1 + MARGIN_FRACTION) + MARGIN_GB * GB

    def fits(self, gpu_gb: float) -> bool:
        return self.required <= gpu_gb * GB

    def host_bytes(self, on_gpu: bool) -> float:
        """The job's host memory: the process, what it reads, and the device estimate when it runs on the CPU."""
        device = 0.0 if on_gpu else self.peak
        return HOST_BASE_GB["gpu" if on_gpu else "cpu"] * GB + sum(self.host.values()) + device

    def describe(self) -> str:
        """'41.2 GB with the margin (saved for backward 30.12, train split 0.61, … GB)'."""
        parts = ", ".join(f"{name} {value / GB:.2f}" for name, value in self.parts.items() if value >= 0.005 * GB)
        load = f"; loading the data {self.load / GB:.2f}" if self.load > sum(self.parts.values()) else ""
        kept = f"; {' and '.join(self.host_splits)} split on the host" if self.host_splits else ""
        return f"{self.required / GB:.1f} GB with the margin ({parts or 'every part below 0.01'} GB{load}{kept})"


def prepared_spec(meta: dict) -> DatasetSpec:
    """The registry's facts of a prepared dataset (its meta.json), with its actual split sizes."""
    return replace(get_spec(meta["name"]), train_size=meta["n_train"], test_size=meta["n_test"])


def _pixels(spec: DatasetSpec) -> int:
    return spec.channels * spec.size * spec.size


def data_parts(spec: DatasetSpec, splits: tuple[str, ...], zca: bool, gpu_gb: float | None = None,
               batch: int = 0) -> tuple[dict[str, float], float, dict, tuple[str, ...]]:
    """(device parts, device load peak, host parts, splits kept on the host) of loading `splits` ('train', 'test'),
    in order, for a GPU of `gpu_gb` (None: all whole on the device). A split the jobs keep on the host
    (split_on_device) puts its labels on the device, and the rows being normalised: the job's `batch`, or the
    ROWS_AT_ONCE of its accuracy passes, whichever is more."""
    pixels, parts, host, load, kept = _pixels(spec), {}, {}, 0.0, ()
    resident = 0.0
    whitening = pixels * pixels * FLOAT if zca else 0.0  # the ZCA matrix, moved to the device while applied
    for split in splits:
        n = spec.train_size if split == "train" else spec.test_size
        host[f"{split} file"] = n * (pixels + 8)  # the uint8 file read by torch.load
        if split_on_device(n, pixels, gpu_gb):
            load = max(load, resident + n * pixels * LOAD_BYTES_PER_PIXEL + whitening)
            parts[f"{split} split"] = n * (pixels * FLOAT + 8)  # images and int64 labels
            resident += parts[f"{split} split"]
            continue
        kept += (split,)
        rows = min(max(batch, ROWS_AT_ONCE), n)
        parts[f"{split} labels"] = n * 8
        parts[f"{split} batch"] = rows * pixels * LOAD_BYTES_PER_PIXEL  # while normalised
        if zca:
            parts[f"{split} ZCA matrix"] = whitening  # the HostSplit's own device copy, for the whole job
        host[f"{split} batch"] = 2 * rows * pixels  # the gathered rows and their pinned copy
        resident += parts[f"{split} labels"] + whitening
    return parts, load, host, kept


def _params(model: str, spec: DatasetSpec) -> int:
    return calibrate.num_params(model, spec.channels, spec.size, spec.num_classes)


def _train_slope(model: str, spec: DatasetSpec, penalty: str | None = None) -> float:
    return calibrate.training(model, spec.channels, spec.size, spec.num_classes, penalty)[0].slope


def _extra_losses(cfg: DistillConfig) -> int:
    """Matching terms besides the final one: AST's intermediate points, one per expert epoch i = 1..M−1."""
    return cfg.expert_epochs - 1 if cfg.intermediate != "none" else 0


def _kept_points(cfg: DistillConfig) -> int:
    """Student steps the unroll returns besides θ_N: every step for ATT's adaptive match, else AST's points."""
    return cfg.syn_steps - 1 if cfg.match == "adaptive" else _extra_losses(cfg)


def unroll_saved(cfg: DistillConfig, spec: DatasetSpec, images: bool = True) -> float:
    """Peak bytes saved for backward by one matching iteration of `cfg` (its memory mode and chunk): the
    calibrated unroll, the DSA of its steps, and the difference each extra matching term saves. With `images`
    False, without the synthetic images themselves (which the recompute and constant modes' node saves)."""
    n = cfg.ipc * spec.num_classes
    batch = min(cfg.batch_syn or n, n)
    saved, _ = calibrate.unroll(cfg.model, spec.channels, spec.size, spec.num_classes, cfg.memory)
    per_image = calibrate.dsa_bytes(spec.channels, spec.size, cfg.dsa)
    augmented = per_image * (cfg.syn_steps * batch if cfg.memory == "full" else batch)
    extra = _extra_losses(cfg) * _params(cfg.model, spec) * FLOAT
    total = saved(cfg.syn_steps, batch, min(cfg.chunk or batch, batch), n) + augmented + extra
    return total if images else total - n * saved.x[4]


def trajectory_estimate(cfg: DistillConfig, spec: DatasetSpec, gpu_gb: float | None = None) -> Estimate:
    """A trajectory-matching job (distill, distill_group, stability_trial) under its memory mode and chunk."""
    n = cfg.ipc * spec.num_classes
    batch = min(cfg.batch_syn or n, n)
    pieces = min(cfg.chunk or batch, batch)
    image, vector = _pixels(spec) * FLOAT, _params(cfg.model, spec) * FLOAT
    data, load, host, kept = data_parts(spec, ("train",), cfg.zca, gpu_gb, n)  # init: n rows at once
    # the student skeleton, start and target rows, a perturbed start, the intermediate points' targets
    rows = 3 + (cfg.perturb != "none") + _extra_losses(cfg)
    working = pieces * _train_slope(cfg.model, spec)  # a step's activations and their gradients in flight
    if cfg.memory != "full":  # the graph-free forward's θ list while stacked; the replay's input, gradient and
        # adjoint vectors; the kept points (outputs of the replaying node) and their gradients
        working += cfg.syn_steps * vector + 2 * batch * image + (3 + 2 * _kept_points(cfg)) * vector
    parts = {"saved for backward": unroll_saved(cfg, spec, images=False), **data,
             "synthetic images": n * image * (3 + (cfg.ema_decay is not None)),  # value, gradient, momentum, EMA
             "parameters and expert rows": rows * vector, "working set": working}
    if cfg.learn_labels:  # DATM's logits: value, gradient, momentum
        parts["learned labels"] = 3 * n * spec.num_classes * FLOAT
    host["expert files"] = 2 * (get_recipe(cfg.recipe).epochs + 1) * vector  # the file in use, the one ahead
    return Estimate(parts, load, host, kept)


def adversarial_estimate(cfg: DistillConfig, spec: DatasetSpec, gpu_gb: float | None = None) -> Estimate:
    """An APM job: teacher + K frozen students + one in training; images ascend through chunks of update_syn."""
    n = cfg.ipc * spec.num_classes
    chosen = min(cfg.batch_syn or n, n)
    chunk = min(cfg.update_syn or chosen, chosen)
    image, vector = _pixels(spec) * FLOAT, _params(cfg.model, spec) * FLOAT
    data, load, host, kept = data_parts(spec, ("train",), cfg.zca, gpu_gb, n)  # init: n rows at once
    graph, _ = calibrate.image_graph(cfg.model, spec.channels, spec.size, spec.num_classes)
    student_batch = min(cfg.student_batch, chosen)
    training = student_batch * (_train_slope(cfg.model, spec) + 2 * image)  # activations, augmented copies
    parts = {**data, "synthetic images": n * image * 3 + chosen * (2 * image + spec.num_classes * FLOAT),
             # teacher, the kept students (K, one more where K does not divide E), the student, its grad, momentum
             "networks": (len(checkpoint_epochs(cfg.student_epochs, cfg.checkpoints)) + 4) * vector,
             "saved for backward": max(graph(chunk, chosen), training)}
    return Estimate(parts, load, host, kept)


def coreset_estimate(cfg: DistillConfig, spec: DatasetSpec, gpu_gb: float | None = None) -> Estimate:
    """A coreset (or merge) job: the training split, plus expert features (herding, kmeans) or a forgetting run."""
    n = cfg.ipc * spec.num_classes
    data, load, host, kept = data_parts(spec, ("train",), cfg.zca, gpu_gb, n)  # the chosen n rows at once
    parts = dict(data)
    if cfg.select in FEATURE_SELECTS:
        features = calibrate.num_features(cfg.model, spec.channels, spec.size, spec.num_classes)
        parts["features"] = spec.train_size * features * FLOAT + 512 * _train_slope(cfg.model, spec)
    elif cfg.select == "forgetting":
        recipe = get_recipe(cfg.recipe)
        parts["training"] = recipe.batch * _train_slope(cfg.model, spec) + 4 * _params(cfg.model, spec) * FLOAT
    return Estimate(parts, load, host, kept)


def distill_estimate(cfg: DistillConfig, spec: DatasetSpec, gpu_gb: float | None = None) -> Estimate:
    """Any distill job, by its kind."""
    if cfg.kind == "trajectory":
        return trajectory_estimate(cfg, spec, gpu_gb)
    if cfg.kind == "adversarial":
        return adversarial_estimate(cfg, spec, gpu_gb)
    return coreset_estimate(cfg, spec, gpu_gb)


def _optimizer_vectors(recipe: Recipe) -> int:
    """Parameter-sized tensors of a recipe's optimiser besides the parameters: gradient, momentum or Adam's two
    moments, and GSAM's ascent copies."""
    state = {"adam": 2, "gsam": 3}.get(recipe.optimizer, 0) + (recipe.momentum > 0)
    return 1 + state


def expert_estimate(recipe: Recipe, model: str, spec: DatasetSpec, zca: bool, gpu_gb: float | None = None) -> Estimate:
    """A train_expert job: both splits (on the device, or on the host where too large for a GPU of `gpu_gb`), one
    minibatch's graph (with AST's gradient penalty: a second-order one); the trajectory grows on the host."""
    data, load, host, kept = data_parts(spec, ("train", "test"), zca, gpu_gb, recipe.batch)
    vector = _params(model, spec) * FLOAT
    parts = {**data, "parameters and optimiser": (1 + _optimizer_vectors(recipe)) * vector,
             "saved for backward": recipe.batch * (_train_slope(model, spec, calibrate.penalty_pass(recipe))
                                                   + 2 * _pixels(spec) * FLOAT)}
    host["trajectory"] = (recipe.epochs + 1) * vector
    return Estimate(parts, load, host, kept)


def expert_group_estimate(recipe: Recipe, model: str, spec: DatasetSpec, zca: bool, experts: int) -> Estimate:
    """`experts` experts trained together in one job (experts.batched, experts.per_job): the data once; each
    expert's parameters, optimiser state, saved activations (its vmapped minibatch) and host trajectory."""
    one = expert_estimate(recipe, model, spec, zca)
    each = ("parameters and optimiser", "saved for backward", "trajectory")

    def scaled(table: dict[str, float]) -> dict[str, float]:
        return {name: value * experts if name in each else value for name, value in table.items()}

    return Estimate(scaled(one.parts), one.load, scaled(one.host))


def evaluate_estimate(arch: str, images: int, spec: DatasetSpec, cfg: EvalConfig, zca: bool,
                      real: bool = False, gpu_gb: float | None = None) -> Estimate:
    """An evaluate (or nas_train) job: a fresh `arch` trained on `images` (the training split when `real`)."""
    data, load, host, kept = data_parts(spec, ("train", "test") if real else ("test",), zca, gpu_gb, cfg.batch)
    vector = _params(arch, spec) * FLOAT
    batch = min(cfg.batch, images)
    parts = {**data, "synthetic set": 0 if real else images * (_pixels(spec) + spec.num_classes) * FLOAT,
             "parameters and optimiser": (3 + 2 * (cfg.sam_rho > 0)) * vector,
             "saved for backward": batch * (_train_slope(arch, spec) + 2 * _pixels(spec) * FLOAT)}
    return Estimate(parts, load, host, kept)


def expert_stats_estimate(model: str, spec: DatasetSpec, zca: bool, epochs: int,
                          gpu_gb: float | None = None) -> Estimate:
    """An expert_stats job: every snapshot of each expert tested on the test split, 1024 images at a time."""
    data, load, host, kept = data_parts(spec, ("test",), zca, gpu_gb)
    parts = {**data, "network": _params(model, spec) * FLOAT, "activations": 1024 * _train_slope(model, spec)}
    host["expert file"] = (epochs + 1) * _params(model, spec) * FLOAT
    return Estimate(parts, load, host, kept)


def gpu_memory_gb(config: dict) -> float:
    """The memory of the GPU a job gets, in GB (2^30 bytes): `runtime.gpu_memory_gb` (config/config.yaml: 80; a
    profile's or --config's value arrives as text)."""
    value = (config.get("runtime") or {}).get("gpu_memory_gb")
    try:
        gb = float(value)
    except (TypeError, ValueError):
        gb = 0.0
    if not gb > 0 or isinstance(value, bool):
        raise ValueError(f"runtime.gpu_memory_gb={value!r}: set the memory of the GPU a job gets, in GB (a number "
                         f"> 0; config/config.yaml sets 80)")
    return gb


def plan_memory(cfg: DistillConfig, requested: str, spec: DatasetSpec, gpu_gb: float, where: str) -> dict:
    """The memory mode and chunk a trajectory job runs under the declared GPU memory `gpu_gb`.

    `requested` auto: `full` when it fits, else `recompute` (exact), else `recompute` with the largest chunk that
    fits; an explicit mode is kept when it fits. Otherwise a ValueError naming `where`, the estimate and the
    largest batch_syn that would fit (with the explicit mode, or recompute with chunk 1), before any job runs.
    """
    def fits(memory: str, chunk: int | None, batch: int | None = None) -> bool:
        tried = replace(cfg, memory=memory, chunk=chunk, batch_syn=batch or cfg.batch_syn)
        return trajectory_estimate(tried, spec, gpu_gb).fits(gpu_gb)

    batch = min(cfg.batch_syn or cfg.ipc * spec.num_classes, cfg.ipc * spec.num_classes)
    if requested != AUTO:
        if fits(requested, cfg.chunk):
            return {"memory": requested, "chunk": cfg.chunk}
        modes = [(requested, cfg.chunk)]
    else:
        for memory in EXACT_MEMORIES:
            if fits(memory, cfg.chunk):
                return {"memory": memory, "chunk": cfg.chunk}
        largest = _largest(lambda k: fits("recompute", k), min(cfg.chunk or batch, batch) - 1)
        if largest:
            return {"memory": "recompute", "chunk": largest}
        modes = [("recompute", 1)]
    memory, chunk = modes[0]
    estimate = trajectory_estimate(replace(cfg, memory=memory, chunk=chunk), spec, gpu_gb)
    widest = _largest(lambda b: fits(memory, chunk, b), batch - 1)
    chunk_text = f", chunk {chunk}" if chunk else ""
    advice = (f"the largest batch_syn that fits with memory {memory}{chunk_text} is {widest} (now {batch})" if widest
              else "even batch_syn 1 does not fit: the data, the images and the margin alone need more")
    raise ValueError(f"{where}: memory {memory}{chunk_text} needs an estimated {estimate.describe()}, more than the "
                     f"{gpu_gb:g} GB GPU of runtime.gpu_memory_gb; {advice}. Lower batch_syn (or ipc), give a GPU "
                     f"with more memory (runtime.gpu_memory_gb) or, for an explicit memory, use memory: auto")


def _largest(ok, upper: int) -> int:
    """The largest k in 1..upper with ok(k), for ok monotone (true up to some k); 0 when none."""
    lo, hi = 0, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
