"""Tests of distillery.data: preparation, checksums, normalisation, ZCA, and the data-missing errors."""
from __future__ import annotations

import hashlib
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distillery.data import (DATASETS, DataMissingError, HostSplit, class_indices, fit_zca, get_spec, index_device,
                             load_meta, load_split, load_zca, prepare, save_zca, split_on_device, to_pixels, zca_apply,
                             zca_invert)
from distillery.data import sources


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    prepare("digits", out / "raw", out / "prepared")
    return out / "prepared"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- registry ---------------------------------------------------------------------------------------------------

def test_registry_has_all_names_and_unknown_name_lists_them():
    expected = {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "tiny-imagenet", "imagenet-64",
                "imagenette", "imagewoof", "imagemeow", "imagesquawk", "imagefruit", "imageyellow"}
    assert set(DATASETS) == expected
    assert get_spec("cifar100").mean == get_spec("cifar10").mean
    assert (get_spec("imagewoof").size, get_spec("tiny-imagenet").num_classes) == (128, 200)
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'; choose one of: digits, .*cifar10, .*imageyellow"):
        get_spec("cifar11")
    with pytest.raises(ValueError, match="cifar11"):
        prepare("cifar11", "unused", "unused")


# --- digits -----------------------------------------------------------------------------------------------------

def test_digits_prepare_writes_uint8_splits_with_all_classes_and_checksums(digits_dir):
    meta = load_meta(digits_dir)
    train = torch.load(digits_dir / "train.pt", weights_only=True)
    test = torch.load(digits_dir / "test.pt", weights_only=True)
    assert train["images"].shape == (1347, 1, 8, 8) and test["images"].shape == (450, 1, 8, 8)
    assert train["images"].dtype == torch.uint8 and train["labels"].dtype == torch.int64
    assert train["images"].is_contiguous() and int(train["images"].max()) == 255
    assert torch.equal(torch.bincount(train["labels"]).gt(0), torch.ones(10, dtype=torch.bool))
    assert torch.equal(torch.bincount(test["labels"]).gt(0), torch.ones(10, dtype=torch.bool))
    assert (meta["n_train"], meta["n_test"], meta["num_classes"], meta["channels"], meta["size"]) == (1347, 450, 10, 1, 8)
    assert meta["classes"] == [str(k) for k in range(10)]
    assert meta["sha256"] == {"train.pt": sha(digits_dir / "train.pt"), "test.pt": sha(digits_dir / "test.pt")}
    assert sorted(p.name for p in digits_dir.iterdir()) == ["meta.json", "test.pt", "train.pt"]  # no temp files left
    x01 = train["images"].double() / 255
    assert meta["mean"][0] == pytest.approx(x01.mean().item()) and meta["std"][0] == pytest.approx(x01.std(correction=0).item())


def test_digits_split_is_deterministic(digits_dir, tmp_path):
    prepare("digits", tmp_path / "raw", tmp_path / "again")
    for name in ("train.pt", "test.pt", "meta.json"):
        assert (tmp_path / "again" / name).read_bytes() == (digits_dir / name).read_bytes()


def test_load_split_normalises_train_to_zero_mean_unit_std(digits_dir):
    x, y = load_split(digits_dir, "train")
    assert x.dtype == torch.float32 and x.shape == (1347, 1, 8, 8) and y.dtype == torch.int64
    assert x.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert x.std(correction=0).item() == pytest.approx(1.0, abs=1e-5)
    raw = torch.load(digits_dir / "train.pt", weights_only=True)["images"]
    assert torch.allclose(to_pixels(x, load_meta(digits_dir), None), raw.float() / 255, atol=1e-6)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        load_split(digits_dir, "val")


def test_load_split_with_zca_whitens_unnormalised_pixels(digits_dir):
    raw = torch.load(digits_dir / "train.pt", weights_only=True)["images"]
    zca = fit_zca(raw)
    x, _ = load_split(digits_dir, "train", zca=zca)
    assert torch.allclose(x, zca_apply(raw.float() / 255, zca))  # x/255 then ZCA, no mean/std step
    assert torch.allclose(to_pixels(x, load_meta(digits_dir), zca), raw.float() / 255, atol=1e-4)


TINY_GPU_GB = 1e-6  # a quarter of it is below digits' 1 MB load peak: forces the host path


