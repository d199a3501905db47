"""Patches for the MTT lineage (MTT, FTD, ATT, AST, DATM fork MTT's utils.py, networks.py and distill loop): what
their code needs to run on a CPU, deterministically, from our data, and with the random draws ours makes.

`Authors` holds one run's loaded modules and the stand-ins each module sees for `torch`, `np` and `time`; every
override is a named patch, installed by `Authors.install()` and undone with the `Patches` block. The functions
below add the lineage's usual patches; a method's case module picks the ones its case needs."""
from __future__ import annotations

import types
from collections import defaultdict
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from distillery.parity.patches import Clock, Patches, proxy, rand_from, randint_from

WHAT = {
    "device": "torch.cuda.is_available() and device_count() read as no GPU in their modules, and Tensor.cuda() "
              "returns the tensor itself: their code runs on the CPU",
    "wandb": "a stand-in wandb module: init keeps the config (their args are rebuilt from it), log keeps every "
             "logged value for the harness, Image/Histogram/finish do nothing",
    "dataset": "get_dataset answers the harness's dataset name with our prepared split (their 12-tuple: normalised "
               "float images, a test loader of batch 128 without workers); other names go to their code",
    "networks": "get_network builds their network, then its weights are set to the harness's initialisation "
                "(ours, drawn from our seed)",
    "clock": "the clock in utils counts 1 ms per call from a fixed start, so get_network's "
             "manual_seed(int(time.time()*1000) % 100000) is reproducible (and still new on every call)",
    "loader-order": "DataLoader(shuffle=True) in their code yields the batches in our order (our permutations, "
                    "drawn from our seed role); loaders without shuffle are torch's",
    "dsa-draws": "torch.rand and torch.randint in utils.py (only DiffAugment draws there) answered, in call order, "
                 "from our DSA generator, flat and in the default dtype as ours draws them",
    "dsa-layout": "DiffAugment's output is copied to torch's standard memory layout (values unchanged): on a "
                  "one-channel batch rand_crop's permute-gather-permute leaves strides that are also channels-last, "
                  "x.contiguous() keeps them, the convolutions then propagate channels-last and the ConvNet's "
                  "out.view(n, -1) fails on this torch (networks.py:40)",
    "no-dc-augment": "utils.augment (the DC augmentation their epoch() applies when --dsa False) returns the batch "
                     "unchanged: augmentation off",
    "snapshot-copies": "Tensor.cpu() of a CPU tensor returns a copy, as it does from their GPU: on a CPU run "
                       "buffer.py's [p.detach().cpu() for p in net.parameters()] would alias the live weights, so "
                       "every snapshot would be the final one",
    "seeds": "numpy, python and torch global RNGs seeded before each run: their draws are theirs, but reproducible",
}


class Authors:
    """One run of the authors' code: their modules (attributes of `modules`), the patches, and the overrides of the
    `torch`, `np` and `time` each module sees, collected and then installed as proxies."""

    def __init__(self, modules: types.SimpleNamespace, patches: Patches):
        self.modules, self.patches = modules, patches
        self.overrides: dict[tuple[str, str], dict[str, Any]] = defaultdict(dict)

    def module(self, name: str) -> types.ModuleType:
        return getattr(self.modules, name)

    def override(self, module: str, attr: str, key: str, value: Any, patch: str) -> None:
        """What module.<attr>.<key> is for their code in `module` (e.g. distill's torch.randperm), as patch `patch`."""
        self.overrides[(module, attr)][key] = value
        self.patches.note(patch, WHAT.get(patch, patch))

    def replace(self, module: str, attr: str, value: Any, patch: str, what: str | None = None) -> None:
        """module.attr = value (a function of theirs) for this run, as patch `patch`."""
        self.patches.set(self.module(module), attr, value, patch, what or WHAT[patch])

    def install(self) -> None:
        """Put the collected stand-ins in place (call once, after every override)."""
        for (module, attr), overrides in self.overrides.items():
            owner = self.module(module)
            self.patches.set(owner, attr, proxy(owner.__dict__[attr], overrides), None)


def wandb_stub(logged: list[dict]) -> types.ModuleType:
    """A wandb stand-in: `init(config=args)` keeps vars(args) as config._items, `log` appends its dict to
    `logged` (with the step), the rest do nothing."""
    stub = types.ModuleType("wandb")

    def init(config: Any = None, **_: Any) -> types.SimpleNamespace:
        stub.config = types.SimpleNamespace(_items=dict(vars(config)) if config is not None else {})
        stub.run = types.SimpleNamespace(name="parity")
        return stub.run

    def log(data: dict, step: int | None = None, **_: Any) -> None:
        logged.append({**data, "_step": step})

    stub.init, stub.log = init, log
    stub.Image = stub.Histogram = lambda *a, **k: None
    stub.finish = lambda *a, **k: None
    return stub


