"""A training step with attention dropout on (zh-small, or --shape bert-base-chinese), three ways
to attend: minibert's written-out attention (`minibert.kernels.attention`: head by head on strided
views of q, k, v, scores, softmax, keep_mask's dropout, times v, backward written out), the same
written out with the heads batched (q, k, v copied into (B, nh, T, hs), autograd's backward), and
F.scaled_dot_product_attention with dropout_p, which on a CPU runs SDPA's math path and draws a
Bernoulli per attention weight. Same model, same batch, variants interleaved round after round, medians reported.

    .venv/bin/python bench/attention_dropout.py [--rounds 9] [--precisions fp32,bf16]   # bf16: native-bf16 CPUs
    .venv/bin/python bench/attention_dropout.py --shape bert-base-chinese --batch-size 8 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from common import SHAPES, environment, interleaved_ms
from train_throughput import build, make_batch, train_step

from minibert import kernels

written_out = kernels.attention


def split(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    B, T, C = x.shape
    return x.view(B, T, num_heads, C // num_heads).transpose(1, 2)  # (B, nh, T, hs)


def join(y: torch.Tensor) -> torch.Tensor:
    return y.transpose(1, 2).flatten(2)  # (B, nh, T, hs) -> (B, T, C)


def heads_batched(q, k, v, mask, num_heads, dropout_p):
    """Written out over all heads at once: matmul copies each transposed operand to one batch stride."""
    q, k, v = (split(x, num_heads) for x in (q, k, v))
    scores = (q * q.size(-1) ** -0.5) @ k.transpose(-2, -1)  # (B, nh, T, T)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    keep = kernels.keep_mask(scores.shape, dropout_p, scores.device).to(scores.dtype) / (1 - dropout_p)
    return join((scores.softmax(-1) * keep) @ v)


def sdpa(q, k, v, mask, num_heads, dropout_p):
    q, k, v = (split(x, num_heads) for x in (q, k, v))
    return join(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=2, help="steps timed per variant per round")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--shape", default="zh-small", choices=sorted(SHAPES))
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    device = torch.device("cpu")
    env = environment(device)
    print(f"torch {env['torch']}, {env['device']}, {env['threads']} threads, load average "
          f"{env['load_average'][0]:.2f}; {args.shape}, batch {args.batch_size} x 128, dropout 0.1")
    model, optimizer = build("minibert", args.shape, device)
    batch = make_batch(args.shape, args.batch_size, 128, device)
    variants = {"per head": written_out, "heads batched": heads_batched, "SDPA dropout_p": sdpa}
    for precision in args.precisions.split(","):

        def step_with(fn, precision=precision):
            def step():
                kernels.attention = fn
                train_step(model, optimizer, batch, device, precision)
            return step

        times = interleaved_ms({name: step_with(fn) for name, fn in variants.items()}, args.rounds, args.steps)
        kernels.attention = written_out
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{precision}: " + ", ".join(f"{k} {v:.0f} ms ({min(times[k]):.0f}-{max(times[k]):.0f})"
                                          for k, v in med.items())
              + "; per head " + ", ".join(f"{med[k] / med['per head']:.3f}x faster than {k}"
                                          for k in variants if k != "per head"))


if __name__ == "__main__":
    main()
