"""APM's parity against mchen725/DD_APM @53c8847, its code loaded at run time from the checkout: what every APM case
shares (the checkout, the sizes, our settings, the teacher, the patches distill.py needs). The cases: one iteration
and a few iterations of distill.py (apm_iteration.py); teacher training (model_train/train.py) and the soft-label
evaluation (evaluate_synset_mc) (apm_train.py).

Their random calls are answered with ours: the initial images through torch.randn (--init noise), the subset through
torch.randperm, the teacher through the file load_teacher reads, each student's initialisation through get_network,
its batches through DataLoader and its DSA through utils.torch.rand/randint."""
from __future__ import annotations

import argparse
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

from distillery.distill import DistillConfig
from distillery.experts import get_recipe
from distillery.experts.train import train_expert
from distillery.functional import FlatModel
from distillery.models import build_model
from distillery.parity.compare import Tolerance
from distillery.parity.context import Context, SharedSizes, default_dtype
from distillery.parity.lineage import Authors, dataset_branch, fixed_clock, inject_networks, on_cpu
from distillery.parity.patches import Patches
from distillery.parity.reference import Reference, authors_modules
from distillery.seeds import role_seed, seeded

REFERENCE = Reference("apm", "mchen725/DD_APM", "53c8847",
                      files=("distill.py", "utils.py", "networks.py", "model_train/train.py",
                             "model_train/utils_train.py", "model_train/networks_train.py"),
                      search=(".", "model_train"))
DISTILL = ("utils", "distill")
FLOAT64 = Tolerance(rtol=1e-6)
FLOAT32 = Tolerance(rtol=1e-4)
EXACT_ITERATION = ("updated",)
OFF = ""  # --dsa_strategy "": DiffAugment returns its input (see distill_argv)

WHAT = {
    "einops": "a stand-in einops module (networks.py imports it at the top for its ViT; no case builds a ViT, and "
              "einops is not a dependency of ours)",
    "argv": "their main()'s own parser (distill.py:137-170) reads the harness's arguments",
    "teacher-channels": "get_network's channel is the dataset's: load_teacher builds the teacher with 3 input "
                        "channels whatever the data (distill.py:20, CIFAR's), so its state_dict cannot load on "
                        "one-channel data",
    "teacher-file": "the teacher load_teacher reads (./model_train/models/<dataset>/<model>/, distill.py:22, in the "
                    "run's working folder) is ours: our teacher's final weights as their network's state_dict",
    "subset": "distill.py's torch.randperm (the batch_syn images of the iteration, :301) draws from our generator",
    "initial-images": "distill.py's torch.randn returns our initial images (with --init noise), as a leaf that "
                      "requires grad as theirs does (:231)",
    "recording-optimizer": "distill.py's torch.optim.SGD keeps each step's gradients and updated values (the image "
                           "optimizer's step is the one whose parameter is the images)",
    "recording-backward": "Tensor.backward keeps the value of every tensor it back-propagates: after the students are "
                          "trained, these are the loss terms of the image update (:343, :361), whose sum is the loss",
    "students": "their train() (the student and its checkpoints, :36-76) returns our students, as their networks "
                "holding our checkpoints' weights; the teacher's logits it was given are kept",
    "recording-students": "their train() runs as it is; the teacher's logits it was given and the checkpoints it "
                          "returns are kept",
    "float64": "distill.py's TensorDataset keeps the images' dtype (theirs casts to float32, utils.py:210), so "
               "get_lab's teacher logits are float64 too",
}


