"""The authors' expert buffers (MTT `buffer.py`; FTD, ATT and DATM read the same files): each `replay_buffer_<n>.pt`
is a list of experts, an expert a list of per-epoch snapshots (initialisation first), a snapshot a list of CPU
float32 tensors in the network's `parameters()` order (reference notes §0.5-0.6). Imports become our expert files
(experts/store.py) in the directory the plan reads for (dataset, norm, model, recipe); exports write the authors'
layout back, so their `distill.py` runs from our experts."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor

from distillery.data import get_spec, load_meta, load_zca
from distillery.data.prepare import SPLIT_FILES
from distillery.data.registry import IMAGENET_SUBSETS
from distillery.data.transform import normalise, zca_apply
from distillery.experts import get_recipe, load_expert, save_expert
from distillery.io import save_torch, sha256_file
from distillery.models import build_model, is_model_name
from distillery.models.convnet import parse_convnet_name
from distillery.plan import PATHS, expert_dir

FORMAT = "mtt-replay-buffer"
PER_FILE = 10  # experts per file: buffer.py's --save_interval default
BUFFER_NAME = re.compile(r"replay_buffer_(\d+)\.pt")
EXPERT_NAME = re.compile(r"(\d+)\.pt")
# The authors' `--dataset` for ours (MTT's get_dataset: CIFAR10, CIFAR100, Tiny, ImageNet; MNIST, FashionMNIST and
# SVHN are the DC/DSA lineage's); buffer.py writes the ImageNet subsets under ImageNet/<subset>/<res>.
REFERENCE_NAMES = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "tiny-imagenet": "Tiny", "mnist": "MNIST",
                   "fashion-mnist": "FashionMNIST", "svhn": "SVHN",
                   **{subset: f"ImageNet/{subset}/128" for subset in IMAGENET_SUBSETS}}
NO_ZCA = ("cifar10", "cifar100")  # buffer.py marks only these directories `_NO_ZCA` when trained without ZCA
DOMAIN_IMAGES = 1000              # training images the domain check classifies


def reference_dir(dataset: str, zca: bool, model: str) -> Path:
    """Where buffer.py writes (and distill.py reads) this set, under --buffer_path:
    <dataset>[/<subset>/<res>][_NO_ZCA]/<model>. Datasets the authors' code lacks keep our name."""
    name = REFERENCE_NAMES.get(dataset, dataset)
    return Path(name + ("_NO_ZCA" if dataset in NO_ZCA and not zca else "")) / model


def parameter_shapes(model: str, dataset: str) -> list[tuple[str, tuple[int, ...]]]:
    """Our network's parameters for the dataset, in `parameters()` order: the layout of a snapshot."""
    spec = get_spec(dataset)
    with torch.device("meta"):  # shapes only, nothing allocated
        module = build_model(model, spec.channels, spec.num_classes, spec.size)
    return [(name, tuple(p.shape)) for name, p in module.named_parameters()]


def reference_mismatch(model: str, dataset: str) -> str | None:
    """Why the authors' network of this name cannot be ours on a dataset their code loads (None: it can be).

    Read from their networks.py (@50dccea): ConvNet sizes its head from im_size (28 read as 32, :82) halved once
    per pool (:94, :35), so a map halved to 0 gives Linear(0, classes), a net that cannot run (ours skips pools on
    a 1x1 map); ResNet18(BN) ends in avg_pool2d(out, 4) + Linear(512) (:469, :453), our global average only when
    the last map is 4x4 (25-32 px inputs).
    """
    if dataset not in REFERENCE_NAMES:
        return None
    size = get_spec(dataset).size
    convnet = parse_convnet_name(model)
    if convnet is not None and convnet.get("pool", "avgpool") != "none":
        side, depth = (32 if size == 28 else size), convnet.get("depth", 3)
        if side >> depth == 0:
            return (f"the reference {model} halves its {side} px head size {depth} times to 0 and builds "
                    f"Linear(0, classes), which cannot run, so no buffer of it exists; ours skips pools on 1x1 maps")
    if model in ("ResNet18", "ResNet18BN") and not 25 <= size <= 32:
        return (f"the reference {model} pools its last map with avg_pool2d(4) into Linear(512), which is our global "
                f"average only for 25-32 px inputs; at {size} px it fails or averages a corner")
    return None


def layout_domain(directory: Path, dataset: str, zca: bool) -> None:
    """When `directory` is laid out as buffer.py writes it, its dataset and ZCA setting must be the ones claimed:
    `<name>_NO_ZCA` means no ZCA; a CIFAR directory without the suffix was made with ZCA."""
    parent = directory.parent.name
    base = parent.removesuffix("_NO_ZCA")
    named = {name: ours for ours, name in REFERENCE_NAMES.items() if "/" not in name}.get(base)
    if named is None:
        return
    if named != dataset:
        raise ValueError(f"{directory} is laid out as the reference's {base} buffers, not {dataset}; pass "
                         f"--dataset {named} or the right directory")
    if parent.endswith("_NO_ZCA") and zca:
        raise ValueError(f"{directory}: buffer.py writes {base} buffers made without ZCA to {parent}; drop --zca")
    if dataset in NO_ZCA and parent == base and not zca:
        raise ValueError(f"{directory}: buffer.py writes {base} buffers made without ZCA to {base}_NO_ZCA, so "
                         f"these were made with ZCA; add --zca")


