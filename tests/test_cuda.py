"""The GPU path (`pytest -m cuda`, run by benchmarks/gpu_check.sh): the same seed gives the same experts, synthetic
sets and evaluations on the CPU and on the device, for MTT, FTD, ATT, AST and APM; and no loop waits for the GPU
except through runtime.host_read.

Tolerances: in float64 every compared tensor (trajectories, images, lr, soft labels, evaluated weights) agrees to
rtol 1e-6 / atol 1e-8 and test accuracies are equal: the same arithmetic in another summation order. In float32
with TF32 off: rtol 1e-3 / atol 1e-4, and test accuracies within 2 of the 120 test images.

DISTILLERY_TEST_DEVICE is the device under test (default cuda: skipped without a GPU); the check's CPU rehearsal
(`gpu_check.sh --cpu`) sets it to cpu, which compares the CPU with itself and runs every line but the sync mode.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import traceback
import warnings
from pathlib import Path

import pytest
import torch

from distillery.distill import DistillConfig, distill_trajectory
from distillery.distill.apm import distill_adversarial
from distillery.distill.coreset import embed
from distillery.evaluate import EvalConfig, train_network
from distillery.metrics import accuracy
from distillery.experts import get_recipe, train_expert, train_experts_batched
from distillery.functional import FlatModel
from distillery.models import build_model
from distillery.plan import load_config, resolve_method
from distillery.runtime import set_tf32
from distillery.seeds import generator, seeded

ROOT = Path(__file__).resolve().parents[1]
DEVICE = os.environ.get("DISTILLERY_TEST_DEVICE", "cuda")
MODEL, CLASSES = "ConvNetD2W16", 10
METHODS = ("mtt", "ftd", "att", "ast", "apm")
SYNC_MESSAGE = "called a synchronizing CUDA operation"  # torch.cuda.set_sync_debug_mode("warn")'s warning


def on_device(test):
    """A `cuda` test: run by `pytest -m cuda`, skipped where the device under test is a missing GPU."""
    missing = DEVICE.startswith("cuda") and not torch.cuda.is_available()
    skip = pytest.mark.skipif(missing, reason="needs a CUDA device (or DISTILLERY_TEST_DEVICE=cpu)")
    return pytest.mark.cuda(skip(test))


@pytest.fixture(params=[torch.float64, torch.float32], ids=["float64", "float32"])
def tolerance(request):
    """Compute in the parameter's dtype, TF32 off on CUDA; yields the dtype's tolerance."""
    old, flags = torch.get_default_dtype(), (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.set_default_dtype(request.param)
    set_tf32(DEVICE, "none")
    if request.param == torch.float64:
        yield {"rtol": 1e-6, "atol": 1e-8, "images": 0}
    else:
        yield {"rtol": 1e-3, "atol": 1e-4, "images": 2}
    torch.set_default_dtype(old)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def blobs(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable digits-shaped data (default dtype): a fixed random 1x8x8 pattern per class plus noise."""
    means = torch.randn(CLASSES, 1, 8, 8, generator=generator(0, "test-cuda-means"))
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    noise = torch.randn(len(labels), 1, 8, 8, generator=generator(seed, "test-cuda-noise"))
    return (means[labels] + 0.7 * noise).to(torch.get_default_dtype()), labels


def settings(method: str) -> DistillConfig:
    """The method's preset on digits, shrunk to three iterations of a small model."""
    chosen = resolve_method(load_config(ROOT), method, "digits", 2 if method == "apm" else 1)
    chosen.update(model=MODEL, iterations=3)
    if method == "apm":
        chosen.update(student_epochs=2, checkpoints=2, mid_gap=1, batch_syn=10, update_syn=5, student_batch=8)
    else:
        chosen.update(syn_steps=4, expert_epochs=2, max_start_epoch=2, batch_syn=5)
    return DistillConfig.from_dict(chosen)


def experts(recipe: str, device: str = "cpu", count: int = 2) -> list[torch.Tensor]:
    """`count` experts of `recipe` (3 epochs, batch 32) trained on `device` (APM's teachers: first and last weights)."""
    images, labels = (t.to(device) for t in blobs(12, 1))
    chosen = get_recipe(recipe, epochs=3, batch=32)
    return [train_expert(images, labels, MODEL, CLASSES, chosen, seed)[0] for seed in range(count)]


