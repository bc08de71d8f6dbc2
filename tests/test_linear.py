"""training.layers.Linear: the CPU fp32 oneDNN path computes what F.linear computes, forward and
backward; it is an nn.Linear module everywhere in the student, so hooks see every call."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training import layers
from training.layers import Linear
from training.masking import tube_mask
from training.models import build_student

needs_onednn = pytest.mark.skipif(not layers.onednn_linear_works(), reason="oneDNN linear not available in this build")


def linear_module(w: torch.Tensor, b: torch.Tensor | None) -> Linear:
    m = Linear(w.shape[1], w.shape[0], bias=b is not None, dtype=w.dtype)
    with torch.no_grad():
        m.weight.copy_(w)
        if b is not None:
            m.bias.copy_(b)
    return m


@needs_onednn
@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_matches_float64(strided, bias):
    g = torch.Generator().manual_seed(0)
    x64 = torch.randn(3, 17, 24, generator=g, dtype=torch.float64)
    if strided:                                   # a transposed (non-contiguous) input, as attention outputs are
        x64 = x64.transpose(0, 1)
    w64 = torch.randn(40, 24, generator=g, dtype=torch.float64) * 0.1
    b64 = torch.randn(40, generator=g, dtype=torch.float64) if bias else None
    gy = torch.randn(*x64.shape[:-1], 40, generator=g, dtype=torch.float64)

    def run(dtype):
        m = linear_module(w64.to(dtype), None if b64 is None else b64.to(dtype))
        x = x64.to(dtype).detach().requires_grad_()
        y = m(x)
        y.backward(gy.to(dtype))
        return [t.double() for t in (y, x.grad, m.weight.grad) + ((m.bias.grad,) if b64 is not None else ())]

    ref = run(torch.float64)                      # F.linear (not fp32)
    got = run(torch.float32)                      # oneDNN
    for r, o in zip(ref, got):
        assert o.shape == r.shape
        assert (o - r).abs().max() <= 1e-5 * r.abs().max()


@needs_onednn
def test_fast_path_is_taken_on_cpu_fp32(monkeypatch):
    m = Linear(8, 5)
    assert m.fast
    called = []
    original = layers._OneDNNLinear.apply
    monkeypatch.setattr(layers._OneDNNLinear, "apply", lambda *a: called.append(1) or original(*a))
    x = torch.randn(4, 8)
    torch.testing.assert_close(m(x), F.linear(x, m.weight, m.bias))
    assert called


def test_linear_falls_back_to_f_linear_when_fast_is_off(monkeypatch):
    m = Linear(8, 5, bias=False)
    m.fast = False
    called = []
    monkeypatch.setattr(layers._OneDNNLinear, "apply", lambda *a: called.append(1))
    x = torch.randn(4, 8)
    torch.testing.assert_close(m(x), F.linear(x, m.weight))
    assert not called


def test_bias_argument_replaces_the_module_bias():
    m = Linear(8, 6, bias=False)
    x, b = torch.randn(3, 8), torch.randn(6)
    torch.testing.assert_close(m(x, b), F.linear(x, m.weight, b))


def test_linear_leaves_bf16_autocast_to_f_linear():
    m = Linear(8, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(torch.randn(4, 8))
    assert y.dtype == torch.bfloat16


def test_state_dict_keys_are_nn_linear_s():
    assert Linear(8, 5).state_dict().keys() == nn.Linear(8, 5).state_dict().keys()
    assert Linear(8, 5, bias=False).state_dict().keys() == {"weight"}


def tiny_student():
    torch.manual_seed(0)
    model = build_student("tiny", size=32, frames=4)                     # token grid (2, 2, 2)
    video = torch.randn(2, 3, 4, 32, 32)
    mask = tube_mask(2, model.cfg.grid, 0.5, torch.Generator().manual_seed(0))
    return model, video, mask


def test_forward_hooks_fire_on_every_linear_of_the_student():
    model, video, mask = tiny_student()
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert all(isinstance(m, Linear) for m in linears.values()), [n for n, m in linears.items() if not isinstance(m, Linear)]
    c = model.cfg
    assert len(linears) == 4 * (c.depth + c.decoder_depth) + 2               # qkv, proj, fc1, fc2 per block; bridge, head
    seen = {}

    def hook(name):
        def record(module, args, output):
            seen.setdefault(name, []).append((args[0].shape, output.shape))
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in linears.items()]
    try:
        out = model(video, mask)
    finally:
        for h in handles:
            h.remove()
    assert out.shape == (2, int(mask[0].sum()), c.target_dim)
    assert seen.keys() == linears.keys()
    for name, calls in seen.items():
        m = linears[name]
        assert len(calls) == 1, name
        (x_shape, y_shape), = calls
        assert x_shape[-1] == m.in_features and y_shape == (*x_shape[:-1], m.out_features), name


def test_fast_off_everywhere_gives_the_same_output_and_gradients():
    model, video, mask = tiny_student()

    def run():
        model.zero_grad()
        out = model(video, mask)
        out.pow(2).mean().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fast_out, fast_grads = run()
    for m in model.modules():
        if isinstance(m, Linear):
            m.fast = False
    plain_out, plain_grads = run()
    torch.testing.assert_close(fast_out, plain_out, rtol=1e-4, atol=1e-5)
    assert fast_grads.keys() == plain_grads.keys()
    for n in fast_grads:
        torch.testing.assert_close(fast_grads[n], plain_grads[n], rtol=1e-3, atol=1e-5)


def test_onednn_check_leaves_the_global_rng_alone():
    layers.onednn_linear_works.cache_clear()
    torch.manual_seed(3)
    layers.onednn_linear_works()
    after = torch.rand(4)
    torch.manual_seed(3)
    torch.testing.assert_close(after, torch.rand(4))