@pytest.mark.parametrize("whiten", [False, True])
def test_host_split_batches_equal_the_device_split_exactly(digits_dir, whiten):
    zca = fit_zca(torch.load(digits_dir / "train.pt", weights_only=True)["images"]) if whiten else None
    device_x, device_y = load_split(digits_dir, "train", zca=zca)
    host_x, host_y = load_split(digits_dir, "train", zca=zca, gpu_memory_gb=TINY_GPU_GB)
    assert isinstance(host_x, HostSplit) and not isinstance(device_x, HostSplit)
    assert host_x.images.dtype == torch.uint8 and torch.equal(host_y, device_y)
    assert (len(host_x), host_x.shape, host_x.dtype, host_x.device) == (len(device_x), device_x.shape, torch.float32,
                                                                          device_x.device)
    idx = torch.randperm(len(device_x), generator=torch.Generator().manual_seed(0))[:256]
    for index in (idx, slice(100, 1124), slice(None)):  # a shuffled batch, accuracy's 1024-slices, the whole split
        assert torch.equal(host_x[index], device_x[index])  # bit for bit, not approximately
    assert index_device(host_x) == torch.device("cpu") and index_device(device_x) == device_x.device
    with pytest.raises(TypeError, match="1-D index tensor or a slice, got int"):
        host_x[3]


def test_split_placement_is_a_quarter_of_the_declared_gpu():
    imagenet = get_spec("imagenet-64")
    pixels = 3 * 64 * 64
    assert not split_on_device(imagenet.train_size, pixels, 80)  # 176 GB to load whole
    assert split_on_device(imagenet.test_size, pixels, 80)       # 6.9 GB
    assert split_on_device(imagenet.train_size, pixels, None)    # no GPU declared: today's path
    quarter = 2**30 // 12  # images of one pixel whose 12-byte load is exactly a quarter of a 4 GB GPU
    assert split_on_device(quarter, 1, 4) and not split_on_device(quarter + 1, 1, 4)
    with pytest.raises(ValueError, match="uint8 images on the CPU, got torch.float32"):
        HostSplit(torch.zeros(2, 1, 8, 8), {}, None, "cpu")


def test_class_indices_groups_samples_by_label():
    labels = torch.tensor([2, 0, 2, 1, 0, 2])
    groups = class_indices(labels, 4)
    assert [g.tolist() for g in groups] == [[1, 4], [3], [0, 2, 5], []]
    with pytest.raises(ValueError, match="num_classes is 2"):
        class_indices(labels, 2)


def test_truncated_split_file_is_rejected_with_its_name(digits_dir, tmp_path):
    prepare("digits", tmp_path / "raw", tmp_path / "broken")
    path = tmp_path / "broken" / "train.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError,
                       match=r"train\.pt.*rerun its prepare_data job: `snakemake --force .*broken/meta\.json --cores 1`"):
        load_split(tmp_path / "broken", "train")
    load_split(tmp_path / "broken", "test")  # the untouched split still loads


