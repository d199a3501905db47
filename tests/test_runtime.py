import pytest
import torch

from distillery.runtime import TF32_MODES, channels_last, set_tf32


def _flags():
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def test_tf32_is_a_no_op_on_the_cpu_and_bad_modes_are_named():
    before = _flags()
    for mode in TF32_MODES:
        assert set_tf32("cpu", mode) is False
    assert _flags() == before
    with pytest.raises(ValueError, match="runtime.tf32='fast' is not one of all, conv, none"):
        set_tf32("cpu", "fast")
    x = torch.randn(2, 3, 4, 4)
    assert channels_last(x) is x


def test_the_default_config_sets_tf32_as_the_references_torch_did():
    from pathlib import Path

    from distillery.plan import load_config

    assert load_config(Path(__file__).resolve().parents[1])["runtime"]["tf32"] == "all"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tf32_modes_set_both_flags_explicitly_and_channels_last_keeps_values():
    before = _flags()
    try:
        for mode, flags in (("conv", (True, False)), ("all", (True, True)), ("none", (False, False))):
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = not flags[0], not flags[1]
            assert set_tf32("cuda:0", mode) is True
            assert _flags() == flags
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
    x = torch.randn(2, 3, 4, 4, device="cuda")
    y = channels_last(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, y)


def test_to_device_moves_and_casts_like_to_on_the_cpu():
    from distillery.runtime import to_device

    v = torch.tensor([1.5, 2.5])
    assert to_device(v, "cpu") is v
    assert torch.equal(to_device(v, "cpu", torch.long), v.to(torch.long))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_device_to_cuda_is_asynchronous_and_exact():
    from distillery.runtime import to_device

    v = torch.randn(1000)
    moved = to_device(v, "cuda", torch.float64)
    assert moved.is_cuda and torch.equal(moved.cpu(), v.double())
