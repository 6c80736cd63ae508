"""Less padding: padded batches (random or length-grouped) against packed rows, in real tokens per second.

The sequences are --sequences lines of --data (data/zh/pretrain.txt by default, examples/three_kingdoms.json
when the corpus is absent; random, seed 0), tokenized one per line and truncated to --max-length, as
line-by-line MLM training sees them. Each variant trains one epoch over the same sequences:
    padded random   MaskingCollator batches of --batch-size sequences in random order
    padded grouped  the same, batched by LengthGroupedSampler (the trainer's sampler)
    packed          pack_features rows (block-diagonal attention, positions restarting per sequence)
                    through PackingCollator, in batches of as many rows as hold about the same number
                    of real tokens as --batch-size sequences, so the optimizer takes about as many steps
One step is forward, backward, minibert AdamW step, on a zh-small-shaped BertForMaskedLM with the sparse
MLM head, at the trainer's `auto` precision. Batches are collated before the clock starts (collation
is the same work for all three; pack_features is a one-off cost, printed). The variants run
interleaved, the order reversed every other round; the median epoch time of --rounds is reported.

A packed row always costs the dense attention of a full max_length x max_length mask (the mask keeps
it exact, not cheaper), while a length-grouped batch of short sequences pays only for its own length:
attention is a small share of a zh-small step at 128 tokens, but that is where packing can lose.

    .venv/bin/python bench/packing.py [--device cpu] [--sequences 1024] [--rounds 3]
    .venv/bin/python bench/packing.py --sequences 64 --rounds 1   # smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT, SHAPES, environment, markdown_table, sync

from minibert import AdamW, BertConfig, BertForMaskedLM, LengthGroupedSampler, MaskingCollator, Tokenizer
from minibert.data import PackingCollator, pack_features, read_texts, tokenize_texts
from minibert.optim import param_groups
from minibert.runtime import allow_tf32, autocast, resolve_precision, reuse_freed_memory


def load_sequences(tokenizer: Tokenizer, n: int, max_length: int, path: Path | None) -> tuple[list[dict], str]:
    if path is None:
        corpus = ROOT / "data" / "zh" / "pretrain.txt"
        path = corpus if corpus.exists() else ROOT / "examples" / "three_kingdoms.json"
    path = path.resolve()
    texts = read_texts(path)
    random.Random(0).shuffle(texts)
    return tokenize_texts(tokenizer, texts[:n], max_length), str(path.relative_to(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--data", type=Path, default=None,
                        help="text file, one sequence per line (default: data/zh/pretrain.txt, else the example)")
    parser.add_argument("--sequences", type=int, default=1024, help="sequences in the epoch each variant trains")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per padded batch")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()

    device = torch.device(args.device)
    precision = resolve_precision("auto", device)
    allow_tf32(device)
    reuse_freed_memory(device)  # as the trainer does; transformers gets it too
    tokenizer = Tokenizer.from_vocab(ROOT / "vocab" / "zh.txt")
    features, source = load_sequences(tokenizer, args.sequences, args.max_length, args.data)
    lengths = [len(f["input_ids"]) for f in features]
    start = time.perf_counter()
    packed = pack_features(features, args.max_length)
    pack_s = time.perf_counter() - start
    row_lengths = [len(f["input_ids"]) for f in packed]
    rows_per_batch = max(1, round(args.batch_size * np.mean(lengths) / np.mean(row_lengths)))

    collate = MaskingCollator(tokenizer, seed=0)
    order = list(range(len(features)))
    random.Random(1).shuffle(order)
    grouped = list(LengthGroupedSampler(lengths, args.batch_size, seed=0))
    row_order = list(range(len(packed)))
    random.Random(2).shuffle(row_order)
    batches = {
        "padded random": [collate([features[i] for i in order[s:s + args.batch_size]])
                          for s in range(0, len(order), args.batch_size)],
        "padded grouped": [collate([features[i] for i in b]) for b in grouped],
        "packed": [PackingCollator(collate)([packed[i] for i in row_order[s:s + rows_per_batch]])
                   for s in range(0, len(row_order), rows_per_batch)],
    }
    batches = {k: [{n: t.to(device) for n, t in b.items()} for b in v] for k, v in batches.items()}

    env = environment(device)
    print(f"torch {env['torch']}, {env['device']}, {env['threads']} threads, load average "
          f"{env['load_average'][0]:.2f}, precision {precision}")
    print(f"{len(features)} sequences of {source}: {sum(lengths)} tokens, length mean {np.mean(lengths):.1f}, "
          f"median {np.median(lengths):.0f}, {np.mean(np.array(lengths) == args.max_length):.0%} cut at "
          f"{args.max_length}; pack_features: {len(packed)} rows (mean {np.mean(row_lengths):.1f} tokens) "
          f"in {pack_s * 1e3:.0f} ms; {rows_per_batch} rows per packed batch")

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(**{**SHAPES["zh-small"], "max_position_embeddings": args.max_length}))
    model = model.to(device).train()
    optimizer = AdamW(param_groups(model, 0.01), lr=1e-4)

    def step(batch: dict[str, torch.Tensor]) -> None:
        with autocast(device, precision):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def epoch(name: str) -> float:
        start = time.perf_counter()
        for batch in batches[name]:
            step(batch)
        sync(device)
        return time.perf_counter() - start

    names = list(batches)
    for name in names:  # warm-up: Adam's moments, kernel selection
        for batch in batches[name][:2]:
            step(batch)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(epoch(name))

    results, rows = [], []
    real = sum(lengths)
    for name in names:
        slots = sum(b["input_ids"].numel() for b in batches[name])
        epoch_s = statistics.median(times[name])
        results.append({"variant": name, "tokens_per_s": real / epoch_s, "epoch_s": epoch_s,
                        "epoch_s_all": times[name], "steps": len(batches[name]), "padding": 1 - real / slots})
        rows.append([name, f"{real / epoch_s:,.0f}", f"{epoch_s:.2f} ({min(times[name]):.2f}-{max(times[name]):.2f})",
                     len(batches[name]), f"{1 - real / slots:.1%}"])
    base = results[1]["tokens_per_s"]
    for row, r in zip(rows, results):
        row.append(f"{r['tokens_per_s'] / base:.2f}x")
    print()
    print(markdown_table(["variant", "real tokens/s", "epoch s median (min-max)", "steps", "padding",
                          "vs padded grouped"], rows))
    env["load_average_end"] = os.getloadavg()
    print(f"\nload average at the end: {env['load_average_end'][0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "args": {k: str(v) for k, v in vars(args).items()}, "precision": precision,
                       "source": source, "pack_ms": pack_s * 1e3, "rows_per_batch": rows_per_batch,
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
