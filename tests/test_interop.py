"""The authors' formats: their expert buffers imported (checked tensor by tensor), distilled from and exported back bit
for bit; their networks' parameter layouts beside ours; a released synthetic set evaluated under our protocol."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from distillery.data import fit_zca, load_split, load_zca, prepare, save_zca, zca_invert
from distillery.distill.run import run_distillation
from distillery.evaluate import EvalConfig, evaluate_synset
from distillery.experts import get_recipe, load_expert, train_expert
from distillery.interop import (export_buffers, import_buffers, import_synset, parameter_shapes, reference_dir,
                                reference_mismatch)
from distillery.interop.__main__ import main
from distillery.io import sha256_file
from distillery.models import build_model
from distillery.synset import load_synset
from conftest import job_counts, snakemake

MODEL = "ConvNetD2W32"  # the digits default (plan.DEFAULT_MODELS)
EXPERTS = "results/experts/digits/std/ConvNetD2W32/sgd"
MTT = dict(method="mtt", kind="trajectory", ipc=1, model=MODEL, iterations=3, syn_steps=3, expert_epochs=2,
           max_start_epoch=1, lr_img=100.0, lr_lr=1e-5, lr_teacher=0.01)


# ---------------------------------------------------------------------------------------------------------------
# The reference constructors' parameter shapes in parameters() order, written down from reading
# GeorgeCazenavette/mtt-distillation @50dccea networks.py (and utils.py:194 get_network for each name's settings:
# ConvNet is width 128, depth 3, instancenorm = GroupNorm(C, C), avgpooling; im_size 28 is read as 32, :82, and a
# 1-channel input's first conv is padded by 3, :86). `c` is the input channels; 10 classes. The heads are the same
# at 28 and 32 px except where written (ResNet18_AP :355, MLP :15). get_network does not dispatch ResNet18BN; its
# networks.py constructor (:514) is listed.
def conv(out, inp, k=3, bias=True):
    return [(out, inp, k, k)] + ([(out,)] if bias else [])


def affine(width):       # GroupNorm(width, width) or BatchNorm2d(width): weight, bias
    return [(width,), (width,)]


def layernorm(width, side):  # LayerNorm([width, side, side]), per-element affine
    return [(width, side, side)] * 2


def linear(inp, out=10):
    return [(out, inp), (out,)]


def block(out, inp):     # ConvNet layer: conv3x3 (bias) + instance norm
    return conv(out, inp) + affine(out)


def basic(inp, out):     # ResNet BasicBlock (and BasicBlock_AP): bias-free convs, norms, 1x1 projection if widened
    shortcut = conv(out, inp, k=1, bias=False) + affine(out) if inp != out else []
    return conv(out, inp, bias=False) + affine(out) + conv(out, out, bias=False) + affine(out) + shortcut


def resnet_body(c):
    return (conv(64, c, bias=False) + affine(64) + basic(64, 64) + basic(64, 64) + basic(64, 128) + basic(128, 128)
            + basic(128, 256) + basic(256, 256) + basic(256, 512) + basic(512, 512))


def convnet3(c):
    return block(128, c) + block(128, 128) + block(128, 128) + linear(2048)


REFERENCE = {
    "ConvNet": convnet3, "ConvNetD3": convnet3, "ConvNetIN": convnet3, "ConvNetAP": convnet3, "ConvNetMP": convnet3,
    "ConvNetAS": convnet3, "ConvNetAR": convnet3, "ConvNetAL": convnet3, "ConvNetW128": convnet3,
    "ConvNetBN": convnet3,  # BatchNorm2d(128): the same weight and bias shapes (its running stats are not parameters)
    "ConvNetGN": convnet3,  # GroupNorm(4, 128)
    "ConvNetD1": lambda c: block(128, c) + linear(32768),
    "ConvNetD2": lambda c: block(128, c) + block(128, 128) + linear(8192),
    "ConvNetD4": lambda c: block(128, c) + block(128, 128) * 3 + linear(512),
    "ConvNetD5": lambda c: block(128, c) + block(128, 128) * 4 + linear(128),
    "ConvNetW32": lambda c: block(32, c) + block(32, 32) + block(32, 32) + linear(512),
    "ConvNetW64": lambda c: block(64, c) + block(64, 64) + block(64, 64) + linear(1024),
    "ConvNetW256": lambda c: block(256, c) + block(256, 256) + block(256, 256) + linear(4096),
    "ConvNetW512": lambda c: block(512, c) + block(512, 512) + block(512, 512) + linear(8192),
    "ConvNetW1024": lambda c: block(1024, c) + block(1024, 1024) + block(1024, 1024) + linear(16384),
    "ConvNetKIP": lambda c: conv(1024, c) + conv(1024, 1024) + conv(1024, 1024) + linear(16384),
    "ConvNetNN": lambda c: conv(128, c) + conv(128, 128) + conv(128, 128) + linear(2048),
    "ConvNetLN": lambda c: (conv(128, c) + layernorm(128, 32) + conv(128, 128) + layernorm(128, 16)
                            + conv(128, 128) + layernorm(128, 8) + linear(2048)),
    "ConvNetNP": lambda c: block(128, c) + block(128, 128) + block(128, 128) + linear(131072),
    "ResNet18": lambda c: resnet_body(c) + linear(512),
    "ResNet18BN": lambda c: resnet_body(c) + linear(512),
    "ResNet18_AP": lambda c: resnet_body(c) + linear(4608 if c == 1 else 8192),  # 512·3·3 if channel == 1
    "ResNet18BN_AP": lambda c: resnet_body(c) + linear(4608 if c == 1 else 8192),
    "VGG11": lambda c: (block(64, c) + block(128, 64) + block(256, 128) + block(256, 256) + block(512, 256)
                        + block(512, 512) * 3 + linear(512)),
    "VGG11BN": lambda c: (block(64, c) + block(128, 64) + block(256, 128) + block(256, 256) + block(512, 256)
                          + block(512, 512) * 3 + linear(512)),
    "AlexNet": lambda c: (conv(128, c, k=5) + conv(192, 128, k=5) + conv(256, 192) + conv(192, 256) + conv(192, 192)
                          + linear(3072)),
    "LeNet": lambda c: conv(6, c, k=5) + conv(16, 6, k=5) + linear(400, 120) + linear(120, 84) + linear(84),
    "MLP": lambda c: linear(784 if c == 1 else 3072, 128) + linear(128, 128) + linear(128),
}
GEOMETRIES = [("mnist", 1), ("cifar10", 3)]  # 1 x 28 x 28 and 3 x 32 x 32, 10 classes


@pytest.mark.parametrize("dataset,channels", GEOMETRIES, ids=["28px", "32px"])
@pytest.mark.parametrize("model", sorted(REFERENCE))
def test_our_parameter_layout_is_the_reference_constructors(model, dataset, channels):
    ours = [shape for _, shape in parameter_shapes(model, dataset)]
    assert ours == REFERENCE[model](channels)
    assert reference_mismatch(model, dataset) is None


@pytest.mark.parametrize("dataset,channels", GEOMETRIES, ids=["28px", "32px"])
@pytest.mark.parametrize("depth", [6, 7, 8])
def test_convnets_the_reference_pools_to_nothing_cannot_match_and_are_refused(depth, dataset, channels, tmp_path):
    """Its 32 px head size halved 6-8 times is 0: the reference builds Linear(0, 10); ours skips pools on 1x1 maps."""
    model = f"ConvNetD{depth}"
    reference = block(128, channels) + block(128, 128) * (depth - 1) + linear(0)
    ours = [shape for _, shape in parameter_shapes(model, dataset)]
    assert ours[:-2] == reference[:-2] and ours[-2:] == linear(128) != reference[-2:]
    with pytest.raises(ValueError, match=rf"cannot import {model} buffers for {dataset}: .*Linear\(0, classes\)"):
        import_buffers(tmp_path, dataset, model, "sgd", root=tmp_path)


def test_resnet18_off_32_px_is_refused_and_the_cli_says_why(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"avg_pool2d\(4\) into Linear\(512\).*at 64 px"):
        import_buffers(tmp_path, "tiny-imagenet", "ResNet18", "sgd", root=tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["import-buffers", str(tmp_path), "--dataset", "cifar10", "--model", "ConvNetD6", "--recipe", "sgd"])
    assert exit_.value.code == 2 and "Linear(0, classes), which cannot run" in capsys.readouterr().err


def test_interop_arguments_are_checked_like_config_values_before_anything_is_read_or_written(tmp_path, capsys):
    """A dataset is a registered name (never a path out of results/), a model a network's name, and a buffer folder
    must exist; each is named on the command line, and nothing is written."""
    (tmp_path / "images.pt").write_bytes(b"")
    commands = {
        "unknown dataset '../../../x'; choose one of: digits": [
            "import-synset", str(tmp_path / "images.pt"), "--dataset", "../../../x", "--name", "y"],
        "unknown dataset '../x'; choose one of: digits": [
            "export-buffers", str(tmp_path / "out"), "--dataset", "../x", "--model", "ConvNet", "--recipe", "sgd"],
        "unknown model '../../ConvNet'": [
            "export-buffers", str(tmp_path / "out"), "--dataset", "cifar10", "--model", "../../ConvNet", "--recipe",
            "sgd"],
        f"{tmp_path / 'nowhere'} does not exist or is not a directory; give the folder holding replay_buffer_0.pt": [
            "import-buffers", str(tmp_path / "nowhere"), "--dataset", "cifar10", "--model", "ConvNet", "--recipe",
            "sgd"],
    }
    for message, argv in commands.items():
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--root", str(tmp_path / "root")])
        assert exit_.value.code == 2 and message in capsys.readouterr().err, argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.pt"], "nothing written"


def test_reference_layout_and_its_zca_marker_are_checked(tmp_path):
    assert reference_dir("cifar10", False, "ConvNet") == Path("CIFAR10_NO_ZCA/ConvNet")
    assert reference_dir("cifar100", True, "ConvNet") == Path("CIFAR100/ConvNet")
    assert reference_dir("tiny-imagenet", True, "ConvNetD4") == Path("Tiny/ConvNetD4")
    assert reference_dir("imagenette", False, "ConvNetD5") == Path("ImageNet/imagenette/128/ConvNetD5")
    for folder in ("CIFAR10_NO_ZCA", "CIFAR10", "CIFAR100"):
        (tmp_path / folder / "ConvNet").mkdir(parents=True)
    with pytest.raises(ValueError, match="CIFAR10_NO_ZCA; drop --zca"):
        import_buffers(tmp_path / "CIFAR10_NO_ZCA/ConvNet", "cifar10", "ConvNet", "sgd", zca=True, root=tmp_path)
    with pytest.raises(ValueError, match="so these were made with ZCA; add --zca"):
        import_buffers(tmp_path / "CIFAR10/ConvNet", "cifar10", "ConvNet", "sgd", root=tmp_path)
    with pytest.raises(ValueError, match="laid out as the reference's CIFAR100 buffers, not cifar10"):
        import_buffers(tmp_path / "CIFAR100/ConvNet", "cifar10", "ConvNet", "sgd", zca=True, root=tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# A reference-format buffer made by hand: 2 experts x 3 epochs of the digits ConvNet, snapshots taken as buffer.py
# does ([p.detach().cpu() for p in net.parameters()] after each epoch), in one replay_buffer_0.pt.
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("interop")
    prepared = root / "results/data/digits"
    prepare("digits", root, prepared)
    save_zca(fit_zca(torch.load(prepared / "train.pt", weights_only=True)["images"]), prepared / "zca.pt")
    images, labels = load_split(prepared, "train")
    net = build_model(MODEL, 1, 10, 8)
    buffer = []
    for seed in range(2):
        trajectory, _ = train_expert(images, labels, MODEL, 10, get_recipe("sgd", epochs=3, batch=32), seed)
        snapshots = []
        for row in trajectory:
            torch.nn.utils.vector_to_parameters(row, net.parameters())
            snapshots.append([p.detach().clone() for p in net.parameters()])
        buffer.append(snapshots)
    source = root / "buffers/digits" / MODEL
    source.mkdir(parents=True)
    torch.save(buffer, source / "replay_buffer_0.pt")
    imported = import_buffers(source, "digits", MODEL, "sgd", root=root)
    synset = root / "results/synsets/mtt/digits/ipc1/synset.pt"
    run_distillation(MTT, prepared, synset, synset.with_suffix(".csv"), expert_paths=imported)
    return {"root": root, "prepared": prepared, "source": source, "buffer": buffer, "imported": imported,
            "synset": synset}


def bits(tensor):
    return tensor.contiguous().view(torch.int32)


def test_reference_buffers_import_feed_a_distillation_and_export_back_bit_for_bit(work):
    root, buffer = work["root"], work["buffer"]
    assert work["imported"] == [root / EXPERTS / "0.pt", root / EXPERTS / "1.pt"]
    for k, path in enumerate(work["imported"]):
        trajectory, meta = load_expert(path, expect={"model": MODEL, "zca": False})
        assert trajectory.shape == (4, sum(t.numel() for t in buffer[k][0]))
        for epoch, snapshot in enumerate(buffer[k]):
            assert torch.equal(bits(trajectory[epoch]), bits(torch.cat([t.reshape(-1) for t in snapshot])))
        assert meta["source"] == {"format": "mtt-replay-buffer", "path": str(work["source"] / "replay_buffer_0.pt"),
                                  "sha256": sha256_file(work["source"] / "replay_buffer_0.pt"), "expert": k}
        assert meta["dataset_sha256"] == json.loads((work["prepared"] / "meta.json").read_text())["sha256"]["train.pt"]
        assert meta["recipe"]["name"] == "sgd" and meta["zca"] is False and meta["zca_sha256"] is None
        assert meta["domain_check"]["std"] > meta["domain_check"]["zca"]  # trained on normalised images
    synset = load_synset(work["synset"])
    assert synset["meta"]["experts"] == 2 and torch.isfinite(synset["images"]).all() and synset["lr"] > 0

    exported = export_buffers(root / "exported", "digits", MODEL, "sgd", root=root)
    assert exported == [root / "exported/digits" / MODEL / "replay_buffer_0.pt"]
    again = torch.load(exported[0], weights_only=True)
    assert len(again) == 2 and all(len(expert) == 4 for expert in again)
    for ours, theirs in zip(again, buffer):
        for snapshot, original in zip(ours, theirs):
            assert [t.shape for t in snapshot] == [t.shape for t in original]
            assert all(torch.equal(bits(a), bits(b)) for a, b in zip(snapshot, original))

    other = root / "elsewhere"  # import(export(x)) == x: the same trajectories, the same checksums
    shutil.copytree(work["prepared"], other / "results/data/digits")
    for k, path in enumerate(import_buffers(exported[0].parent, "digits", MODEL, "sgd", root=other)):
        first, second = load_expert(work["imported"][k]), load_expert(path)
        assert torch.equal(bits(first[0]), bits(second[0])) and first[1]["sha256"] == second[1]["sha256"]


def test_a_wrong_shape_or_domain_is_refused_naming_it_and_nothing_is_written(work, tmp_path):
    bad = [[list(snapshot) for snapshot in expert] for expert in work["buffer"]]
    bad[1][2][8] = torch.zeros(10, 127)
    (tmp_path / "buffers").mkdir()
    torch.save(bad, tmp_path / "buffers/replay_buffer_0.pt")
    shutil.copytree(work["prepared"], tmp_path / "results/data/digits")
    with pytest.raises(ValueError, match=r"replay_buffer_0\.pt: expert 1, epoch 2, tensor 8 \(classifier\.weight\) "
                                         r"is torch\.float32 \[10, 127\]; our ConvNetD2W32 for digits expects "
                                         r"float32 \[10, 128\]"):
        import_buffers(tmp_path / "buffers", "digits", MODEL, "sgd", root=tmp_path)
    with pytest.raises(ValueError, match=r"classify \d+\.\d% of 1000 digits training images with our ZCA, as "
                                         r"claimed, and \d+\.\d% without it: .* drop --zca"):
        import_buffers(work["source"], "digits", MODEL, "sgd", zca=True, root=tmp_path)
    assert not list((tmp_path / "results/experts").rglob("*.pt"))
    with pytest.raises(ValueError, match="already holds expert files"):
        import_buffers(work["source"], "digits", MODEL, "sgd", root=work["root"])


def test_an_imported_synthetic_set_evaluates_as_the_same_tensors_from_our_distillation(work, tmp_path):
    ours = load_synset(work["synset"])
    for name, value in (("images_best", ours["images"]), ("labels_best", ours["labels"]),
                        ("lr_best", torch.tensor(ours["lr"]))):
        torch.save(value, tmp_path / f"{name}.pt")
    path = import_synset(tmp_path / "images_best.pt", "digits", "again", labels_path=tmp_path / "labels_best.pt",
                         lr=tmp_path / "lr_best.pt", root=work["root"])
    assert path == work["root"] / "results/synsets/external:again/digits/ipc1/synset.pt"
    imported = load_synset(path)
    assert imported["meta"]["source"]["images"]["sha256"] == sha256_file(tmp_path / "images_best.pt")
    assert (imported["meta"]["kind"], imported["meta"]["ipc"], imported["meta"]["model"]) == ("external", 1, MODEL)
    cfg = EvalConfig(epochs=3)
    theirs = evaluate_synset(path, work["prepared"], MODEL, 0, cfg)
    mine = evaluate_synset(work["synset"], work["prepared"], MODEL, 0, cfg)
    assert theirs["accuracy"] == mine["accuracy"] and theirs["lr"] == mine["lr"] == ours["lr"]
    assert theirs["method"] == "external:again"


def test_a_zca_set_is_checked_against_our_zca_and_bad_sets_are_refused(work, tmp_path):
    root, prepared = work["root"], work["prepared"]
    images = torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.save(images, tmp_path / "images.pt")
    torch.save(zca_invert(images, load_zca(prepared / "zca.pt")), tmp_path / "images_zca.pt")
    raw = torch.load(prepared / "train.pt", weights_only=True)["images"]
    torch.save(zca_invert(images, fit_zca(raw, eps=0.01)), tmp_path / "other_zca.pt")
    with pytest.raises(ValueError, match=r"un-whitens these images .* from .*other_zca\.pt .*whitened differently"):
        import_synset(tmp_path / "images.pt", "digits", "zca_set", zca=True, zca_images=tmp_path / "other_zca.pt",
                      root=root)
    path = import_synset(tmp_path / "images.pt", "digits", "zca_set", lr=0.02, zca=True,
                         zca_images=tmp_path / "images_zca.pt", root=root)
    meta = load_synset(path)["meta"]
    assert meta["zca"] is True and meta["zca_check"]["max_abs_diff"] < 1e-5 and meta["ipc"] == 2
    assert meta["zca_sha256"] == sha256_file(prepared / "zca.pt") and load_synset(path)["lr"] == 0.02
    assert load_synset(path)["labels"].tolist() == [c for c in range(10) for _ in range(2)]  # MTT's label order

    torch.save(torch.randn(20, 10), tmp_path / "soft.pt")
    torch.save(torch.arange(20) % 7, tmp_path / "unbalanced.pt")
    for kwargs, needle in (({"labels_path": tmp_path / "soft.pt"}, "soft labels"),
                           ({"labels_path": tmp_path / "unbalanced.pt"}, "IPC must be the same for every class"),
                           ({"lr": -1.0}, "must be positive"),
                           ({"zca_images": tmp_path / "images_zca.pt"}, "needs --zca"),
                           ({"name": "bad-name"}, "letters, digits and underscores")):
        with pytest.raises(ValueError, match=needle):
            import_synset(tmp_path / "images.pt", "digits", **{"name": "refused", **kwargs}, root=root)
    assert not (root / "results/synsets/external:refused").exists()


def test_snakemake_plans_no_expert_training_for_imported_experts_and_evaluates_an_external_set(work, tmp_path):
    """A config points recipe sgd at the imported experts by their place: the dry run trains none, distils mtt from
    them, and evaluates the external set without distilling it."""
    for part in ("results/data", "results/experts"):
        shutil.copytree(work["root"] / part, tmp_path / part)
    torch.save(load_synset(work["synset"])["images"], tmp_path / "images.pt")
    import_synset(tmp_path / "images.pt", "digits", "released", root=tmp_path)
    config = {"experts": {"count": 2, "overrides": {"epochs": 3}}, "evaluation": {"seeds": 1},
              "distill": {"overrides": {"max_start_epoch": 1}},
              "tables": [{"name": "interop", "cells": [{"method": ["mtt", "external:released"], "dataset": "digits",
                                                        "ipc": 1}]}]}
    run = snakemake(tmp_path, config, "-n", "--cores", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = job_counts(run.stdout)
    assert jobs == {"all": 1, "distill": 1, "evaluate": 2, "table": 1, "plot_images": 1, "plot_cell": 1, "cost": 1}
    assert "results/evals/external:released/digits/ipc1/ConvNetD2W32/default/seed0.json" in run.stdout
