"""Train-step speed and peak memory of the student presets, against a reference-style baseline.

The baseline is the same model as VideoMAE's reference code computes it: attention written out
(softmax(q k^T / sqrt(d)) v materialised in fp32) and PyTorch's default linear layers (MKL sgemm on
CPU), run in the same process on the same inputs,
so the ratio is robust to how busy the machine is. Work per step: forward + backward + AdamW step of
the student on normalized-pixel targets, mask ratio 0.8, no teacher (unless --teacher is given).

    python benchmarks/bench_train.py --preset small --batch-size 2            # CPU: the issue's reference case
    python benchmarks/bench_train.py --preset small --batch-size 2 --precision bf16
    python benchmarks/bench_train.py --preset base --batch-size 32 --teacher  # GPU: clips/s and MFU
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from training.layers import Attention, Linear, flops_per_token_matmul
from training.masking import masked_count, tube_mask
from training.models import build_student, count_parameters, loss_fn
from training.optim import build_optimizer
from training.targets import normalize, pixel_targets

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}   # dense bf16 tensor-core peaks


def explicit_attention(self: Attention, x: torch.Tensor) -> torch.Tensor:
    """The reference formulation: full attention matrix, softmax, then weights times values."""
    B, N, C = x.shape
    bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
    qkv = F.linear(x, self.qkv.weight, bias).reshape(B, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    attn = attn.softmax(dim=-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


def step_flops(model, batch: int, n_visible: int, n_all: int, teacher_flops: float = 0.0) -> float:
    """Model FLOPs of one training step: 3x forward (forward + backward) of the student, plus teacher forward."""
    c = model.cfg
    enc = flops_per_token_matmul(c.dim, c.depth, n_visible, c.mlp_ratio) * n_visible
    dec = flops_per_token_matmul(c.decoder_dim, c.decoder_depth, n_all, c.mlp_ratio) * n_all
    patch = 2.0 * 3 * c.tubelet * c.patch * c.patch * c.dim * n_all
    head = 2.0 * c.decoder_dim * c.target_dim * (n_all - n_visible)
    return batch * (3 * (enc + dec + patch + head) + teacher_flops)


def measure(args, reference: bool, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = build_student(args.preset, **({"frames": args.frames} if args.frames else {}),
                          **({"size": args.size} if args.size else {})).to(device)
    c = model.cfg
    saved = Attention.forward
    if reference:   # the reference formulation: explicit attention
        Attention.forward = explicit_attention
    try:
        opt = build_optimizer(model, 1e-4)
        amp = torch.bfloat16 if device.type == "cuda" or args.precision == "bf16" else None
        teacher, teacher_flops = None, 0.0
        if args.teacher:
            from training.teacher import load_teacher
            teacher = load_teacher(args.teacher_model, "none", c.tubelet, c.grid[1:]).to(device)
            w, L = teacher.width, teacher.grid[0] * teacher.grid[1] + 1
            teacher_flops = c.grid[0] * (flops_per_token_matmul(w, len(teacher.visual.transformer.resblocks), L) * L
                                         + 2.0 * 3 * 16 * 16 * w * L)
            model.decoder.head = Linear(c.decoder_dim, w).to(device)
        if reference:   # and framework-default (MKL) linears
            for m in model.modules():
                if isinstance(m, Linear):
                    m.fast = False
        video = torch.rand(args.batch_size, 3, c.frames, c.size, c.size, device=device)
        gen = torch.Generator().manual_seed(0)
        mask = tube_mask(args.batch_size, c.grid, 0.8, gen).to(device)
        n_vis = c.num_tokens - masked_count(c.grid, 0.8)

        def step():
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                with torch.no_grad():
                    target = teacher(video) if teacher is not None else pixel_targets(video, c.tubelet, c.patch)
                loss = loss_fn(model, normalize(video), target, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(args.warmup):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        out = {"preset": args.preset, "reference_attention": reference, "batch": args.batch_size,
               "precision": "bf16 autocast" if amp else "fp32",
               "frames": c.frames, "size": c.size, "params_M": count_parameters(model) / 1e6,
               "step_s": med, "clips_per_s": args.batch_size / med,
               "tflops": step_flops(model, args.batch_size, n_vis, c.num_tokens, teacher_flops) / med / 1e12}
        if device.type == "cuda":
            out["peak_mem_GiB"] = torch.cuda.max_memory_allocated() / 2**30
            name = torch.cuda.get_device_name()
            peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
            if peak:
                out["mfu"] = out["tflops"] / peak
        else:
            import resource
            out["peak_rss_GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        return out
    finally:
        Attention.forward = saved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--teacher", action="store_true", help="Add a random-weight CLIP teacher (same FLOPs as the real one).")
    p.add_argument("--teacher-model", default="ViT-B-16")
    p.add_argument("--no-reference", action="store_true", help="Skip the reference-attention baseline.")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="CPU only (GPUs always use bf16 autocast): bf16 autocast for CPUs with native bf16 (AVX512-BF16/AMX).")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for ref in ([False] if args.no_reference else [True, False]):
        rows.append(measure(args, ref, device))
        print(json.dumps(rows[-1]))
    if len(rows) == 2:
        print(f"speed-up over reference attention: {rows[0]['step_s'] / rows[1]['step_s']:.2f}x "
              f"({rows[0]['step_s']:.3f} s -> {rows[1]['step_s']:.3f} s per step)")


if __name__ == "__main__":
    main()
