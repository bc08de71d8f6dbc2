"""The CPU fp32 linear through oneDNN computes what F.linear computes, forward and backward."""
import pytest
import torch
import torch.nn.functional as F

from training import layers


@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_matches_float64(strided, bias):
    if not layers._onednn_linear_works():
        pytest.skip("oneDNN linear not available in this build")
    g = torch.Generator().manual_seed(0)
    x64 = torch.randn(3, 17, 24, generator=g, dtype=torch.float64)
    if strided:                                   # a transposed (non-contiguous) input, as attention outputs are
        x64 = x64.transpose(0, 1)
    w64 = torch.randn(40, 24, generator=g, dtype=torch.float64) * 0.1
    b64 = torch.randn(40, generator=g, dtype=torch.float64) if bias else None
    gy = torch.randn(*x64.shape[:-1], 40, generator=g, dtype=torch.float64)

    def run(fn, dtype):
        x = x64.to(dtype).detach().requires_grad_()
        w = w64.to(dtype).detach().requires_grad_()
        b = None if b64 is None else b64.to(dtype).detach().requires_grad_()
        y = fn(x, w, b)
        y.backward(gy.to(dtype))
        return [t.double() for t in (y, x.grad, w.grad) + ((b.grad,) if b is not None else ())]

    ref = run(F.linear, torch.float64)
    got = run(layers.linear, torch.float32)
    for r, o in zip(ref, got):
        assert o.shape == r.shape
        assert (o - r).abs().max() <= 1e-5 * r.abs().max()


def test_linear_falls_back_to_f_linear_when_switched_off(monkeypatch):
    monkeypatch.setattr(layers, "ONEDNN_LINEAR", False)
    called = []
    monkeypatch.setattr(layers._OneDNNLinear, "apply", lambda *a: called.append(1))
    x, w = torch.randn(4, 8), torch.randn(5, 8)
    torch.testing.assert_close(layers.linear(x, w), F.linear(x, w))
    assert not called


def test_linear_leaves_bf16_autocast_to_f_linear():
    x, w = torch.randn(4, 8), torch.randn(5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layers.linear(x, w)
    assert y.dtype == torch.bfloat16
