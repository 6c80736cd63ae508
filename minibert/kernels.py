"""CPU fast paths that the model calls, kept out of model.py so the network reads in one sitting.

Each computes what the plain torch op does (dropout: draws from the same distribution) and
falls back to that op wherever it is not the faster one (GPUs, autocast, other dtypes):

    linear     fp32 CPU matmuls of linear layers on oneDNN (BENCHMARKS.md, "fp32 matmuls")
    dropout    a mask from random 16-bit integers instead of a Bernoulli per element (bench/dropout.py)
    attention  softmax attention written out head by head, forward and backward, where SDPA is slow
               on a CPU: with attention dropout, and in bf16 with gradients (write_out_attention)

Shapes: B batch, T keys, Tq queries, C hidden size, nh heads, hs head size (C = nh * hs).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

# fp32 CPU matmuls of linear layers on oneDNN (see onednn_linear_applies); MINIBERT_FP32_MATMUL=blas,
# or setting this to False, sends every one to F.linear (torch's BLAS).
ONEDNN_FP32 = os.environ.get("MINIBERT_FP32_MATMUL", "onednn").lower() != "blas"
_onednn_linear = getattr(torch.ops.mkldnn, "_linear_pointwise", None)  # None in builds without oneDNN


def onednn_linear_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `linear` sends an fp32 CPU matmul to oneDNN instead of torch's BLAS (MKL). oneDNN's
    fp32 kernels multiply the forward and input-gradient shapes of this model faster on the CPUs
    measured (BENCHMARKS.md, "fp32 matmuls"), and add the bias inside the kernel; the weight
    gradient, whose long dimension is the token count, stays with MKL, which is as fast or faster
    there. Under autocast, on GPUs, in other dtypes and for empty inputs F.linear runs as before."""
    return (_onednn_linear is not None and ONEDNN_FP32 and x.device.type == "cpu"
            and x.dtype == torch.float32 and weight.dtype == torch.float32 and x.numel() > 0
            and not torch.is_autocast_enabled("cpu"))


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return _onednn_linear(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.size(-1))  # (M, out)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = _onednn_linear(grad, weight.t(), None, "none", [], "")  # (..., in)
        if ctx.needs_input_grad[1]:
            dw = g.t() @ x.reshape(-1, x.size(-1))  # (out, in)
        if ctx.needs_input_grad[2]:  # False without a bias
            db = g.sum(0)
        return dx, dw, db


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, with fp32 CPU matmuls on oneDNN (see onednn_linear_applies). (..., in) -> (..., out)."""
    if not onednn_linear_applies(x, weight):
        return F.linear(x, weight, bias)
    return _OneDNNLinear.apply(x, weight, bias)  # without gradients: the forward only, no graph


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Boolean mask, each element True with probability 1 - p, independently: uniform 16-bit
    integers compared with a threshold. torch draws them as full-range int64 words (each holds four
    16-bit outputs), about a quarter of the time torch.rand takes for as many fp32 numbers; p is
    rounded to a multiple of 2^-16 (off by at most 7.6e-6; torch.rand's resolution is 2^-24)."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-2**63, None)
    threshold = round(p * 2**16) - 2**15  # P(int16 < threshold) = p, rounded
    return words.view(torch.int16)[:n].view(shape) >= threshold


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """F.dropout with a cheaper mask on CPUs, in fp32 and bf16: `keep_mask` (random integers
    against a threshold), then one multiply, where torch's kernel draws a Bernoulli per element
    (bench/dropout.py). The same distribution: each element kept with probability 1 - p and scaled
    by 1 / (1 - p); for bf16 input the mask holds 1 / (1 - p) rounded to bf16, as torch's kernel
    keeps its mask in the input's dtype. Other devices and dtypes use torch's kernel."""
    if not training or p == 0 or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16):
        return F.dropout(x, p, training)
    if p == 1:
        return x * 0
    keep = keep_mask(x.shape, p, x.device).to(x.dtype).mul_(1 / (1 - p))  # 0 or 1 / (1 - p)
    return x * keep


class _HeadwiseAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(hs)) with dropout, times v, head by head on strided views of (B, T, C)
    tensors. Batched over heads, the (B, T, nh, hs) -> (B, nh, T, hs) layout of q, k, v and the
    way back have to be copied (bmm needs one batch stride); one head's (B, T, hs) slice is a
    plain strided matrix per row that bmm reads in place, and the heads' outputs are joined once.
    The backward is written out the same way, its gradients landing in (B, T, C) tensors."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, blocked: torch.Tensor | None,
                num_heads: int, dropout_p: float) -> torch.Tensor:
        B, Tq, C = q.shape
        hs = C // num_heads
        scale = hs**-0.5
        keep = keep_mask(torch.Size([num_heads, B, Tq, k.size(1)]), dropout_p, q.device) if dropout_p > 0 else None
        heads, probs, dropped = [], [], []
        for h in range(num_heads):
            cols = slice(h * hs, (h + 1) * hs)
            scores = torch.bmm(q[..., cols], k[..., cols].transpose(1, 2)).mul_(scale)  # (B, Tq, T)
            if blocked is not None:
                scores.masked_fill_(blocked, float("-inf"))
            w = scores.softmax(-1)  # attention weights
            wd = w if keep is None else w.mul(keep[h])  # dropped; the 1 / (1 - p) scale is applied to y
            heads.append(torch.bmm(wd, v[..., cols]))  # (B, Tq, hs)
            probs.append(w)
            dropped.append(wd)
        y = torch.cat(heads, dim=-1)  # (B, Tq, C)
        if keep is not None:
            y.mul_(1 / (1 - dropout_p))
        ctx.num_heads, ctx.dropout_p = num_heads, dropout_p
        ctx.save_for_backward(q, k, v, keep, *probs, *dropped)
        return y

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        q, k, v, keep, *saved = ctx.saved_tensors
        nh, dropout_p = ctx.num_heads, ctx.dropout_p
        probs, dropped = saved[:nh], saved[nh:]
        hs = q.size(-1) // nh
        if keep is not None:
            gy = gy * (1 / (1 - dropout_p))
        gq, gk, gv = [], [], []
        for h in range(nh):
            cols = slice(h * hs, (h + 1) * hs)
            gyh = gy[..., cols]  # (B, Tq, hs)
            gv.append(torch.bmm(dropped[h].transpose(1, 2), gyh))  # (B, T, hs)
            gp = torch.bmm(gyh, v[..., cols].transpose(1, 2))  # (B, Tq, T)
            if keep is not None:
                gp.mul_(keep[h])
            gs = torch.ops.aten._softmax_backward_data(gp, probs[h], -1, probs[h].dtype)  # (B, Tq, T)
            gq.append(torch.bmm(gs, k[..., cols]))  # (B, Tq, hs)
            gk.append(torch.bmm(gs.transpose(1, 2), q[..., cols]))  # (B, T, hs)
        scale = hs**-0.5
        return (torch.cat(gq, dim=-1).mul_(scale), torch.cat(gk, dim=-1).mul_(scale), torch.cat(gv, dim=-1),
                None, None, None)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              num_heads: int, dropout_p: float = 0.0) -> torch.Tensor:
    """What F.scaled_dot_product_attention computes, with heads joined: q (B, Tq, C), k and v
    (B, T, C) with the heads side by side along C, mask None or boolean broadcastable to
    (B, 1, Tq, T) (True = may attend, no row all False) -> (B, Tq, C). Dropout on the attention
    weights draws minibert's cheaper mask (keep_mask)."""
    blocked = None if mask is None else ~mask[:, 0]  # (B or 1, Tq or 1, T)
    with torch.autocast(q.device.type, enabled=False):  # q, k, v already carry autocast's dtype
        return _HeadwiseAttention.apply(q, k, v, blocked, num_heads, dropout_p)


def write_out_attention(q: torch.Tensor, dropout_p: float) -> bool:
    """Whether `attention` beats F.scaled_dot_product_attention here (BENCHMARKS.md, profile): on a
    CPU with attention dropout (SDPA then runs its math path, drawing a Bernoulli per weight) and in
    bf16 with gradients (the CPU flash kernel's bf16 backward is several times slower than the
    matmuls written out). fp32 without dropout, inference and GPUs keep SDPA."""
    if q.device.type != "cpu":
        return False
    return dropout_p > 0 or (q.dtype == torch.bfloat16 and q.requires_grad)
