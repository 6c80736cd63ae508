"""minibert's Dropout (a random-integer mask, one multiply; CPU fp32 and bf16) against torch's
nn.Dropout (a Bernoulli draw per element).

Three readings, each variant interleaved with the other round after round, medians reported:
    op     forward + backward of one dropout on the hidden states of a batch (p 0.1, fp32 and bf16)
    step   a whole zh-small training step (train_throughput.py's: forward, backward, AdamW), the
           same model with its Dropout modules turned into nn.Dropout for the other variant (the
           attention weights' mask is keep_mask's in both: the written-out attention draws it)
    words  the same step with keep_mask reading its random int64 words as four 16-bit integers
           (as it does) against two 32-bit integers (half the draws' worth of masks per word)

    .venv/bin/python bench/dropout.py [--rounds 11] [--precision bf16]   # bf16: native-bf16 CPUs only
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch
from common import environment, interleaved_ms
from torch import nn
from train_throughput import build, make_batch, train_step

from minibert import kernels
from minibert.model import Dropout as RandDropout  # minibert's


def keep_mask_32(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """keep_mask with each int64 word read as two 32-bit integers: twice the random draws."""
    n = math.prod(shape)
    words = torch.empty((n + 1) // 2, dtype=torch.int64, device=device).random_(-2**63, None)
    return words.view(torch.int32)[:n].view(shape) >= round(p * 2**32) - 2**31


def median_ms(fns: dict, rounds: int, reps: int) -> dict[str, float]:
    return {k: statistics.median(v) for k, v in interleaved_ms(fns, rounds, reps).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="of the whole-step reading (autocast); the op reading runs both dtypes")
    args = parser.parse_args()
    env = environment(torch.device("cpu"))
    print(f"torch {env['torch']}, {env['device']}, {env['threads']} threads, load average "
          f"{env['load_average'][0]:.2f}")
    for dtype, shape in [(d, s) for d in (torch.float32, torch.bfloat16) for s in [(32 * 128, 256), (8 * 128, 768)]]:
        x = torch.randn(*shape, dtype=dtype, requires_grad=True)
        g = torch.randn(*shape, dtype=dtype)
        ours, theirs = RandDropout(0.1).train(), nn.Dropout(0.1).train()
        res = median_ms({"minibert Dropout": lambda: ours(x).backward(g),
                         "torch nn.Dropout": lambda: theirs(x).backward(g)}, args.rounds, 10)
        print(f"op {shape} {str(dtype).removeprefix('torch.')}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in res.items())
              + f"; ratio {res['torch nn.Dropout'] / res['minibert Dropout']:.2f}x")
    device = torch.device("cpu")
    model, optimizer = build("minibert", "zh-small", device)
    batch = make_batch("zh-small", 32, 128, device)
    drops = [m for m in model.modules() if isinstance(m, RandDropout)]

    def use(cls):
        def step():
            for m in drops:
                m.__class__ = cls
            train_step(model, optimizer, batch, device, args.precision)
        return step

    res = median_ms({"minibert Dropout": use(RandDropout), "torch nn.Dropout": use(nn.Dropout)}, args.rounds, 2)
    print(f"zh-small step, batch 32 x 128, dropout 0.1, {args.precision}: "
          + ", ".join(f"{k} {v:.0f} ms" for k, v in res.items())
          + f"; ratio {res['torch nn.Dropout'] / res['minibert Dropout']:.3f}x")

    def with_mask(fn):
        def step():
            kernels.keep_mask = fn
            train_step(model, optimizer, batch, device, args.precision)
        return step

    sixteen = kernels.keep_mask
    res = median_ms({"16-bit words": with_mask(sixteen), "32-bit words": with_mask(keep_mask_32)}, args.rounds, 2)
    kernels.keep_mask = sixteen
    print(f"zh-small step, keep_mask, {args.precision}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in res.items())
          + f"; ratio {res['32-bit words'] / res['16-bit words']:.3f}x")


if __name__ == "__main__":
    main()
