"""Time one optimizer step of minibert.optim.AdamW against torch.optim.AdamW.

The parameter set has the shapes of a preset: zh-small (4 layers, hidden 256, intermediate 1024,
10k vocabulary: 6.0M parameters) or bert-base (12 layers, hidden 768, 21,128-token Chinese
vocabulary: 102M parameters), each with a random gradient. Variants: minibert's per-tensor
chunked update (its CPU default) and its foreach update; torch's foreach and fused (one C++
kernel per tensor) AdamW. They run interleaved, round after round, so drift in machine load hits
all of them alike; the median per-step time is reported.

    .venv/bin/python bench/optim_step.py [--shape bert-base] [--device cuda] [--rounds 15] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from common import interleaved_ms

from minibert.optim import AdamW


def model_shapes(vocab: int, hidden: int, layers: int, ffn: int, positions: int = 512) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = [(vocab, hidden), (positions, hidden), (2, hidden), (hidden,), (hidden,)]
    for _ in range(layers):
        shapes += [(hidden, hidden), (hidden,)] * 4  # query, key, value, attention output
        shapes += [(hidden,), (hidden,)]  # attention LayerNorm
        shapes += [(ffn, hidden), (ffn,), (hidden, ffn), (hidden,)]  # feed-forward
        shapes += [(hidden,), (hidden,)]  # output LayerNorm
    shapes += [(hidden, hidden), (hidden,)]  # pooler
    shapes += [(hidden, hidden), (hidden,), (hidden,), (hidden,), (vocab,)]  # MLM transform + decoder bias
    return shapes


SHAPES = {"zh-small": dict(vocab=10_000, hidden=256, layers=4, ffn=1024),
          "bert-base": dict(vocab=21_128, hidden=768, layers=12, ffn=3072)}


def make_params(shapes: list[tuple[int, ...]], device: str) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=g).to(device))
        p.grad = torch.randn(shape, generator=g).to(device)
        params.append(p)
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="zh-small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds; the median is reported")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps timed per round")
    args = parser.parse_args()

    shapes = model_shapes(**SHAPES[args.shape])
    variants = {
        "minibert AdamW chunked (foreach=False)": lambda ps: AdamW(ps, lr=1e-4, weight_decay=0.01, foreach=False),
        "minibert AdamW foreach=True": lambda ps: AdamW(ps, lr=1e-4, weight_decay=0.01, foreach=True),
        "torch    AdamW foreach=True": lambda ps: torch.optim.AdamW(ps, lr=1e-4, weight_decay=0.01, foreach=True),
        "torch    AdamW fused=True": lambda ps: torch.optim.AdamW(ps, lr=1e-4, weight_decay=0.01, fused=True),
    }
    optimizers = {name: make(make_params(shapes, args.device)) for name, make in variants.items()}
    n_params = sum(p.numel() for p in next(iter(optimizers.values())).param_groups[0]["params"])
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, {args.shape}: "
          f"{len(shapes)} tensors, {n_params / 1e6:.2f}M parameters")

    device = torch.device(args.device)
    for opt in optimizers.values():  # warm-up: allocates the moments and any scratch memory
        for _ in range(3):
            opt.step()
    times = interleaved_ms({name: opt.step for name, opt in optimizers.items()}, args.rounds, args.steps,
                           warmup=0, device=device)
    for name, ts in times.items():
        print(f"{name}: median {statistics.median(ts):7.2f} ms/step  (min {min(ts):.2f}, max {max(ts):.2f})")


if __name__ == "__main__":
    main()
