"""The matmul floor of a minibert pre-training step: its linear layers timed alone, at its shapes.

One step of the pre-training recipe (bench/pretrain_throughput.py: zh-small, 128 x 64 tokens, 15%
labelled) runs these linear layers, each forward (x W^T + b), input gradient (dY W) and weight
gradient (dY^T x):
    layers 1..L-1   QKV, attention output, FFN up, FFN down at every token
    layer L         K and V at every token; Q, output, FFN up and down at the labelled tokens
    MLM head        transform and the vocabulary projection at the labelled tokens
This script times each of those matmuls alone (random operands, median of --rounds calls after
two warm-up calls), at the precision asked for and on the kernels minibert uses there (fp32 forward
and input gradient on oneDNN where minibert.kernels.linear sends them, weight gradient on torch's
BLAS; bf16 through torch, as under autocast), and sums them over one step: what the step would
take if nothing but its linear layers ran. A whole step's time (pretrain_throughput.py) minus this
floor is what the rest costs: attention, LayerNorm, GELU, casts, the loss, AdamW, gradient clipping.
Timed with time.perf_counter, not torch.profiler: the profiler's own cost lands on memory-bound ops.

    .venv/bin/python bench/linear_floor.py --precision bf16     # native-bf16 CPUs
    .venv/bin/python bench/linear_floor.py --precision fp32
"""

from __future__ import annotations

import json
import time

import torch
import torch.nn.functional as F
from common import environment, markdown_table, step_parser

from minibert import Tokenizer, kernels
from minibert.config import PRESETS


def step_linears(layers: int, hidden: int, ffn: int, vocab: int, tokens: int, labelled: int) -> list[tuple]:
    """(label, rows, in, out, count) of every linear layer one sparse-head MLM step runs."""
    rest = layers - 1
    return [
        ("QKV", tokens, hidden, 3 * hidden, rest),
        ("attention output", tokens, hidden, hidden, rest),
        ("FFN up", tokens, hidden, ffn, rest),
        ("FFN down", tokens, ffn, hidden, rest),
        ("last layer K, V", tokens, hidden, 2 * hidden, 1),
        ("last layer Q, output", labelled, hidden, hidden, 2),
        ("last layer FFN up", labelled, hidden, ffn, 1),
        ("last layer FFN down", labelled, ffn, hidden, 1),
        ("head transform", labelled, hidden, hidden, 1),
        ("vocabulary projection", labelled, hidden, vocab, 1),
    ]


def median_ms(fn, rounds: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1000


def main() -> None:
    args = step_parser(__doc__, rounds=7).parse_args()
    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    cfg = PRESETS[args.shape]
    vocab = Tokenizer.from_vocab(args.vocab, model_max_length=None).vocab_size
    tokens = args.batch_size * args.max_length
    labelled = round(args.mask_prob * tokens)
    print(json.dumps(environment(torch.device("cpu"))))
    rows, total_ms, total_flop = [], 0.0, 0
    for label, m, k, n, count in step_linears(cfg["num_hidden_layers"], cfg["hidden_size"],
                                               cfg["intermediate_size"], vocab, tokens, labelled):
        x, w, b, dy = (torch.randn(*s, dtype=dtype) for s in ((m, k), (n, k), (n,), (m, n)))
        if kernels.onednn_linear_applies(x, w):
            onednn = kernels._onednn_linear
            fwd, dx = (lambda: onednn(x, w, b, "none", [], "")), (lambda: onednn(dy, w.t(), None, "none", [], ""))
        else:
            fwd, dx = (lambda: F.linear(x, w, b)), (lambda: dy @ w)
        ms = [median_ms(fwd, args.rounds), median_ms(dx, args.rounds), median_ms(lambda: dy.t() @ x, args.rounds)]
        flop = 6 * m * k * n * count
        total_ms += sum(ms) * count
        total_flop += flop
        rows.append([label, f"{m} x {k} -> {n}", count, *(f"{t:.1f}" for t in ms),
                     f"{sum(ms) * count:.1f}", f"{flop / (sum(ms) * count) / 1e6:.0f}"])
    rows.append(["all", "", "", "", "", "", f"**{total_ms:.0f}**", f"{total_flop / total_ms / 1e6:.0f}"])
    print(f"{args.shape}, {args.batch_size} x {args.max_length} tokens, {labelled} labelled, {args.precision}; "
          f"{total_flop / 1e9:.1f} GFLOP of linear layers per step")
    print(markdown_table(["linear", "rows x in -> out", "per step", "forward ms", "input grad ms",
                          "weight grad ms", "ms per step", "GFLOP/s"], rows))


if __name__ == "__main__":
    main()
