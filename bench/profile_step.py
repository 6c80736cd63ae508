"""Where a minibert training step spends its time: torch.profiler over full steps, top ops by self time.

A step is what bench/train_throughput.py times (forward with the sparse MLM head, backward, AdamW,
zero grads) on the same random batch, dropout on. After --warmup steps, --steps steps run under
the profiler; ops are ranked by self CPU time (CUDA time on a GPU), each with its share of the total
and its call count, and grouped into a few families (matmul, attention, layer norm, GELU, dropout,
embedding, optimizer, softmax/loss, other) so that the table says which lever is worth pulling.

On a CPU the profiler's own cost is not spread evenly: it lands mostly on memory-bound ops, so their
shares come out too high (the loss of the pre-training recipe, timed inside the step with a plain
timer, takes 15 ms of a 615 ms bf16 step, while the profile gives its ops ~190 ms; BENCHMARKS.md).
Check a lever the profile points to by timing the step with and without it; bench/linear_floor.py
gives the time the step's matmuls take alone.

    .venv/bin/python bench/profile_step.py --shapes zh-small,bert-base-chinese
    .venv/bin/python bench/profile_step.py --shapes zh-small --precision bf16   # native-bf16 CPUs only
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict

import torch
from common import environment, markdown_table, sync
from torch.profiler import ProfilerActivity, profile
from train_throughput import build, make_batch, train_step

from minibert.runtime import allow_tf32, reuse_freed_memory

FAMILIES = [  # (family, substrings of op names), the first match wins
    ("optimizer (AdamW)", ("_foreach", "addcdiv", "lerp", "adamw", "_fused_adam")),
    ("attention (SDPA)", ("scaled_dot_product", "flash", "_efficient_attention", "attention")),
    ("matmul (linear, bmm)", ("addmm", "mm", "matmul", "linear", "bmm", "baddbmm")),
    ("layer norm", ("layer_norm",)),
    ("GELU", ("gelu",)),
    ("dropout", ("dropout", "bernoulli", "native_dropout")),
    ("embedding / gather", ("embedding", "index", "gather", "scatter", "masked_select", "nonzero")),
    ("softmax / loss", ("softmax", "nll", "cross_entropy")),
    ("copies, casts, adds", ("copy_", "to", "add", "mul", "fill_", "zero_", "clone", "contiguous", "sum", "div")),
]


def family(name: str) -> str:
    low = name.lower()
    for fam, keys in FAMILIES:
        if any(k in low for k in keys):
            return fam
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shapes", default="zh-small,bert-base-chinese")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--batch-sizes", default="32,8", help="per shape, comma-separated (default 32 small, 8 base)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    device = torch.device(args.device)
    allow_tf32(device)
    reuse_freed_memory(device)  # as the trainer does; transformers gets it too
    env = environment(device)
    print(f"torch {env['torch']}, {env['device']}, {env['threads']} threads, load average "
          f"{env['load_average'][0]:.2f}; precision {args.precision}; {args.steps} profiled steps after "
          f"{args.warmup} warm-up")
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    for i, shape in enumerate(args.shapes.split(",")):
        bs = sizes[min(i, len(sizes) - 1)]
        model, optimizer = build("minibert", shape, device)
        batch = make_batch(shape, bs, args.seq, device)
        for _ in range(args.warmup):
            train_step(model, optimizer, batch, device, args.precision)
        sync(device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                train_step(model, optimizer, batch, device, args.precision)
            sync(device)
        attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        events = [e for e in prof.key_averages() if getattr(e, attr) > 0]
        total = sum(getattr(e, attr) for e in events)
        events.sort(key=lambda e: getattr(e, attr), reverse=True)
        rows = [[e.key, f"{getattr(e, attr) / 1e3 / args.steps:.1f}", f"{getattr(e, attr) / total:.1%}",
                 f"{e.count // args.steps}", family(e.key)] for e in events[: args.top]]
        fams: dict[str, float] = defaultdict(float)
        for e in events:
            fams[family(e.key)] += getattr(e, attr)
        print(f"\n### {shape}, batch {bs} x {args.seq}: {total / 1e3 / args.steps:.0f} ms of op self time per step")
        print(markdown_table(["op", "ms / step", "share", "calls / step", "family"], rows))
        print()
        print(markdown_table(["family", "ms / step", "share"],
                             [[f, f"{t / 1e3 / args.steps:.1f}", f"{t / total:.1%}"]
                              for f, t in sorted(fams.items(), key=lambda kv: -kv[1])]))
        del model, optimizer, batch
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