@dataclass(frozen=True)
class Sizes(SharedSizes):
    """Small by default: seconds per iteration case, a minute for each teacher-training case."""

    teacher_epochs: int = 2          # our teacher that the iteration and evaluation cases use (recipe teacher)
    # distillation iterations
    ipc: int = 2
    batch_syn: int = 16              # 16 of the 20 images: the subset draw is compared
    update_syn: int = 6              # chunks 6, 6, 4: the chunk weights |c|/batch_syn are compared
    student_epochs: int = 5          # E: epochs 0 … 5, lr/10 from epoch 3, checkpoints after 2, 4, 5 (K + 1 of them)
    checkpoints: int = 2
    student_batch: int = 8
    lr_img: float = 1.0
    lr_net: float = 0.02
    alpha: float = 0.1
    mid_gap: int = 2
    iterations: int = 4              # the multi-iteration case: refreshes at 1 and 4, lr_img ×0.3 after 2
    # teacher training (model_train/train.py, our recipe teacher)
    teacher_train_per_class: int = 10
    teacher_train_epochs: int = 100  # the recipe's: their MultiStepLR([50]) is fixed, ours decays at half the epochs
    teacher_test_per_class: int = 2  # their per-epoch test pass (it only picks which epoch they save)
    teacher_dsa_epochs: int = 5      # with DSA: rounding (1e-7) grows ~1e5-fold by epoch 50 on 100 images, on
    #                                  either side alone (measured: a 1e-7 input change, 1.8e-2 at epoch 50)
    # evaluation (evaluate_synset_mc, our protocol soft)
    eval_ipc: int = 5
    eval_epochs: int = 6
    eval_batch: int = 16


def distill_config(s: Sizes, dsa: str = "none", **changes: Any) -> DistillConfig:
    """Our apm settings for one iteration at these sizes."""
    settings = dict(method="apm", kind="adversarial", ipc=s.ipc, model=s.model, recipe="teacher", iterations=1,
                    batch_syn=s.batch_syn, update_syn=s.update_syn, student_epochs=s.student_epochs,
                    checkpoints=s.checkpoints, student_batch=s.student_batch, mid_gap=s.mid_gap, lr_img=s.lr_img,
                    lr_net=s.lr_net, alpha=s.alpha, momentum=0.5, lr_img_decay=0.3, init="real", dsa=dsa,
                    seed=s.seed)
    return DistillConfig(**{**settings, **changes})