def distill(cfg: DistillConfig, trajectories: list[torch.Tensor], device: str, stream=None):
    """One distillation of `cfg` on `device` from `trajectories` (cycled, or the iterator `stream` over them)."""
    images, labels = (t.to(device) for t in blobs(12, 1))
    stream = stream or itertools.cycle(trajectories)
    if cfg.kind == "adversarial":
        return distill_adversarial(cfg, images, labels, CLASSES, stream)
    with seeded(0, "test-cuda-student"):
        student = FlatModel(build_model(MODEL, 1, CLASSES, 8).to(device))
    features = None
    if cfg.init == "representative":  # as distill.run.expert_features: expert 0's final weights
        torch.nn.utils.vector_to_parameters(trajectories[0][-1].to(device), student.module.parameters())
        features = embed(student.module, images)
    return distill_trajectory(cfg, images, labels, CLASSES, student, stream, features=features)


def evaluate(result, cfg: DistillConfig, device: str) -> tuple[torch.Tensor, float]:
    """A fresh network trained 4 epochs on the result (soft labels for APM): its weights and test accuracy."""
    protocol = EvalConfig(epochs=4, batch=8, soft_labels=cfg.kind == "adversarial")
    labels = result.soft_labels if protocol.soft_labels else result.labels
    net = train_network(result.images.to(device), labels.to(device), result.lr, MODEL, CLASSES, 0, protocol)
    return FlatModel(net).flatten().cpu(), accuracy(net, *(t.to(device) for t in blobs(12, 2)))


def assert_close(device_value: torch.Tensor, cpu_value: torch.Tensor, tolerance: dict, what: str) -> None:
    torch.testing.assert_close(device_value.cpu(), cpu_value, rtol=tolerance["rtol"], atol=tolerance["atol"],
                               msg=lambda message: f"{what}, {DEVICE} against the CPU: {message}")


@on_device
@pytest.mark.parametrize("recipe", ["sgd", "gsam", "smooth", "teacher"])
def test_experts_train_the_same_on_the_cpu_and_the_device(recipe, tolerance):
    for cpu, device in zip(experts(recipe), experts(recipe, DEVICE)):
        assert_close(device, cpu, tolerance, f"expert trajectory ({recipe})")
        assert (cpu[-1] - cpu[0]).norm() > 1e-2  # it trained


@on_device
def test_batched_experts_on_the_device_equal_serial_ones_on_the_cpu(tolerance):
    images, labels = (t.to(DEVICE) for t in blobs(12, 1))
    batched = train_experts_batched(images, labels, MODEL, CLASSES, get_recipe("sgd", epochs=3, batch=32), [0, 1])
    for cpu, device in zip(experts("sgd"), batched):
        assert_close(device, cpu, tolerance, "batched expert trajectory")


@on_device
@pytest.mark.parametrize("method", METHODS)
def test_a_method_distils_and_evaluates_the_same_on_the_cpu_and_the_device(method, tolerance):
    cfg = settings(method)
    trajectories = experts(cfg.recipe)
    cpu, device = distill(cfg, trajectories, "cpu"), distill(cfg, trajectories, DEVICE)
    moved = torch.cdist(cpu.images.flatten(1), blobs(12, 1)[0].flatten(1)).min(1).values.max()
    assert moved > 1e-4  # not a vacuous comparison: the images left their real initialisation
    assert_close(device.images, cpu.images, tolerance, f"{method} images")
    assert device.lr == pytest.approx(cpu.lr, rel=tolerance["rtol"])
    if cfg.kind == "trajectory":
        assert [row["match_step"] for row in device.history] == [row["match_step"] for row in cpu.history]
        assert_close(torch.tensor([row["loss"] for row in device.history]),
                     torch.tensor([row["loss"] for row in cpu.history]), tolerance, f"{method} losses")
    else:
        assert_close(device.soft_labels, cpu.soft_labels, tolerance, f"{method} soft labels")
    cpu_weights, cpu_accuracy = evaluate(cpu, cfg, "cpu")
    device_weights, device_accuracy = evaluate(device, cfg, DEVICE)
    assert_close(device_weights, cpu_weights, tolerance, f"{method}: the evaluated network's weights")
    assert abs(device_accuracy - cpu_accuracy) * len(blobs(12, 2)[1]) <= tolerance["images"] + 1e-9