def on_cpu(a: Authors, modules: Sequence[str]) -> None:
    """Their `modules` see no GPU, and Tensor.cuda() is the identity (their save block calls it)."""
    for name in modules:
        a.override(name, "torch", "cuda.is_available", lambda: False, "device")
        a.override(name, "torch", "cuda.device_count", lambda: 0, "device")
    a.patches.set(torch.Tensor, "cuda", lambda self, *args, **kwargs: self, "device", WHAT["device"])


def dataset_branch(a: Authors, modules: Sequence[str], name: str, train: tuple[Tensor, Tensor],
                   test: tuple[Tensor, Tensor], meta: dict) -> None:
    """get_dataset(name, ...) in `modules` (each bound it by `from utils import get_dataset`) returns our split."""
    def get_dataset(dataset: str, *args: Any, **kwargs: Any) -> tuple:
        if dataset != name:
            return real(dataset, *args, **kwargs)
        channel, size, classes = train[0].shape[1], tuple(train[0].shape[2:]), meta["num_classes"]
        dst_train, dst_test = TensorDataset(*train), TensorDataset(*test)
        testloader = DataLoader(dst_test, batch_size=128, shuffle=False, num_workers=0)
        identity = {c: c for c in range(classes)}
        return (channel, size, classes, list(meta["classes"]), meta["mean"], meta["std"], dst_train, dst_test,
                testloader, None, identity, None)

    real = a.module(modules[0]).get_dataset
    for module in modules:
        a.replace(module, "get_dataset", get_dataset, "dataset")


def inject_networks(a: Authors, modules: Sequence[str], weights: Iterator[Tensor]) -> None:
    """get_network in `modules` returns their network with the next of `weights` (flat, parameters() order)."""
    def get_network(*args: Any, **kwargs: Any) -> torch.nn.Module:
        net = real(*args, **kwargs)
        flat = next(weights)
        first = next(net.parameters())
        torch.nn.utils.vector_to_parameters(flat.to(first.device, first.dtype).clone(), net.parameters())
        return net

    real = a.module(modules[0]).get_network
    for module in modules:
        a.replace(module, "get_network", get_network, "networks")


def fixed_clock(a: Authors, seed: int, module: str = "utils") -> None:
    """The clock `module` reads counts up from `seed` (get_network's reseed is reproducible)."""
    a.override(module, "time", "time", Clock(seed), "clock")


def loader_order(a: Authors, module: str, generator: torch.Generator) -> None:
    """Shuffled DataLoaders created in `module` yield their batches in the order of our permutations from
    `generator` (one torch.randperm(len(dataset)) per pass, as our loops draw them)."""
    a.override(module, "torch", "utils.data.DataLoader", ordered_loader(generator), "loader-order")


def ordered_loader(generator: torch.Generator) -> Callable[..., Any]:
    """A DataLoader stand-in: shuffled loaders take their order from `generator`, the others are torch's."""
    class Ordered:
        def __init__(self, dataset: Any, batch_size: int):
            self.dataset, self.batch_size = dataset, batch_size

        def __len__(self) -> int:
            return -(-len(self.dataset) // self.batch_size)

        def __iter__(self) -> Iterator[Any]:
            order = torch.randperm(len(self.dataset), generator=generator)
            for idx in order.split(self.batch_size):
                yield self.dataset[idx]

    def loader(dataset: Any, batch_size: int = 1, shuffle: bool = False, **kwargs: Any) -> Any:
        if not shuffle:
            return DataLoader(dataset, batch_size=batch_size, shuffle=False, **kwargs)
        return Ordered(dataset, batch_size)
    return loader


def dsa_draws(a: Authors, generator: torch.Generator, module: str = "utils") -> None:
    """DiffAugment's torch.rand / torch.randint calls in `module` draw from `generator`, as our dsa() does."""
    a.override(module, "torch", "rand", rand_from(generator), "dsa-draws")
    a.override(module, "torch", "randint", randint_from(generator), "dsa-draws")


def dsa_layout(a: Authors, modules: Sequence[str], utils: str = "utils") -> None:
    """DiffAugment (defined in `utils`), as `modules` call it, returns a standard-layout tensor (their ConvNet
    views its features)."""
    real = a.module(utils).DiffAugment

    def diff_augment(*args: Any, **kwargs: Any) -> Tensor:
        return real(*args, **kwargs).clone(memory_format=torch.contiguous_format)
    for module in modules:
        a.replace(module, "DiffAugment", diff_augment, "dsa-layout")


def no_dc_augment(a: Authors, module: str = "utils") -> None:
    """Their DC augmentation (used when DSA is off) is the identity."""
    a.replace(module, "augment", lambda images, *args, **kwargs: images, "no-dc-augment")


def snapshot_copies(patches: Patches) -> None:
    """Tensor.cpu() of a CPU tensor copies, as from their GPU (buffer.py's snapshots are then snapshots)."""
    real = torch.Tensor.cpu

    def cpu(self: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.clone() if self.device.type == "cpu" else real(self, *args, **kwargs)
    patches.set(torch.Tensor, "cpu", cpu, "snapshot-copies", WHAT["snapshot-copies"])
