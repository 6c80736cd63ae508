"""The rest of a minibert pre-training step: every op that is not a linear layer, timed alone.

The companion of bench/linear_floor.py, at the same step (bench/pretrain_throughput.py's recipe:
zh-small, 128 x 64 tokens, 15% labelled, dropout 0). Each op runs forward and backward under the
precision asked for (bf16 autocast or fp32), through the code minibert runs (its attention choice,
nn.LayerNorm, nn.GELU, the upcast loss), on random inputs, median of --rounds calls after two
warm-up calls, with the memory settings of a training run (minibert.runtime.reuse_freed_memory):
    embeddings      word, position and segment rows added, then LayerNorm, at every token
    attention core  softmax(q k^T / sqrt(hs)) v per head, layers 1..L-1 at every query; layer L at
                    the labelled queries (Tq per row: the most labels any row of a seed-0 draw has)
    residual + LN   layers 1..L-1 twice at every token, layer L twice at the labelled tokens
    GELU            the FFN's (rows, intermediate) activation; the head's (labelled, hidden) one
    head LN         the MLM head's LayerNorm at the labelled tokens
    loss            cross-entropy of the (labelled, vocab) logits, upcast to fp32 as minibert does
The sum, with linear_floor.py's and the optimizer step's, says where a step's time goes; what is
left of the whole step after all three is what the ops do not explain (launches, the autograd
engine, the gathers at the labelled positions). Timed with time.perf_counter, not torch.profiler.

    .venv/bin/python bench/rest_floor.py --precision bf16     # native-bf16 CPUs
    .venv/bin/python bench/rest_floor.py --precision fp32
    .venv/bin/python bench/rest_floor.py --precision bf16 --compile   # each op through torch.compile

--compile runs each op (forward and backward) as one torch.compile'd function at fixed shapes, so
that inductor may fuse what eager runs as separate kernels (the residual add into LayerNorm, the
loss's upcast into cross-entropy); compilation happens in the warm-up calls and is not timed.
"""

from __future__ import annotations

import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from common import environment, markdown_table, step_parser

from minibert import Tokenizer
from minibert.config import PRESETS, BertConfig
from minibert.model import SelfAttention, activation, upcast
from minibert.runtime import reuse_freed_memory


def timed(fn, shapes: list[tuple], dtype: torch.dtype, autocast: bool, rounds: int) -> tuple[float, float]:
    """Median forward and forward + backward milliseconds of fn on fresh random leaves of `shapes`."""
    def inputs():
        return [torch.randn(*s, dtype=dtype, requires_grad=True) for s in shapes]

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        grad = torch.randn_like(fn(*inputs()))
    fwd, both = [], []
    for i in range(rounds + 2):
        xs = inputs()
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = fn(*xs)
        mid = time.perf_counter()
        y.backward(grad if y.dim() else None)
        end = time.perf_counter()
        if i >= 2:
            fwd.append(mid - start)
            both.append(end - start)
    return sorted(fwd)[len(fwd) // 2] * 1000, sorted(both)[len(both) // 2] * 1000


def main() -> None:
    parser = step_parser(__doc__, rounds=9)
    parser.add_argument("--compile", action="store_true", help="time each op through torch.compile (dynamic=False)")
    args = parser.parse_args()
    torch.manual_seed(0)
    reuse_freed_memory(torch.device("cpu"))
    bf16 = args.precision == "bf16"
    dtype = torch.bfloat16 if bf16 else torch.float32  # what the ops' inputs carry under autocast
    vocab = Tokenizer.from_vocab(args.vocab, model_max_length=None).vocab_size
    cfg = BertConfig(**{**PRESETS[args.shape], "vocab_size": vocab, "hidden_dropout_prob": 0.0,
                        "attention_probs_dropout_prob": 0.0})
    B, T, C, F_, L = args.batch_size, args.max_length, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    N = round(args.mask_prob * B * T)
    Tq = int((torch.rand(B, T) < args.mask_prob).sum(1).max())
    attn = SelfAttention(cfg).train()
    norm = nn.LayerNorm(C, eps=cfg.layer_norm_eps)
    gelu = activation(cfg.hidden_act)
    labels = torch.randint(0, vocab, (N,))
    ops = [  # label, function, input shapes, input dtype, count per step
        ("embeddings (3 rows added, LayerNorm)", lambda w, p, s: norm(w + p + s), [(B, T, C)] * 3, torch.float32, 1),
        (f"attention core, {T} queries", lambda q, k, v: attn.attend(q, k, v, None), [(B, T, C)] * 3, dtype, L - 1),
        (f"attention core, {Tq} queries (layer {L})", lambda q, k, v: attn.attend(q, k, v, None),
         [(B, Tq, C), (B, T, C), (B, T, C)], dtype, 1),
        ("residual + LayerNorm, every token", lambda x, a: norm(x + a), [(B * T, C)] * 2, dtype, 2 * (L - 1)),
        ("residual + LayerNorm, labelled", lambda x, a: norm(x + a), [(N, C)] * 2, dtype, 2),
        (f"GELU ({cfg.hidden_act}), every token", gelu, [(B * T, F_)], dtype, L - 1),
        (f"GELU ({cfg.hidden_act}), labelled", gelu, [(N, F_)], dtype, 1),
        ("head GELU + LayerNorm", lambda x: norm(gelu(x)), [(N, C)], dtype, 1),
        ("loss (upcast, cross-entropy)", lambda z: F.cross_entropy(upcast(z), labels, reduction="sum") / N,
         [(N, vocab)], dtype, 1),
    ]
    print(json.dumps(environment(torch.device("cpu"))))
    rows, total = [], 0.0
    for label, fn, shapes, in_dtype, count in ops:
        if args.compile:
            fn = torch.compile(fn, dynamic=False)
        fwd, both = timed(fn, shapes, in_dtype, bf16, args.rounds)
        total += both * count
        rows.append([label, " ".join("x".join(map(str, s)) for s in shapes), count, f"{fwd:.1f}",
                     f"{both - fwd:.1f}", f"{both * count:.1f}"])
    rows.append(["all", "", "", "", "", f"**{total:.0f}**"])
    print(f"{args.shape}, {B} x {T} tokens, {N} labelled (layer {L}: {Tq} query rows), {args.precision}"
          + (", each op compiled" if args.compile else ""))
    print(markdown_table(["op", "inputs", "per step", "forward ms", "backward ms", "ms per step"], rows))


if __name__ == "__main__":
    main()