class SyncWatch:
    """Keeps the Python stack of every host wait that CUDA's sync debug mode reports while it is on; `expert(items)`
    cycles a loop's experts (or teachers) and turns the mode on at the first one, after the loop's setup."""

    def __init__(self, device: str):
        self.device, self.stacks, self.on = device, [], False

    def expert(self, items):
        for item in itertools.cycle(items):
            self.start()
            yield item

    def start(self) -> None:
        if not self.on and self.device.startswith("cuda"):
            torch.cuda.set_sync_debug_mode("warn")
        self.on = True

    @contextlib.contextmanager
    def watching(self):
        def hook(message, category, filename, lineno, file=None, line=None):
            if SYNC_MESSAGE in str(message):  # the stack down to the line that waited, without the warnings module
                stack = [f for f in traceback.extract_stack()[:-1] if Path(f.filename).name != "warnings.py"]
                self.stacks.append(traceback.StackSummary.from_list(stack))

        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = hook  # restored by catch_warnings
            try:
                yield self
            finally:
                if self.device.startswith("cuda"):
                    torch.cuda.set_sync_debug_mode("default")


def stray_waits(stacks: list[traceback.StackSummary]) -> list[str]:
    """The waits whose innermost library frame is not runtime.host_read, as 'file:line in function: code'."""
    library = str(ROOT / "src" / "distillery")
    stray = []
    for stack in stacks:
        frames = [f for f in stack if f.filename.startswith(library)] or list(stack[-1:])
        last = frames[-1]
        if not (last.name == "host_read" and last.filename.endswith("runtime.py")):
            stray.append(f"{Path(last.filename).name}:{last.lineno} in {last.name}: {last.line}")
    return stray


@on_device
@pytest.mark.parametrize("method,changes", [(m, {}) for m in METHODS] + [("mtt", {"memory": "recompute"})],
                         ids=[*METHODS, "mtt-recompute"])
def test_distillation_loops_wait_for_the_gpu_only_in_host_read(method, changes):
    cfg = DistillConfig.from_dict({**settings(method).to_dict(), **changes})
    trajectories = experts(cfg.recipe)
    watch = SyncWatch(DEVICE)
    with watch.watching():
        result = distill(cfg, trajectories, DEVICE, stream=watch.expert(trajectories))
    assert watch.on and len(result.history) == cfg.iterations
    assert stray_waits(watch.stacks) == []


@on_device
def test_evaluation_never_waits_for_the_gpu():
    images, labels = (t.to(DEVICE) for t in blobs(2, 1))
    watch = SyncWatch(DEVICE)
    with watch.watching():
        watch.start()
        train_network(images, labels, 0.01, MODEL, CLASSES, 0, EvalConfig(epochs=3, batch=8))
    assert watch.stacks == []


def test_the_sync_watch_keeps_each_waits_stack_and_names_stray_ones():
    def library_frame(name: str, file: str) -> traceback.FrameSummary:
        return traceback.FrameSummary(str(ROOT / "src/distillery" / file), 7, name, line="x.tolist()")

    watch = SyncWatch("cpu")
    with watch.watching():
        warnings.warn(SYNC_MESSAGE + " (Triggered internally)")
        warnings.warn("another warning")
    assert len(watch.stacks) == 1 and watch.stacks[0][-1].name == "test_the_sync_watch_keeps_each_waits_stack_and_" \
                                                                 "names_stray_ones"
    allowed = traceback.StackSummary.from_list([library_frame("update", "distill/matching.py"),
                                                library_frame("host_read", "runtime.py")])
    stray = traceback.StackSummary.from_list([library_frame("host_read", "runtime.py"),
                                              library_frame("loss_and_gradient", "distill/apm.py")])
    assert stray_waits([allowed, stray]) == ["apm.py:7 in loss_and_gradient: x.tolist()"]
    assert stray_waits(watch.stacks)[0].startswith("test_cuda.py:")  # a wait outside the library is stray too
