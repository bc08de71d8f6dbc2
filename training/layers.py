"""Transformer layers of the video ViT, with VideoMAE's parameter names (so checkpoints load).

Shapes: B batch, N tokens, C channels, T frames, H/W pixels.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn


def sincos_table(num_tokens: int, dim: int) -> torch.Tensor:
    """Fixed 1-D sine-cosine position table over the flattened (t, h, w) token index, as VideoMAE.

    Returns float32 (1, num_tokens, dim): channel 2i is sin(pos / 10000^(2i/dim)), 2i+1 its cos."""
    pos = torch.arange(num_tokens, dtype=torch.float64)[:, None]
    i = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(i, 2, rounding_mode="floor") / dim)
    table = torch.where(i % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()[None]


class PatchEmbed(nn.Module):
    """(B, 3, T, H, W) -> (B, N, C) with one token per tubelet x patch x patch cube, ordered (t, h, w)."""

    def __init__(self, dim: int, patch: int = 16, tubelet: int = 2, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b with all three GEMMs (forward, input grad, weight grad) in oneDNN, fp32 throughout."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        x2 = x.reshape(-1, x.shape[-1])                                    # (M, K)
        ctx.save_for_backward(x2, weight)
        ctx.has_bias = bias is not None
        y = torch.ops.mkldnn._linear_pointwise(x2, weight, bias, "none", [], "")
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        x2, weight = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])                              # (M, N)
        gx = gw = gb = None
        # transposed views go in as they are: oneDNN reads strides (faster than copying them)
        if ctx.needs_input_grad[0]:                                        # (M, N) x (N, K)
            gx = torch.ops.mkldnn._linear_pointwise(g2, weight.t(), None, "none", [], "")
            gx = gx.view(*grad.shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[1]:                                        # (N, M) x (M, K)
            gw = torch.ops.mkldnn._linear_pointwise(g2.t(), x2.t(), None, "none", [], "")
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0)
        return gx, gw, gb


@lru_cache(maxsize=1)
def onednn_linear_works() -> bool:
    """oneDNN's fp32 linear is there (x86 builds) and agrees with F.linear. Draws from its own
    generator, so asking never moves the global RNG (model init, drop-path noise)."""
    try:
        g, cpu = torch.Generator().manual_seed(0), torch.device("cpu")
        x, w, b = (torch.randn(*shape, generator=g, device=cpu) for shape in ((5, 7), (3, 7), (3,)))
        return torch.allclose(_OneDNNLinear.apply(x, w, b), F.linear(x, w, b), atol=1e-5)
    except (RuntimeError, AttributeError):
        return False


class Linear(nn.Linear):
    """nn.Linear; on CPU in fp32 through oneDNN, whose AVX-512 fp32 GEMMs measured 440-460 GFLOP/s on
    the 2-core AMD dev VM where MKL's sgemm (AVX2 path on AMD) gave 160-200. Same fp32 arithmetic
    (relative error vs float64 ~1e-6, as MKL's); elsewhere (GPU, autocast, bf16, torch.compile) plain F.linear.

    `fast` (set once here; False = always F.linear, the benchmark's reference baseline) is a plain
    attribute, so state-dict keys are nn.Linear's. forward(x, bias=None): `bias` replaces self.bias
    for this call (Attention's qkv assembles its q/v bias per call)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device, dtype)
        self.fast = onednn_linear_works()

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        bias = self.bias if bias is None else bias
        if (self.fast and x.device.type == "cpu" and x.dtype == torch.float32 and self.weight.dtype == torch.float32
                and not torch.compiler.is_compiling()            # compiled graphs pick their own GEMMs
                and not torch.is_autocast_enabled("cpu")):
            return _OneDNNLinear.apply(x, self.weight, bias)
        return F.linear(x, self.weight, bias)


def attention_matmul(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v with plain matmuls: (B, h, N, d) x3 -> (B, h, N, d).

    Used for bf16/fp16 on CPU only, where SDPA's kernels upcast or run scalar code: measured
    fwd+bwd at (2, 3, 1568, 64) bf16 on 2 cores, 35 ms here vs 58 ms flash and 152 ms math
    (in fp32 flash wins: 80 ms vs 142 ms)."""
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return attn.softmax(dim=-1) @ v


class Attention(nn.Module):
    """Multi-head self-attention; qkv without bias plus separate q/v biases (k has none), as VideoMAE."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.qkv = Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = self.qkv(x, bias)                                            # (B, N, 3C)
        q, k, v = qkv.view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, h, N, d)
        if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
            x = attention_matmul(q, k, v)
        else:
            x = F.scaled_dot_product_attention(q, k, v)                    # (B, h, N, d)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability p (training only)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def init_weights(module: nn.Module) -> None:
    """Xavier-uniform linears with zero bias, unit LayerNorms (VideoMAE's initialisation)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv3d):
        # as a linear layer over the flattened cube
        w = module.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(module.bias)


def flops_per_token_matmul(dim: int, depth: int, tokens: int, mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs per token of `depth` blocks: 2 x (qkv + proj + mlp) weights + attention (QK, AV)."""
    weights = dim * 3 * dim + dim * dim + 2 * dim * int(dim * mlp_ratio)
    return depth * (2.0 * weights + 4.0 * tokens * dim)


