"""DATM's soft cross-entropy evaluation against distill/evaluation.py @97ae510 (loaded at run time from the checkout):
a network trained on images, learned logits and lr saved as the files it loads, under protocol soft_ce on our side."""
from __future__ import annotations

import time
from typing import Any, Callable

import torch

from distillery.augment import DEFAULT_STRATEGY
from distillery.distill.matching import initial_images, initial_logits
from distillery.evaluate import EvalConfig, train_network
from distillery.functional import FlatModel
from distillery.metrics import accuracy
from distillery.models import build_model
from distillery.parity.compare import CaseResult, compare_all
from distillery.parity.context import Context, finish, working_dir
from distillery.parity.datm import FLOAT32, REFERENCE, UTILS, classifiers, config, experts
from distillery.parity.lineage import (Authors, dataset_branch, dsa_draws, dsa_layout, fixed_clock, inject_networks,
                                       loader_order, on_cpu)
from distillery.parity.patches import Patches
from distillery.parity.reference import authors_modules, quiet, script_args
from distillery.seeds import generator, seeded


def evaluation_case(dsa: bool) -> Callable[[Context], CaseResult]:
    """distill/evaluation.py's main (evaluate_synset with their SoftCrossEntropy on the saved images, logits and lr)
    against our train_network + accuracy under protocol soft_ce, on the same set, initialisation and batch order."""
    name = "evaluation_dsa" if dsa else "evaluation"

    def run(ctx: Context) -> CaseResult:
        started = time.perf_counter()
        s, ws = ctx.sizes, ctx.ws
        strategy = DEFAULT_STRATEGY if dsa else "none"
        (trajectory,), _ = experts(ctx, 1)
        cfg = config(s, "real", ipc=s.eval_ipc)
        student = FlatModel(build_model(s.model, ws.train[0].shape[1], ws.num_classes, ws.train[0].shape[-1]))
        images, hard = initial_images(cfg, *ws.train, ws.num_classes, None)
        logits = initial_logits(cfg, images, hard, classifiers(student, [trajectory]))
        protocol = EvalConfig(epochs=s.eval_epochs, batch=s.eval_batch, dsa=strategy, soft_labels=True,
                              soft_loss="soft_ce")
        model = train_network(images, logits, cfg.lr_teacher, s.model, ws.num_classes, s.seed, protocol)
        mine = {"weights": FlatModel(model).flatten(), "test_accuracy": accuracy(model, *ws.test)}
        with seeded(s.seed, "eval-init"):  # the initialisation train_network draws
            init = FlatModel(build_model(s.model, images.shape[1], ws.num_classes, images.shape[-1])).flatten()
        folder = ctx.fresh(name)
        for file, value in (("images", images), ("labels", logits), ("lr", torch.tensor(cfg.lr_teacher))):
            torch.save(value, folder / f"{file}.pt")
        argv = ["--dataset", ws.reference_name, "--model", s.model, "--epoch_eval_train", str(s.eval_epochs),
                "--batch_train", str(s.eval_batch), "--dsa", "True", "--dsa_strategy", strategy, "--parall_eva",
                "True", "--data_path", str(ws.root), "--data_dir", str(folder / "images.pt"),
                "--label_dir", str(folder / "labels.pt"), "--lr_dir", str(folder / "lr.pt")]
        seen: dict[str, Any] = {}
        with Patches() as patches, authors_modules(REFERENCE, ctx.reference, ("evaluation", UTILS)) as m:
            args = script_args(ctx.reference / "distill" / "evaluation.py", argv, patches)
            a = Authors(m, patches)
            on_cpu(a, ["evaluation", UTILS])
            dataset_branch(a, ["evaluation"], ws.reference_name, ws.train, ws.test, ws.meta)
            fixed_clock(a, s.seed, UTILS)
            inject_networks(a, ["evaluation"], iter([init]))
            loader_order(a, UTILS, generator(s.seed, "eval-shuffle"))
            if dsa:
                dsa_draws(a, generator(s.seed, "eval-dsa"), UTILS)
                dsa_layout(a, [UTILS], UTILS)

            def record(*args: Any, **kwargs: Any) -> Any:
                net, acc_train, acc = real(*args, **kwargs)
                seen.update(weights=torch.cat([p.detach().reshape(-1) for p in net.parameters()]), acc=acc)
                return net, acc_train, acc

            real = m.evaluation.evaluate_synset
            a.replace("evaluation", "evaluate_synset", record, "record-evaluation",
                      "evaluate_synset's trained network and test accuracy are kept for the comparison")
            a.install()
            with working_dir(folder), quiet():
                m.evaluation.main(args)
        result = compare_all(name, mine, {"weights": seen["weights"], "test_accuracy": seen["acc"]}, FLOAT32,
                             exact=("test_accuracy",))
        result.notes = [f"their distill/evaluation.py (--epoch_eval_train {s.eval_epochs}, --batch_train "
                        f"{s.eval_batch}): images = our real init at IPC {s.eval_ipc}, labels = expert 0's logits on "
                        f"them (our init real), lr = lr_teacher, saved as the .pt files it loads; initialisation "
                        f"ours (role eval-init), batch order ours (role eval-shuffle)",
                        f"DSA {strategy} with our draws (role eval-dsa)" if dsa else "augmentation off on both sides",
                        "float32 (their TensorDataset and epoch() cast with .float()); their loop runs range(Epoch+1) "
                        "epochs with the lr x0.1 after epoch index Epoch//2+1"]
        return finish(result, patches, ctx, started)
    return run
