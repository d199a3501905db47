import pytest
import torch

from distillery.runtime import channels_last, cuda_speedups


def _flags():
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)


def test_cuda_speedups_are_a_no_op_on_the_cpu():
    before = _flags()
    assert cuda_speedups("cpu") is False
    assert cuda_speedups("cpu", tf32=False) is False
    assert _flags() == before
    x = torch.randn(2, 3, 4, 4)
    assert channels_last(x) is x


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_speedups_toggle_tf32_and_channels_last_keeps_values():
    before = _flags()
    try:
        assert cuda_speedups("cuda", tf32=True) is True
        assert _flags() == (True, True, True)
        assert cuda_speedups("cuda:0", tf32=False) is True
        assert _flags() == (False, False, False)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = before
    x = torch.randn(2, 3, 4, 4, device="cuda")
    y = channels_last(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, y)


def test_to_device_moves_and_casts_like_to_on_the_cpu():
    from distillery.runtime import to_device

    v = torch.tensor([1.5, 2.5])
    assert to_device(v, "cpu") is v
    assert torch.equal(to_device(v, "cpu", torch.long), v.to(torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_device_to_cuda_is_asynchronous_and_exact():
    from distillery.runtime import to_device

    v = torch.randn(1000)
    moved = to_device(v, "cuda", torch.float64)
    assert moved.is_cuda and torch.equal(moved.cpu(), v.double())
