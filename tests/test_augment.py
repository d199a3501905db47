"""DSA: reproducible from a CPU generator, each group does what the reference formulas say, gradients reach x."""
from __future__ import annotations

import math

import pytest
import torch

from distillery.augment import (DEFAULT_STRATEGY, GROUPS, DSAParams, affine, brightness, contrast, cutout, dsa,
                                rotate_theta, saturation, scale_theta, translate)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(8, 3, 16, 16, generator=gen(123))


def test_same_seed_same_output_different_seed_different_output(x: torch.Tensor) -> None:
    a = torch.stack([dsa(x, gen(7)) for _ in range(2)])
    assert torch.equal(a[0], a[1])
    outs = [dsa(x, gen(seed)) for seed in range(6)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])
    for group in GROUPS:  # also per group: only the per-sample parameters differ
        assert not torch.equal(dsa(x, gen(1), group), dsa(x, gen(2), group))


def test_one_group_per_call_drawn_uniformly(x: torch.Tensor) -> None:
    """Draw order: first the group index (uniform over the strategy's groups), then that group's parameters."""
    names = DEFAULT_STRATEGY.split("_")
    counts = dict.fromkeys(names, 0)
    for seed in range(120):
        g = gen(seed)
        name = names[int(torch.randint(len(names), (1,), generator=g))]
        assert torch.equal(dsa(x, gen(seed)), GROUPS[name](x, g, DSAParams()))
        counts[name] += 1
    assert min(counts.values()) >= 10  # each of the 6 groups about 20 times


def test_none_strategy_returns_x_unchanged(x: torch.Tensor) -> None:
    g = gen(0)
    state = g.get_state()
    assert dsa(x, g, "none") is x
    assert dsa(x, g, "") is x
    assert torch.equal(g.get_state(), state)  # no random numbers consumed


def test_unknown_group_raises_naming_allowed_groups(x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="'jitter'.*allowed groups: color, crop, cutout, flip, scale, rotate"):
        dsa(x, gen(0), "color_jitter")


def test_flip_gives_x_or_its_mirror_per_sample(x: torch.Tensor) -> None:
    out = dsa(x, gen(3), "flip")
    flipped = [torch.equal(o, f) for o, f in zip(out, x.flip(3))]
    same = [torch.equal(o, s) for o, s in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same))
    assert any(flipped) and any(same)  # p = 0.5 over 8 samples with this seed