def buffer_files(directory: Path) -> list[Path]:
    """replay_buffer_0.pt … replay_buffer_<n-1>.pt, as distill.py reads them (it stops at the first gap)."""
    numbers = sorted(int(m[1]) for p in directory.glob("replay_buffer_*.pt") if (m := BUFFER_NAME.fullmatch(p.name)))
    if not numbers:
        raise ValueError(f"no replay_buffer_<n>.pt files in {directory}")
    if numbers != list(range(len(numbers))):
        raise ValueError(f"{directory}: buffer files are numbered {numbers}; the reference reads 0, 1, … up to the "
                         f"first missing number, so renumber them without gaps")
    return [directory / f"replay_buffer_{n}.pt" for n in numbers]


def read_buffer(path: Path, shapes: list[tuple[str, tuple[int, ...]]], what: str) -> list[list[list[Tensor]]]:
    """A buffer file's experts (memory-mapped), each snapshot checked against `shapes`; the error names the first
    tensor that does not match."""
    try:
        experts = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise ValueError(f"{path} is not a readable torch file ({err})") from err
    if not isinstance(experts, list) or not experts:
        raise ValueError(f"{path} holds {type(experts).__name__}, not a non-empty list of expert trajectories")
    for i, expert in enumerate(experts):
        if not isinstance(expert, list) or len(expert) < 2:
            raise ValueError(f"{path}: expert {i} is not a list of at least 2 per-epoch snapshots")
        for epoch, snapshot in enumerate(expert):
            where = f"{path}: expert {i}, epoch {epoch}"
            if not isinstance(snapshot, list) or len(snapshot) != len(shapes):
                count = len(snapshot) if isinstance(snapshot, list) else type(snapshot).__name__
                raise ValueError(f"{where} has {count} tensors; {what} has {len(shapes)} parameters")
            for j, (tensor, (name, shape)) in enumerate(zip(snapshot, shapes)):
                if not isinstance(tensor, Tensor) or tuple(tensor.shape) != shape or tensor.dtype != torch.float32:
                    got = (f"{tensor.dtype} {list(tensor.shape)}" if isinstance(tensor, Tensor)
                           else type(tensor).__name__)
                    raise ValueError(f"{where}, tensor {j} ({name}) is {got}; {what} expects float32 {list(shape)}")
    return experts


def domain_accuracies(final: Tensor, model: str, prepared: Path, zca_path: Path) -> dict[str, float]:
    """Top-1 accuracy of an expert's final weights on DOMAIN_IMAGES training images (evenly spaced), normalised
    ('std') and through our ZCA ('zca'). Train-mode forward: batch statistics, as distillation runs its students."""
    meta = load_meta(prepared)
    data = torch.load(prepared / SPLIT_FILES["train"], map_location="cpu", weights_only=True, mmap=True)
    pick = torch.linspace(0, len(data["labels"]) - 1, min(DOMAIN_IMAGES, len(data["labels"]))).long()
    x01, labels = data["images"][pick].float() / 255.0, data["labels"][pick]
    module = build_model(model, meta["channels"], meta["num_classes"], meta["size"])
    torch.nn.utils.vector_to_parameters(final.clone(), module.parameters())
    inputs = {"std": normalise(x01, meta), "zca": zca_apply(x01, load_zca(zca_path))}
    with torch.no_grad():
        return {domain: float((module.train()(x).argmax(1) == labels).float().mean()) for domain, x in inputs.items()}


