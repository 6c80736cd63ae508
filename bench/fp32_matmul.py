"""fp32 matmuls on a CPU: torch's BLAS (MKL) against oneDNN, per matmul and per training step.

minibert.kernels.linear sends an fp32 CPU linear layer's forward and input-gradient matmuls to oneDNN
(bias added inside the kernel) and keeps the weight gradient on MKL. This script shows where that
choice comes from and checks it on the CPU it runs on:

1. the three matmuls of one linear layer (forward x W^T + b, input gradient dY W, weight gradient
   dY^T x) at the token counts and widths of the zh-small and bert-base shapes, each on MKL and on
   oneDNN (torch.ops.mkldnn._linear_pointwise), interleaved, minimum over rounds;
2. a whole fp32 training step (forward with the sparse MLM head, backward, AdamW) of minibert with
   `minibert.kernels.ONEDNN_FP32` on and off, on the same model and batch, interleaved: the zh-small
   fine-tuning shape (32 x 128, dropout 0.1) and the pre-training recipe (128 x 64, dropout 0).

    .venv/bin/python bench/fp32_matmul.py [--rounds 7] [--skip-steps]

If oneDNN loses on your CPU, `MINIBERT_FP32_MATMUL=blas` turns it off (README, "Performance").
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F
from common import environment, interleaved_ms, markdown_table
from train_throughput import build, make_batch, train_step

from minibert import kernels

onednn = torch.ops.mkldnn._linear_pointwise

# (tokens, in, out): zh-small's qkv, attention output, FFN up and down at 32 x 128 tokens; the
# pre-training recipe's FFN up at 128 x 64; the vocabulary projection at the ~15% labelled tokens;
# bert-base's FFN up and down at 8 x 128.
MATMULS = [(4096, 256, 768), (4096, 256, 256), (4096, 256, 1024), (4096, 1024, 256), (8192, 256, 1024),
           (640, 256, 21128), (1024, 768, 3072), (1024, 3072, 768)]


def matmul_table(rounds: int) -> list[list]:
    rows = []
    for M, K, N in MATMULS:
        x, w, b, dy = torch.randn(M, K), torch.randn(N, K), torch.randn(N), torch.randn(M, N)
        variants = {
            "forward, MKL": lambda: F.linear(x, w, b),
            "forward, oneDNN": lambda: onednn(x, w, b, "none", [], ""),
            "input grad, MKL": lambda: dy @ w,
            "input grad, oneDNN": lambda: onednn(dy, w.t(), None, "none", [], ""),
            "weight grad, MKL": lambda: dy.t() @ x,
            "weight grad, oneDNN": lambda: onednn(dy.t(), x.t(), None, "none", [], ""),
        }
        reps = max(2, int(2e9 / (2 * M * K * N)))
        best = {k: min(v) for k, v in interleaved_ms(variants, rounds, reps).items()}
        row = [f"{M} x {K} -> {N}"]
        for what in ("forward", "input grad", "weight grad"):
            mkl, dnn = best[f"{what}, MKL"], best[f"{what}, oneDNN"]
            row.append(f"{mkl:.2f} / {dnn:.2f} ({mkl / dnn:.2f}x)")
        rows.append(row)
        print(" | ".join(row), file=sys.stderr, flush=True)
    return rows


def step_table(rounds: int, steps: int) -> list[list]:
    rows = []
    device = torch.device("cpu")
    for label, batch_size, seq, dropout in (("zh-small 32 x 128, dropout 0.1", 32, 128, 0.1),
                                            ("pre-training recipe 128 x 64, dropout 0", 128, 64, 0.0)):
        model, optimizer = build("minibert", "zh-small", device)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = dropout
        batch = make_batch("zh-small", batch_size, seq, device)

        def step_with(on: bool, model=model, optimizer=optimizer, batch=batch):
            def step():
                kernels.ONEDNN_FP32 = on
                train_step(model, optimizer, batch, device, "fp32")
            return step

        best = {on: min(v) for on, v in interleaved_ms({True: step_with(True), False: step_with(False)},
                                                       rounds, steps).items()}
        kernels.ONEDNN_FP32 = True
        rows.append([label, f"{best[False]:.0f}", f"{best[True]:.0f}", f"{best[False] / best[True]:.3f}x"])
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds; each variant's minimum is kept")
    ap.add_argument("--steps", type=int, default=3, help="training steps per round and variant")
    ap.add_argument("--skip-steps", action="store_true", help="only the per-matmul table")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(json.dumps(environment(torch.device("cpu"))))
    print(markdown_table(["matmul (tokens x in -> out)", "forward ms, MKL / oneDNN", "input grad",
                          "weight grad"], matmul_table(args.rounds)))
    if not args.skip_steps:
        print(markdown_table(["fp32 training step", "oneDNN off, ms", "on, ms", "speed-up"],
                             step_table(args.rounds, args.steps)))


if __name__ == "__main__":
    main()
