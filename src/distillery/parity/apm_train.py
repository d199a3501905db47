"""APM's training cases: teacher training (model_train/train.py's main against train_expert with recipe teacher)
and the soft-label evaluation (distill.py's evaluation functions load_teacher, get_lab, get_network and
evaluate_synset_mc, called as its evaluation block calls them, against our predict + train_network under protocol
`soft`). Both in float32: their epoch() casts every batch with .float()."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from distillery.data import class_indices
from distillery.distill.apm import predict
from distillery.evaluate import EvalConfig, train_network
from distillery.experts import get_recipe
from distillery.experts.train import train_expert
from distillery.functional import FlatModel, snapshot_model
from distillery.metrics import accuracy
from distillery.models import build_model
from distillery.parity.apm import (DISTILL, FLOAT32, OFF, apm_modules, common_patches, distill_argv, distill_config,
                                   flat, parse_with, teacher, write_teacher)
from distillery.parity.apm_iteration import initial_set
from distillery.parity.compare import CaseResult, compare_all
from distillery.parity.context import Context, finish, working_dir
from distillery.parity.lineage import (Authors, dataset_branch, dsa_draws, dsa_layout, fixed_clock, inject_networks,
                                       loader_order, no_dc_augment, on_cpu)
from distillery.parity.patches import Patches
from distillery.parity.reference import quiet, script_args
from distillery.seeds import generator, seeded

TRAIN = ("utils_train", "train")  # model_train/train.py's run
STRATEGY = "color_crop_cutout_flip_scale_rotate"


def per_class(split: tuple[Tensor, Tensor], num_classes: int, n: int) -> tuple[Tensor, Tensor]:
    """The first `n` images of each class of `split`, class by class."""
    idx = torch.cat([i[:n] for i in class_indices(split[1], num_classes)])
    return split[0][idx], split[1][idx]


def teacher_case(dsa: bool) -> Any:
    """model_train/train.py's main (one teacher) against train_expert with recipe teacher, every epoch's weights
    compared: teacher_train_epochs (the recipe's 100, across both sides' decay at epoch 50) without augmentation;
    teacher_dsa_epochs with our DSA draws, before any decay (see Sizes)."""
    name = "teacher_training_dsa" if dsa else "teacher_training"

    def run(ctx: Context) -> CaseResult:
        started = time.perf_counter()
        s, ws = ctx.sizes, ctx.ws
        train = per_class(ws.train, ws.num_classes, s.teacher_train_per_class)
        test = per_class(ws.test, ws.num_classes, s.teacher_test_per_class)
        # final_only=False: every epoch's row kept (the training is the same; the recipe stores initial and final);
        # with DSA, a short run whose decay is after it on both sides (theirs is at epoch 50 whatever the epochs)
        recipe = replace(get_recipe("teacher", epochs=s.teacher_dsa_epochs if dsa else s.teacher_train_epochs,
                                    dsa=dsa), final_only=False)
        if dsa:
            recipe = replace(recipe, lr_decay_at=None)
        ours, _ = train_expert(*train, s.model, ws.num_classes, recipe, s.seed)
        folder = ctx.fresh(name)
        argv = ["--dataset", ws.reference_name, "--model", s.model, "--num_experts", "1", "--train_epochs",
                str(recipe.epochs), "--lr_teacher", repr(recipe.lr), "--mom", repr(recipe.momentum), "--l2",
                repr(recipe.weight_decay), "--batch_train", str(recipe.batch), "--dsa", str(dsa),
                "--buffer_path", str(folder / "models"), "--data_path", str(folder / "data")]
        rows: list[Tensor] = [ours[0]]  # their initialisation is ours (injected below)
        with Patches() as patches, apm_modules(ctx, patches, TRAIN) as m:
            args = script_args(ctx.reference / "model_train" / "train.py", argv, patches)
            a = Authors(m, patches)
            on_cpu(a, ["train", "utils_train"])
            dataset_branch(a, ["train"], ws.reference_name, train, test, ws.meta)
            fixed_clock(a, s.seed, module="utils_train")
            inject_networks(a, ["train"], iter([ours[0]]))
            loader_order(a, "train", generator(s.seed, "expert-shuffle"))
            if dsa:
                dsa_draws(a, generator(s.seed, "expert-dsa"), module="utils_train")
                dsa_layout(a, ["utils_train"], utils="utils_train")
            else:
                no_dc_augment(a, module="utils_train")
            real = m.train.epoch

            def epoch(*args: Any, **kwargs: Any) -> Any:
                out = real(*args, **kwargs)
                if (args[0] if args else kwargs["mode"]) == "train":
                    rows.append(flat(kwargs["net"] if "net" in kwargs else args[2]))
                return out
            a.replace("train", "epoch", epoch, "recording-epochs", "train.py's epoch() keeps the teacher's weights "
                                                                   "after every training epoch")
            a.install()
            with working_dir(folder), quiet():
                m.train.main(args)
        result = compare_all(name, {"trajectory": ours}, {"trajectory": torch.stack(rows)}, FLOAT32)
        result.notes = [f"float32; {recipe.epochs} epochs on the first {s.teacher_train_per_class} training images "
                        f"per class (their per-epoch test pass, which only picks the epoch they save, on "
                        f"{s.teacher_test_per_class} per class); initial weights ours (role expert-init), batch "
                        f"order ours (role expert-shuffle)",
                        "SGD lr 0.05, momentum 0.9, wd 5e-4; their MultiStepLR([50], 0.1) is fixed at epoch 50 "
                        "whatever --train_epochs, ours decays at lr_decay_at 0.5 of the recipe's epochs: the same at "
                        "the recipe's 100" + ("; this short run is before any decay (ours: lr_decay_at None)"
                                              if dsa else ""),
                        "DSA with our draws (role expert-dsa)" if dsa else "augmentation off on both sides (their DC "
                        "augment, used with --dsa False, is the identity)"]
        return finish(result, patches, ctx, started)
    return run


class _Stop(Exception):
    pass


def evaluation_case(dsa: bool) -> Any:
    """APM's evaluation of a set against ours under protocol `soft`: the teacher's logits as labels (get_lab against
    predict), then evaluate_synset_mc against train_network (weights and test accuracy)."""
    name = "evaluation_dsa" if dsa else "evaluation"

    def run(ctx: Context) -> CaseResult:
        started = time.perf_counter()
        s, ws = ctx.sizes, ctx.ws
        cfg = distill_config(s, STRATEGY if dsa else "none", ipc=s.eval_ipc)
        images, labels = initial_set(ctx, cfg, torch.float32)
        weights = teacher(ctx)
        soft = predict(snapshot_model(weights, s.model, ws.num_classes, images), images, cfg.student_batch)
        protocol = EvalConfig(epochs=s.eval_epochs, batch=s.eval_batch, schedule="multistep", soft_labels=True,
                              dsa=cfg.dsa)
        model = train_network(images, soft, cfg.lr_net, s.model, ws.num_classes, s.seed, protocol)
        ours = {"soft_labels": soft, "weights": FlatModel(model).flatten(), "test_accuracy": accuracy(model, *ws.test)}
        with seeded(s.seed, "eval-init"):  # the initialisation train_network draws
            init = FlatModel(build_model(s.model, images.shape[1], ws.num_classes, images.shape[-1])).flatten()
        folder = ctx.fresh(name)
        argv = distill_argv(ctx, cfg, folder, STRATEGY if dsa else OFF) + [
            "--epoch_eval_train", str(s.eval_epochs), "--batch_train", str(s.eval_batch)]
        seen: dict[str, Any] = {}
        with Patches() as patches, apm_modules(ctx, patches, DISTILL) as m:
            write_teacher(m, ctx, weights[-1], folder)
            a = Authors(m, patches)
            parse_with(patches, argv)
            common_patches(a, ctx, [weights[-1], init])
            loader_order(a, "distill", generator(s.seed, "eval-shuffle"))
            if dsa:
                dsa_draws(a, generator(s.seed, "eval-dsa"))
                dsa_layout(a, ["utils"])
            get_dataset = m.distill.get_dataset

            def setup(*args: Any, **kwargs: Any) -> Any:
                seen["args"], seen["data"] = kwargs["args"], get_dataset(*args, **kwargs)
                return seen["data"]

            def stop(*_: Any) -> None:
                raise _Stop
            a.replace("distill", "get_dataset", setup, "dataset")
            a.replace("distill", "get_eval_pool", stop, "setup-only",
                      "their main() runs its setup (arguments, device, DSA parameters, dataset, num_classes, "
                      "im_size) and stops at get_eval_pool (distill.py:188); the evaluation block's functions "
                      "(load_teacher, get_lab, get_network, evaluate_synset_mc, :262-276) are then called with its "
                      "args as that block calls them")
            a.install()
            with working_dir(folder), quiet():
                try:
                    m.distill.main()
                except _Stop:
                    pass
                args, (channel, im_size, num_classes) = seen["args"], seen["data"][:3]
                testloader = seen["data"][8]
                labels_soft = m.distill.get_lab(m.distill.load_teacher(args), images.clone(), labels, args)
                net = m.distill.get_network(args.model, channel, num_classes, im_size)
                net, _, acc = m.distill.evaluate_synset_mc(0, net, images.clone(), labels_soft.clone(), testloader,
                                                           args)
        theirs = {"soft_labels": labels_soft, "weights": flat(net), "test_accuracy": acc}
        result = compare_all(name, ours, theirs, FLOAT32, exact=("test_accuracy",))
        result.notes = [f"float32; the set: our real init at IPC {s.eval_ipc}; labels: our teacher's logits (their "
                        f"get_lab, batches of 32; our predict, batches of {cfg.student_batch}); lr_net {cfg.lr_net}, "
                        f"{s.eval_epochs} + 1 epochs, batch {s.eval_batch}, MultiStepLR at {s.eval_epochs // 2 + 1}",
                        "initialisation ours (role eval-init), batch order ours (role eval-shuffle); "
                        + ("DSA with our draws (role eval-dsa)" if dsa else "augmentation off on both sides")]
        return finish(result, patches, ctx, started)
    return run