def import_buffers(directory: str | Path, dataset: str, model: str, recipe: str, zca: bool = False,
                   root: str | Path = ".") -> list[Path]:
    """Our expert files 0 … K−1 (in file order, then list order) from the reference buffers in `directory`,
    written where the plan reads the set, all at once after every check passed. Returns the files written.

    Checks, before writing: the names; that the authors' network of that name can be ours (reference_mismatch);
    the directory's buffer.py layout (dataset, ZCA); every tensor's shape, dtype and order; finite values; the
    ZCA domain (with our zca.pt, the first expert of each file must classify training images better in the
    claimed domain than in the other); and that the set's directory holds no expert files yet.
    """
    directory, root = Path(directory), Path(root)
    get_spec(dataset)  # a registered name, as in a config: never a path out of results/
    if not directory.is_dir():
        raise ValueError(f"{directory} does not exist or is not a directory; give the folder holding "
                         f"replay_buffer_0.pt, replay_buffer_1.pt, …")
    if not is_model_name(model):
        raise ValueError(f"unknown model '{model}' (see distillery.models.MODEL_NAMES)")
    chosen = get_recipe(recipe)
    if (reason := reference_mismatch(model, dataset)) is not None:
        raise ValueError(f"cannot import {model} buffers for {dataset}: {reason}")
    layout_domain(directory, dataset, zca)
    prepared = root / Path(PATHS["meta"].format(dataset=dataset)).parent
    meta = load_meta(prepared)
    zca_path = root / PATHS["zca"].format(dataset=dataset)
    if zca and not zca_path.is_file():
        raise ValueError(f"--zca needs our ZCA of the prepared {dataset} ({zca_path}); fit it first: "
                         f"snakemake --cores 1 {PATHS['zca'].format(dataset=dataset)}")
    target = root / Path(PATHS["expert"].format(**expert_dir(dataset, {"model": model, "zca": zca, "recipe": recipe}),
                                                k=0)).parent
    present = sorted(p.name for p in target.glob("*.pt") if EXPERT_NAME.fullmatch(p.name)) if target.is_dir() else []
    if present:
        raise ValueError(f"{target} already holds expert files ({', '.join(present[:3])}, …); delete them (or import "
                         f"under another recipe) so imported and trained experts are not mixed")
    shapes = parameter_shapes(model, dataset)
    what = f"our {model} for {dataset}"
    files = buffer_files(directory)
    for path in files:  # every file's layout first: memory-mapped, so no parameter is read yet
        read_buffer(path, shapes, what)

    zca_sha256 = sha256_file(zca_path) if zca else None
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=target))
    written: list[Path] = []
    try:
        k = 0
        for path in files:
            source = {"format": FORMAT, "path": str(path.resolve()), "sha256": sha256_file(path)}
            check = None  # the domain check of this file's expert 0, recorded on each of its experts
            for i, expert in enumerate(read_buffer(path, shapes, what)):
                trajectory = torch.stack([torch.cat([t.reshape(-1) for t in snapshot]) for snapshot in expert])
                if not torch.isfinite(trajectory).all():
                    raise ValueError(f"{path}: expert {i} has non-finite parameters; leave that file out")
                if i == 0 and zca_path.is_file():
                    check = {"checked": "expert 0 of the source file",
                             **domain_accuracies(trajectory[-1], model, prepared, zca_path)}
                    claimed, other = ("zca", "std") if zca else ("std", "zca")
                    if not check[claimed] > check[other]:
                        raise ValueError(
                            f"{path}: expert 0's final weights classify {100 * check[claimed]:.1f}% of "
                            f"{DOMAIN_IMAGES} {dataset} training images {'with' if zca else 'without'} our ZCA, as "
                            f"claimed, and {100 * check[other]:.1f}% {'without' if zca else 'with'} it: the buffer "
                            f"was not trained in the claimed domain; {'drop' if zca else 'add'} --zca")
                save_expert(staging / f"{k}.pt", trajectory, {
                    "model": model, "zca": zca, "dataset": dataset, "dataset_sha256": meta["sha256"]["train.pt"],
                    "recipe": asdict(chosen), "seed": None, "source": {**source, "expert": i},
                    "zca_sha256": zca_sha256, "domain_check": check})
                k += 1
        for n in range(k):
            os.replace(staging / f"{n}.pt", target / f"{n}.pt")
            written.append(target / f"{n}.pt")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def export_buffers(out: str | Path, dataset: str, model: str, recipe: str, zca: bool = False,
                   root: str | Path = ".", per_file: int = PER_FILE) -> list[Path]:
    """Our expert files of one set (0, 1, … in order) as reference buffers under `out` (distill.py's
    --buffer_path): reference_dir(...)/replay_buffer_<n>.pt, `per_file` experts each. Returns the files written."""
    get_spec(dataset)
    if not is_model_name(model):
        raise ValueError(f"unknown model '{model}' (see distillery.models.MODEL_NAMES)")
    get_recipe(recipe)
    source = root / Path(PATHS["expert"].format(**expert_dir(dataset, {"model": model, "zca": zca, "recipe": recipe}),
                                                k=0)).parent
    numbers = sorted(int(m[1]) for p in source.glob("*.pt") if (m := EXPERT_NAME.fullmatch(p.name)))
    if not numbers:
        raise ValueError(f"no expert files in {source}: train or import the set first")
    target = Path(out) / reference_dir(dataset, zca, model)
    if any(target.glob("replay_buffer_*.pt")):
        raise ValueError(f"{target} already holds replay_buffer files, which distill.py would read with these; "
                         f"choose an empty --buffer_path")
    shapes = parameter_shapes(model, dataset)
    sizes = [torch.Size(shape).numel() for _, shape in shapes]
    expect = {"model": model, "zca": zca, "num_params": sum(sizes)}
    written = []
    target.mkdir(parents=True, exist_ok=True)
    for n, first in enumerate(range(0, len(numbers), per_file)):
        experts = []
        for k in numbers[first:first + per_file]:
            trajectory, _ = load_expert(source / f"{k}.pt", expect)
            experts.append([[piece.view(shape).clone() for piece, (_, shape) in zip(row.split(sizes), shapes)]
                            for row in trajectory])
        save_torch(experts, target / f"replay_buffer_{n}.pt")
        written.append(target / f"replay_buffer_{n}.pt")
    return written