def shifted_reference(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[i, j] = img[i + dy, j + dx], zero-filled, computed with torch.roll and a mask."""
    h, w = img.shape[-2:]
    out = torch.roll(img, shifts=(-dy, -dx), dims=(-2, -1)).clone()
    if dy > 0:
        out[..., h - dy:, :] = 0
    if dy < 0:
        out[..., :-dy, :] = 0
    if dx > 0:
        out[..., :, w - dx:] = 0
    if dx < 0:
        out[..., :, :-dx] = 0
    return out


def test_translate_matches_roll_with_zero_fill(x: torch.Tensor) -> None:
    dy = torch.tensor([0, 1, -2, 2, -1, 0, 2, -2])
    dx = torch.tensor([0, -1, 2, 0, 1, 2, -2, -1])
    out = translate(x, dy, dx)
    for b in range(x.shape[0]):
        assert torch.equal(out[b], shifted_reference(x[b], int(dy[b]), int(dx[b])))


def test_crop_group_is_a_bounded_shift_of_each_image(x: torch.Tensor) -> None:
    out = dsa(x, gen(11), "crop")
    assert out.shape == x.shape
    pad = int(16 * 0.125 + 0.5)  # 2 px at 16 px (4 px at 32 px)
    for b in range(x.shape[0]):
        matches = [(dy, dx) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)
                   if torch.equal(out[b], shifted_reference(x[b], dy, dx))]
        assert len(matches) == 1


def test_cutout_zeroes_a_square_of_half_the_side(x: torch.Tensor) -> None:
    side = int(16 * 0.5 + 0.5)
    ones = torch.ones(3, 1, 16, 16)
    inside = cutout(ones, torch.tensor([8, 4, 12]), torch.tensor([8, 4, 11]), side)
    assert (inside == 0).sum(dim=(1, 2, 3)).tolist() == [64, 64, 64]
    assert inside[0, 0, 4:12, 4:12].eq(0).all()  # rows/cols centre - side//2 .. + side - 1
    clipped = cutout(ones, torch.tensor([0, 16, 1]), torch.tensor([0, 16, 8]), side)
    assert (clipped == 0).sum(dim=(1, 2, 3)).tolist() == [16, 16, 40]  # 4x4, 4x4, 5x8
    out = dsa(x + 1.0, gen(4), "cutout")  # strictly positive input: zeros are exactly the cut pixels
    zeros = (out == 0).all(dim=1).sum(dim=(1, 2))  # the same square for every channel
    assert (zeros <= side * side).all() and (zeros >= (side // 2) ** 2).all()
    assert torch.equal(out[out != 0], (x + 1.0)[out != 0])


def test_color_formulas_by_hand() -> None:
    img = torch.tensor([[[[0.0, 1.0]], [[0.5, 0.5]], [[1.0, 0.0]]]])  # [1, 3, 1, 2]
    u = torch.tensor([0.25])
    assert torch.allclose(brightness(img, u, 1.0), img - 0.25)
    # per-pixel channel mean is 0.5 for both pixels; factor u * 2 = 0.5
    assert torch.allclose(saturation(img, u, 2.0), torch.tensor([[[[0.25, 0.75]], [[0.5, 0.5]], [[0.75, 0.25]]]]))
    img2 = torch.tensor([[[[0.0, 2.0]]]])  # image mean 1.0; factor u + 0.5 = 0.75
    assert torch.allclose(contrast(img2, u, 0.5), torch.tensor([[[[0.25, 1.75]]]]))


def test_color_group_equals_the_three_ops_in_sequence(x: torch.Tensor) -> None:
    g = gen(9)
    u = torch.rand(3, 8, generator=gen(9))
    expected = contrast(saturation(brightness(x, u[0], 1.0), u[1], 2.0), u[2], 0.5)
    assert torch.allclose(GROUPS["color"](x, g, DSAParams()), expected)


def test_scale_and_rotate_identity_and_exact_cases() -> None:
    img = torch.rand(2, 3, 9, 9, generator=gen(0))
    one = torch.ones(2)
    assert torch.allclose(affine(img, scale_theta(one, one)), img, atol=1e-5)
    assert torch.allclose(affine(img, rotate_theta(torch.zeros(2))), img, atol=1e-5)
    # a quarter turn maps the grid exactly onto itself (align_corners=True): a transpose plus a flip. MTT's matrix
    # [[cos, -sin], [sin, cos]] (utils.py:572-573) samples output (x, y) at input (-y, x): out[r, c] = img[c, W-1-r]
    quarter = affine(img, rotate_theta(torch.full((2,), math.pi / 2)))
    assert torch.allclose(quarter, img.transpose(2, 3).flip(2), atol=1e-5)
    for group in ("scale", "rotate"):
        out = dsa(img, gen(1), group)
        assert out.shape == img.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("group", list(GROUPS))
def test_gradient_reaches_x_for_every_group(group: str, x: torch.Tensor) -> None:
    xs = x.clone().requires_grad_(True)
    weights = torch.rand(x.shape, generator=gen(1))
    (dsa(xs, gen(2), group) * weights).sum().backward()
    assert xs.grad is not None and torch.isfinite(xs.grad).all() and xs.grad.abs().sum() > 0


def test_cpu_generator_drives_augmentation_on_any_device(x: torch.Tensor) -> None:
    """Parameters are drawn on the CPU, so float64 data (a stand-in for another device) sees the same draws."""
    for group in GROUPS:
        a = dsa(x, gen(3), group)
        b = dsa(x.double(), gen(3), group)
        assert torch.allclose(a.double(), b, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_seed_same_augmentation_on_cpu_and_gpu(x: torch.Tensor) -> None:
    for group in GROUPS:
        cpu = dsa(x, gen(3), group)
        gpu = dsa(x.cuda(), gen(3), group)
        assert torch.allclose(cpu, gpu.cpu(), atol=1e-5)