def test_failed_prepare_leaves_no_files(tmp_path, monkeypatch):
    real_save = torch.save
    calls = []

    def save_then_fail(obj, f):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        prepare("digits", tmp_path / "raw", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


# --- ZCA --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_images() -> torch.Tensor:
    return torch.randint(0, 256, (200, 3, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_zca_round_trip_is_exact(small_images, tmp_path):
    zca = fit_zca(small_images)
    assert zca["shape"] == [3, 4, 4] and zca["eps"] == 0.1
    assert zca["mean"].shape == (48,) and zca["transform"].shape == (48, 48) and zca["inverse"].shape == (48, 48)
    x = small_images.float() / 255
    assert torch.allclose(zca_invert(zca_apply(x, zca), zca), x, atol=1e-4)
    save_zca(zca, tmp_path / "zca.pt")
    loaded = load_zca(tmp_path / "zca.pt")
    assert torch.equal(zca_apply(x, loaded), zca_apply(x, zca)) and loaded["shape"] == [3, 4, 4]
    with pytest.raises(ValueError, match=r"\[3, 4, 4\]"):
        zca_apply(torch.zeros(2, 3, 8, 8), zca)


def test_zca_is_partial_whitening_with_variances_s_over_s_plus_eps(small_images):
    zca = fit_zca(small_images, eps=0.1)
    x = (small_images.double() / 255).reshape(200, -1).numpy()
    s = np.linalg.eigvalsh(np.cov(x, rowvar=False))  # unbiased covariance, ascending eigenvalues
    white = zca_apply(small_images.float() / 255, zca).reshape(200, -1).double().numpy()
    got = np.linalg.eigvalsh(np.cov(white, rowvar=False))
    np.testing.assert_allclose(got, s / (s + 0.1), atol=1e-4)
    assert 0.3 < got.mean() < 0.6  # about 0.083 / (0.083 + 0.1) for uniform pixels: far from full whitening


def test_zca_matches_kornia_zcawhitening(small_images):
    from kornia.enhance import ZCAWhitening

    x = small_images.float() / 255
    reference = ZCAWhitening(eps=0.1, compute_inv=True).fit(x)
    zca = fit_zca(small_images)
    assert torch.allclose(zca_apply(x, zca), reference(x), atol=1e-5)
    assert torch.allclose(zca_invert(reference(x), zca), reference.inverse_transform(reference(x)), atol=1e-5)


# --- Fashion-MNIST and torchvision datasets --------------------------------------------------------------------

@pytest.mark.skipif(not sources.DEBIAN_FASHION_MNIST.is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package(tmp_path):
    meta = prepare("fashion-mnist", tmp_path / "raw", tmp_path / "fm")
    train = torch.load(tmp_path / "fm" / "train.pt", weights_only=True)
    test = torch.load(tmp_path / "fm" / "test.pt", weights_only=True)
    assert train["images"].shape == (60000, 1, 28, 28) and test["images"].shape == (10000, 1, 28, 28)
    assert train["labels"].unique().tolist() == list(range(10)) and test["labels"].unique().tolist() == list(range(10))
    assert torch.bincount(train["labels"]).tolist() == [6000] * 10
    assert (train["images"].double().mean() / 255).item() == pytest.approx(0.2860, abs=1e-3)  # parsed, not garbage
    assert meta["mean"] == [0.2861] and meta["classes"][0] == "T-shirt/top" and meta["source"].startswith("/usr/share")


def test_idx_files_in_data_dir_take_precedence(tmp_path):
    folder = tmp_path / "raw" / "fashion-mnist"
    folder.mkdir(parents=True)

    def write_idx(name: str, array: np.ndarray) -> None:
        header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
        (folder / name).write_bytes(header + array.astype(np.uint8).tobytes())

    images = np.arange(4 * 28 * 28).reshape(4, 28, 28) % 256
    for prefix in ("train", "t10k"):
        write_idx(f"{prefix}-images-idx3-ubyte", images)
        write_idx(f"{prefix}-labels-idx1-ubyte", np.array([3, 1, 4, 1]))
    meta = prepare("fashion-mnist", tmp_path / "raw", tmp_path / "out")
    train = torch.load(tmp_path / "out" / "train.pt", weights_only=True)
    assert meta["n_train"] == 4 and meta["source"] == str(folder)
    assert torch.equal(train["images"][:, 0], torch.from_numpy(images.astype(np.uint8)))
    assert train["labels"].tolist() == [3, 1, 4, 1]


def test_cifar10_without_files_or_network_raises_data_missing(tmp_path, monkeypatch):
    import torchvision.datasets.cifar

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", no_network)
    with pytest.raises(DataMissingError) as caught:
        prepare("cifar10", tmp_path, tmp_path / "out")
    message = str(caught.value)
    assert str(tmp_path / "cifar10") in message and "cifar-10-python.tar.gz" in message and "download failed" in message
    assert isinstance(caught.value, FileNotFoundError) and not (tmp_path / "out").exists()


# --- image folders ----------------------------------------------------------------------------------------------

COLOURS = [(200, 30, 30), (30, 30, 200)]


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG", quality=95)


def make_tiny(root: Path, val_layout: str) -> None:
    """Two classes, 3 train images each, 2 val images each, val in the 'flat' (stock) or 'folders' layout."""
    wnids = ["n02", "n01"]  # deliberately unsorted: class order must be sorted wnids
    for wnid in wnids:
        colour = COLOURS[sorted(wnids).index(wnid)]
        for i in range(3):
            write_image(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", colour)
    lines = []
    for j, wnid in enumerate(["n01", "n02", "n02", "n01"]):
        colour = COLOURS[sorted(wnids).index(wnid)]
        if val_layout == "flat":
            write_image(root / "val" / "images" / f"val_{j}.JPEG", colour)
            lines.append(f"val_{j}.JPEG\t{wnid}\t0\t0\t63\t63")
        else:
            write_image(root / "val" / wnid / f"val_{j}.JPEG", colour)
    if lines:
        (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("val_layout", ["flat", "folders"])
def test_tiny_imagenet_from_image_folders(tmp_path, val_layout):
    make_tiny(tmp_path / "raw" / "tiny-imagenet-200", val_layout)
    meta = prepare("tiny-imagenet", tmp_path / "raw", tmp_path / "out")
    train = torch.load(tmp_path / "out" / "train.pt", weights_only=True)
    test = torch.load(tmp_path / "out" / "test.pt", weights_only=True)
    assert train["images"].shape == (6, 3, 64, 64) and test["images"].shape == (4, 3, 64, 64)
    assert train["labels"].tolist() == [0, 0, 0, 1, 1, 1]
    expected_test = [0, 1, 1, 0] if val_layout == "flat" else [0, 0, 1, 1]  # annotation order vs sorted folders
    assert test["labels"].tolist() == expected_test
    assert meta["classes"] == ["n01", "n02"] and meta["num_classes"] == 2 and meta["mean"] == [0.485, 0.456, 0.406]
    colours = torch.tensor(COLOURS, dtype=torch.float32)
    mean_colour = test["images"].float().mean(dim=(2, 3))
    assert torch.allclose(mean_colour, colours[test["labels"]], atol=3)  # each image decoded with its own label


def test_tiny_imagenet_wrong_layout_explains_expected_layout(tmp_path):
    root = tmp_path / "raw" / "tiny-imagenet-200"
    with pytest.raises(DataMissingError, match="train/<wnid>/images"):
        prepare("tiny-imagenet", tmp_path / "raw", tmp_path / "out")
    make_tiny(root, "folders")
    (root / "val" / "n03").mkdir()  # a val class that is not a train class
    with pytest.raises(DataMissingError, match=str(root / "val")):
        prepare("tiny-imagenet", tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_imagenet_subset_maps_imagenet_indices_and_resizes_to_128(tmp_path):
    root = tmp_path / "raw" / "imagenet"
    wnids = [f"n{i:08d}" for i in range(1000)]
    for wnid in wnids:
        (root / "train" / wnid).mkdir(parents=True)
    ids = (0, 217, 482, 491, 497, 566, 569, 571, 574, 701)
    for label, index in enumerate(ids):
        colour = (label * 20, 100, 255 - label * 20)
        write_image(root / "train" / wnids[index] / "a.JPEG", colour, size=(200, 150))
        write_image(root / "val" / wnids[index] / "b.JPEG", colour, size=(150, 200))
    meta = prepare("imagenette", tmp_path / "raw", tmp_path / "out")
    train = torch.load(tmp_path / "out" / "train.pt", weights_only=True)
    assert train["images"].shape == (10, 3, 128, 128) and train["labels"].tolist() == list(range(10))
    assert meta["n_test"] == 10 and meta["classes"][0] == "tench" and meta["wnids"][1] == wnids[217]
    assert abs(train["images"][3, 0].float().mean().item() - 60) < 3
    (root / "train" / wnids[999]).rmdir()
    with pytest.raises(DataMissingError, match="999 class folders, expected 1000"):
        prepare("imagenette", tmp_path / "raw", tmp_path / "out2")


def test_imagenet_subset_images_are_squashed_whole_to_128_not_cropped(tmp_path):
    # the references resize the whole image to (128, 128) (tuple Resize on the tensor): a 200x100 image whose
    # left quarter is red keeps a red left quarter; Resize(128) + CenterCrop would have cut the red away
    from distillery.data.folders import decode_images

    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[:, :50] = (255, 0, 0)
    pixels[:, 50:] = (0, 0, 255)
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    out = decode_images([path], 128)[0].float()
    assert out.shape == (3, 128, 128)
    assert torch.all(out[0, :, :31] == 255) and torch.all(out[2, :, :31] == 0)   # red: x < 32 of 128
    assert torch.all(out[0, :, 33:] == 0) and torch.all(out[2, :, 33:] == 255)   # blue beyond
    assert torch.equal(out[:, 0], out[:, 127])  # no vertical structure: rows all alike
