"""AST's training cases against its code @8030869: expert training with the smooth recipe (buffer.py --optim SGDMOM
--loss_decay --gp True: momentum SGD, the clipped CE of the first epochs, the gradient penalty of utils.py's epoch_gp,
the lr x0.6 and a new optimizer after epoch train_epochs // 2 + 1) and the evaluation under protocol `ast` (utils.py's
evaluate_synset: weight decay 1e-3, the lr halved in a new SGD with momentum 0.8 after epoch Epoch // 2 + 1),
each without augmentation and with the same DSA draws on both sides.

Their evaluate_synset reports the maximum of the test accuracies it measures every 20 epochs (test-set selection,
which our policy does not repeat): the case compares the accuracy of the network it returns, after the final
epoch, measured by their own epoch('test', ...), and notes their maximum."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch

from distillery.augment import DEFAULT_STRATEGY
from distillery.distill.matching import initial_images
from distillery.evaluate import train_network
from distillery.experts import get_recipe
from distillery.experts.train import train_expert
from distillery.functional import FlatModel
from distillery.metrics import accuracy
from distillery.models import build_model
from distillery.parity.ast import FLOAT32, REFERENCE, Sizes, distill_run, iteration_config, paper_config
from distillery.parity.compare import CaseResult, compare_all
from distillery.parity.context import Context, finish, working_dir
from distillery.parity.lineage import (Authors, dataset_branch, dsa_draws, dsa_layout, fixed_clock, inject_networks,
                                       loader_order, on_cpu)
from distillery.parity.mtt import distill_argv, expert_buffer, their_buffer
from distillery.parity.patches import Patches, given
from distillery.parity.reference import quiet, script_args
from distillery.plan.settings import eval_config
from distillery.seeds import generator, seeded

PROTOCOL = "ast"
# buffer.py's switches for our AST recipes (smooth: README.md:12); its lr_teacher 0.003, --mom 0.9 and --l2 1e-3
# defaults (buffer.py:150, :162-163) are left to it, so the recipe's values are checked against them
BUFFER_FLAGS = {"smooth": ["--optim", "SGDMOM", "--loss_decay", "--gp", "True"],
                "smooth_gp": ["--optim", "SGDMOM", "--gp", "True"],
                "sgd_momentum": ["--optim", "SGDMOM"],
                "adam": ["--optim", "ADAM"]}


def buffer_argv(ctx: Context, s: Sizes, dsa: bool, out: Any) -> list[str]:
    """buffer.py's command line: README.md:12's switches for the recipe, its defaults for lr, momentum and l2."""
    if s.recipe not in BUFFER_FLAGS:
        raise ValueError(f"recipe={s.recipe!r}: AST's buffer.py trains {', '.join(BUFFER_FLAGS)}; choose one")
    return ["--dataset", ctx.ws.reference_name, "--model", s.model, "--num_experts", "1", "--train_epochs",
            str(s.train_epochs), "--batch_train", str(s.batch_train), "--dsa", str(dsa), "--buffer_path", str(out),
            "--data_path", str(ctx.ws.root), *BUFFER_FLAGS[s.recipe]]


def expert_case(dsa: bool) -> Any:
    """buffer.py's expert training against our train_expert with the recipe for train_epochs epochs."""
    name = "expert_training_dsa" if dsa else "expert_training"

    def run(ctx: Context) -> CaseResult:
        started = time.perf_counter()
        s, ws = ctx.sizes, ctx.ws
        recipe = get_recipe(s.recipe, epochs=s.train_epochs, batch=s.batch_train, dsa=dsa)
        out = ctx.folder(name)
        argv = buffer_argv(ctx, s, dsa, out)
        ours, _ = train_expert(*ws.train, s.model, ws.num_classes, recipe, s.seed)
        with Patches() as patches:
            theirs = their_buffer(ctx, REFERENCE, argv, out, ours[0], dsa, patches)
        rows = {f"epoch_{e}": theirs[e] for e in range(len(theirs))}
        result = compare_all(name, {f"epoch_{e}": ours[e] for e in range(len(ours))}, rows, FLOAT32)
        decayed = [e for e in range(s.train_epochs) if e > s.train_epochs // 2 + 1]
        result.notes = [f"ours: recipe {s.recipe} (lr {recipe.lr}, momentum {recipe.momentum}, weight decay "
                        f"{recipe.weight_decay}, clipped CE {recipe.clip_start} + … over {recipe.clip_epochs} epochs, "
                        f"penalty {recipe.gp_weight} · {recipe.gp_norm} norm on the {recipe.gp_input} batch); theirs: "
                        f"buffer.py {' '.join(BUFFER_FLAGS[s.recipe])} with its default lr, --mom and --l2",
                        f"{s.train_epochs} epochs: the lr x0.6 with a new optimizer at epoch(s) {decayed or 'none'}",
                        "float32 (their epoch_gp casts batches with .float()); initial weights: our row 0 set into "
                        "their network; batch order: our permutations (role expert-shuffle)",
                        "DSA with our draws (role expert-dsa)" if dsa else "augmentation off on both sides"]
        return finish(result, patches, ctx, started)
    return run


def evaluation_case(dsa: bool) -> Any:
    """distill.py's evaluation at iteration 0 (evaluate_synset, recorded and then stopped) against our
    train_network under protocol ast + accuracy, on the same set, initialisation and batch order."""
    name = "evaluation_dsa" if dsa else "evaluation"

    class Stop(Exception):
        pass

    def run(ctx: Context) -> CaseResult:
        started = time.perf_counter()
        s, ws = ctx.sizes, ctx.ws
        cfg = iteration_config(s, DEFAULT_STRATEGY if dsa else "none", ipc=s.eval_ipc)
        images, labels = initial_images(cfg, *ws.train, ws.num_classes, None)
        protocol = replace(eval_config(paper_config(), PROTOCOL), epochs=s.eval_epochs, batch=s.eval_batch,
                           dsa=cfg.dsa)
        lr = float(torch.tensor(cfg.lr_teacher))  # their args.lr_net = syn_lr.item(), a float32 tensor's value
        model = train_network(images, labels, lr, s.model, ws.num_classes, s.seed, protocol)
        ours = {"weights": FlatModel(model).flatten(), "test_accuracy": accuracy(model, *ws.test)}
        with seeded(s.seed, "eval-init"):  # the initialisation train_network draws
            init = FlatModel(build_model(s.model, images.shape[1], ws.num_classes, images.shape[-1])).flatten()
        _, buffers = expert_buffer(ctx)
        seen: dict[str, Any] = {}
        with Patches() as patches, distill_run(ctx, patches, []) as m:
            argv = distill_argv(ws, cfg, buffers, 1, num_eval=1, eval_epochs=s.eval_epochs, batch_train=s.eval_batch)
            args = script_args(ctx.reference / "distill.py", argv, patches)
            a = Authors(m, patches)
            on_cpu(a, ["distill", "utils"])
            dataset_branch(a, ["distill"], ws.reference_name, ws.train, ws.test, ws.meta)
            fixed_clock(a, s.seed)
            a.override("distill", "torch", "randn", given(iter([images.clone()]), "initial images"),
                       "initial-images")
            inject_networks(a, ["distill"], iter([init]))
            loader_order(a, "utils", generator(s.seed, "eval-shuffle"))
            if dsa:
                dsa_draws(a, generator(s.seed, "eval-dsa"))
                dsa_layout(a, ["utils"])
            real, epoch = m.distill.evaluate_synset, m.utils.epoch

            def record(it_eval: int, net: torch.nn.Module, images_train: Any, labels_train: Any, testloader: Any,
                       args: Any, *rest: Any, **kwargs: Any) -> Any:
                net, _, best = real(it_eval, net, images_train, labels_train, testloader, args, *rest, **kwargs)
                with torch.no_grad():  # the network after the final epoch, tested as their loop tests it
                    _, final = epoch("test", testloader, net, None, torch.nn.CrossEntropyLoss(), args, aug=False)
                seen.update(weights=torch.cat([p.detach().reshape(-1) for p in net.parameters()]), acc=final,
                            best=best)
                raise Stop

            a.replace("distill", "evaluate_synset", record, "stop-after-evaluation",
                      "evaluate_synset's trained network is kept and tested once more by their epoch('test', ...) "
                      "(the final epoch's accuracy; they report the maximum over their tests), then the run stops")
            a.install()
            try:
                with working_dir(ctx.fresh(name)), quiet():
                    m.distill.main(args)
            except Stop:
                pass
        theirs = {"weights": seen["weights"], "test_accuracy": seen["acc"]}
        result = compare_all(name, ours, theirs, FLOAT32, exact=("test_accuracy",))
        result.notes = [f"their evaluation at iteration 0 of distill.py (--num_eval 1, --epoch_eval_train "
                        f"{s.eval_epochs}): set = our real init at IPC {s.eval_ipc} through their torch.randn, lr = "
                        f"lr_teacher as a float32 tensor's value, initialisation ours (role eval-init), batch order "
                        f"ours (role eval-shuffle)", "DSA with our draws (role eval-dsa)" if dsa else
                        "augmentation off on both sides",
                        f"ours: protocol {PROTOCOL} (weight decay {protocol.weight_decay}, lr x{protocol.decay} and "
                        f"momentum {protocol.decay_momentum} in a new SGD after epoch {s.eval_epochs // 2 + 1})",
                        f"their reported number, the maximum over their tests every 20 epochs: {seen['best']:.4f}; "
                        f"the final epoch's: {seen['acc']:.4f}"]
        return finish(result, patches, ctx, started)
    return run
