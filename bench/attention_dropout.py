"""A zh-small training step with attention dropout on: minibert's written-out attention (scores,
softmax, minibert's Dropout mask, times v) against the same model calling
F.scaled_dot_product_attention with dropout_p, which on a CPU runs SDPA's math path and draws a
Bernoulli per attention weight. Same model, same batch, variants interleaved round after round,
medians reported.

    .venv/bin/python bench/attention_dropout.py [--rounds 9] [--precisions fp32,bf16]   # bf16: native-bf16 CPUs
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from common import environment
from train_throughput import build, make_batch, train_step

from minibert import model as modeling

written_out = modeling.attention


def sdpa(q, k, v, mask, dropout):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout.p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=2, help="steps timed per variant per round")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    device = torch.device("cpu")
    env = environment(device)
    print(f"torch {env['torch']}, {env['device']}, {env['threads']} threads, load average "
          f"{env['load_average'][0]:.2f}; zh-small, batch {args.batch_size} x 128, dropout 0.1")
    model, optimizer = build("minibert", "zh-small", device)
    batch = make_batch("zh-small", args.batch_size, 128, device)
    variants = {"written out": written_out, "SDPA dropout_p": sdpa}
    for precision in args.precisions.split(","):
        times: dict[str, list[float]] = {k: [] for k in variants}
        names = list(variants)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                modeling.attention = variants[name]
                train_step(model, optimizer, batch, device, precision)  # warm-up after the switch
                start = time.perf_counter()
                for _ in range(args.steps):
                    train_step(model, optimizer, batch, device, precision)
                times[name].append((time.perf_counter() - start) / args.steps * 1e3)
        modeling.attention = written_out
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{precision}: " + ", ".join(f"{k} {v:.0f} ms ({min(times[k]):.0f}-{max(times[k]):.0f})"
                                          for k, v in med.items())
              + f"; written out {med['SDPA dropout_p'] / med['written out']:.3f}x faster")


if __name__ == "__main__":
    main()