def einops_stubs() -> dict[str, types.ModuleType]:
    """einops, einops.layers and einops.layers.torch as stand-ins whose names fail if used."""
    def unused(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the einops stand-in was used: a case built their ViT")
    top, layers, torch_layers = (types.ModuleType(n) for n in ("einops", "einops.layers", "einops.layers.torch"))
    top.rearrange = top.repeat = torch_layers.Rearrange = unused
    top.layers, layers.torch = layers, torch_layers
    return {"einops": top, "einops.layers": layers, "einops.layers.torch": torch_layers}


def apm_modules(ctx: Context, patches: Patches, names: Sequence[str]) -> Any:
    """authors_modules for APM's runs: their modules with the einops stand-in."""
    patches.note("einops", WHAT["einops"])
    return authors_modules(REFERENCE, ctx.reference, names, stubs=einops_stubs())


def parse_with(patches: Patches, argv: Sequence[str]) -> None:
    """argparse in their main() parses `argv` (distill.py builds its parser inside main)."""
    real = argparse.ArgumentParser.parse_args

    def parse_args(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> argparse.Namespace:
        return real(self, list(argv), namespace)
    patches.set(argparse.ArgumentParser, "parse_args", parse_args, "argv", WHAT["argv"])


def teacher(ctx: Context) -> Tensor:
    """Our teacher ([2, P]: initial and final weights), trained by recipe teacher for teacher_epochs epochs; once."""
    s, ws = ctx.sizes, ctx.ws

    def make() -> Tensor:
        recipe = get_recipe("teacher", epochs=s.teacher_epochs)
        with default_dtype(torch.float32):  # whichever case asks first
            return train_expert(*ws.train, s.model, ws.num_classes, recipe, s.seed, role="teacher")[0]
    return ctx.once("teacher", make)


def write_teacher(m: Any, ctx: Context, weights: Tensor, folder: Path) -> None:
    """`weights` as the state_dict of their network, where load_teacher looks for it from `folder`."""
    s, ws = ctx.sizes, ctx.ws
    with torch.random.fork_rng(devices=[]):  # their get_network reseeds the global RNG
        net = m.utils.get_network(s.model, ws.train[0].shape[1], ws.num_classes, tuple(ws.train[0].shape[2:]),
                                  dist=False)
    torch.nn.utils.vector_to_parameters(weights.float().clone(), net.parameters())
    path = folder / "model_train" / "models" / ws.reference_name / s.model
    path.mkdir(parents=True)
    torch.save(net.state_dict(), path / "best_model_0.pt")


def networks(a: Authors, channels: int, weights: Iterator[Tensor]) -> None:
    """distill.py's get_network builds with the dataset's channels, then holds the next of `weights`."""
    real = a.module("distill").get_network

    def get_network(model: str, channel: int, *args: Any, **kwargs: Any) -> torch.nn.Module:
        return real(model, channels, *args, **kwargs)
    a.replace("distill", "get_network", get_network, "teacher-channels", WHAT["teacher-channels"])
    inject_networks(a, ["distill"], weights)


def common_patches(a: Authors, ctx: Context, weights: Sequence[Tensor]) -> None:
    """What every run of distill.py needs: no GPU, our data, a fixed clock, our networks."""
    ws = ctx.ws
    on_cpu(a, ["distill", "utils"])
    dataset_branch(a, ["distill"], ws.reference_name, ws.train, ws.test, ws.meta)
    fixed_clock(a, ctx.sizes.seed)
    networks(a, ws.train[0].shape[1], iter(weights))
    a.patches.note("teacher-file", WHAT["teacher-file"])


def distill_argv(ctx: Context, cfg: DistillConfig, folder: Path, dsa: str) -> list[str]:
    """distill.py's command line for `cfg` (noise init: their torch.randn answers ours). --Iteration is our
    iterations: their loop runs range(Iteration+1), one update more than ours (the ledger's "Image lr decay"; the
    cases compare the first cfg.iterations), and their lr_img milestone Iteration//2 is then where ours decays.

    Augmentation off is --dsa_strategy "" (args.dsa stays True and DiffAugment returns its input): with "none"
    their args.dsa is False (:175) and epoch() calls augment(img, args.dc_aug_param) (utils.py:401), an attribute
    distill.py never sets, so the student's first batch raises AttributeError."""
    ws = ctx.ws
    return ["--dataset", ws.reference_name, "--model", cfg.model, "--ipc", str(cfg.ipc),
            "--Iteration", str(cfg.iterations),
            "--lr_img", repr(cfg.lr_img), "--lr_net", repr(cfg.lr_net), "--img_mom", repr(cfg.momentum),
            "--batch_train", str(cfg.student_batch), "--batch_syn", str(cfg.batch_syn),
            "--update_syn", str(cfg.update_syn), "--init", "noise", "--dsa_strategy", dsa,
            "--data_path", str(folder / "data"), "--save_path", str(folder / "result"), "--soft_lab",
            "--loss", "l1", "--s_epoch", str(cfg.student_epochs), "--s_num", str(cfg.checkpoints),
            "--mid_gap", str(cfg.mid_gap), "--ce", repr(cfg.alpha)]


def flat(net: torch.nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def student_init(cfg: DistillConfig, shape: tuple[int, int, int], refresh: int = 0) -> Tensor:
    """The initialisation train_student draws for refresh `refresh` (distill_adversarial's seed for it)."""
    with seeded(role_seed(cfg.seed, f"apm-refresh-{refresh}"), "apm-student"):
        return FlatModel(build_model(cfg.model, *shape)).flatten()


class KeepDtype(torch.utils.data.Dataset):
    """utils.TensorDataset without its .float(): the images keep their dtype."""

    def __init__(self, images: Tensor, labels: Tensor):
        self.images, self.labels = images.detach(), labels.detach()

    def __getitem__(self, index: Any) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __len__(self) -> int:
        return len(self.images)
