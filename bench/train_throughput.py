"""Training throughput and peak memory: minibert against transformers, one full training step each.

A step is forward, backward, optimizer step, zero grads (no clipping, no accumulation):
    minibert      BertForMaskedLM (fused QKV, SDPA, sparse MLM head) + minibert.optim.AdamW (its default:
                  chunked per tensor on CPU, foreach on CUDA)
    transformers  BertForMaskedLM(attn_implementation="sdpa") + torch.optim.AdamW(foreach=True)
Both get the same config, dropout on (train mode), and the same batch: random ids, every sequence
--seq tokens long (no padding, as in pre-training on grouped text), 15% of the tokens replaced by a
stand-in [MASK] id and labelled, -100 elsewhere. fp32 on CUDA means TF32 matmuls, as the trainer sets;
bf16 is autocast with fp32 weights, as the trainer does. With --bf16-weights, minibert-bf16-weights runs
minibert's passes on a bf16 copy of the model and updates the fp32 weights (train.py --bf16-weights).

Timing: for each shape, the variants (implementation x precision) run interleaved in one process,
round after round, the order reversed every other round so drift in machine load hits all alike;
each round times --steps steps after two warm-up steps; the median over --rounds is reported.

Peak memory is read in a fresh process per variant, which builds the model and optimizer and runs two
steps (the first allocates Adam's moments): the peak of live tensor bytes above what was live before,
so parameters, gradients, Adam moments and activations. On CUDA that is torch.cuda.max_memory_allocated();
on CPU the same quantity is summed from the allocation and free records of torch's profiler
(profile_memory=True). Not the resident set: that would add library pages loaded on first use and
what malloc keeps cached, which vary from run to run and say nothing about the model; nor tracemalloc,
which cannot see torch's allocations at all.

TFLOP/s counts common.flops_per_token at the batch's labelled fraction (the work the MLM loss
needs) for both implementations, so the transformers figure excludes the 85% of its vocabulary
projection that the loss never reads. MFU is that over --peak-tflops (bf16 dense peak of the GPU).
"GFLOP/step done" is what each implementation's matmuls actually compute in one step, counted by
torch.utils.flop_counter during a warm-up step (common.counted_gflop), and "TFLOP/s done" that over
the median step: the speed ratio is the ratio of work done times the ratio of these rates.

    .venv/bin/python bench/train_throughput.py --device cuda
    .venv/bin/python bench/train_throughput.py --device cpu --shapes zh-small --precisions fp32
    .venv/bin/python bench/train_throughput.py --rounds 1 --steps 1 --shapes zh-small   # smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from functools import partial

import torch
from common import SHAPES, counted_gflop, environment, flops_per_token, markdown_table, run_probe, sync
from torch.profiler import ProfilerActivity, profile

from minibert import AdamW, BertConfig, BertForMaskedLM
from minibert.optim import param_groups
from minibert.runtime import BF16Copy, allow_tf32, autocast, cpu_has_native_bf16, reuse_freed_memory

IMPLS = ("minibert", "transformers")
MASK_ID = 4  # a stand-in [MASK]: the weights are random, so any ordinary id will do
# bf16 dense tensor-core peaks (TFLOP/s, no sparsity) by device name; the first match wins.
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0),
               ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("RTX 4090", 165.0), ("A10", 125.0)]


def default_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def make_batch(shape: str, batch_size: int, seq: int, device: torch.device) -> dict[str, torch.Tensor]:
    V = SHAPES[shape]["vocab_size"]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (batch_size, seq), generator=g)  # (B, T), clear of the special ids 0..4
    chosen = torch.rand(batch_size, seq, generator=g) < 0.15  # (B, T)
    return {
        "input_ids": torch.where(chosen, MASK_ID, ids).to(device),
        "attention_mask": torch.ones(batch_size, seq, dtype=torch.long, device=device),
        "token_type_ids": torch.zeros(batch_size, seq, dtype=torch.long, device=device),
        "labels": torch.where(chosen, ids, -100).to(device),
    }


def build(impl: str, shape: str, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    if impl.startswith("minibert"):
        model = BertForMaskedLM(BertConfig(**SHAPES[shape])).to(device).train()
        optimizer = AdamW(param_groups(model, 0.01), lr=1e-4)
        return (BF16Copy(model) if impl == "minibert-bf16-weights" else model), optimizer
    import transformers

    cfg = transformers.BertConfig(**SHAPES[shape], attn_implementation="sdpa")
    model = transformers.BertForMaskedLM(cfg).to(device).train()
    return model, torch.optim.AdamW(param_groups(model, 0.01), lr=1e-4, foreach=True)


def train_step(model, optimizer, batch: dict[str, torch.Tensor], device: torch.device, precision: str) -> None:
    if isinstance(model, BF16Copy):  # Trainer.step with --bf16-weights
        model.module(**batch).loss.backward()
        model.add_grads()
        optimizer.step()
        model.refresh()
        optimizer.zero_grad(set_to_none=True)
        return
    with autocast(device, precision):
        loss = model(**batch).loss  # both libraries take these keyword names
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def peak_memory(impl: str, shape: str, precision: str, batch_size: int, seq: int, device: str) -> dict:
    """Run in a fresh process (see the module docstring): the peak of live tensor bytes while the model
    and optimizer are built and two steps run, above what was live before."""
    device = torch.device(device)
    allow_tf32(device)
    reuse_freed_memory(device)  # as the trainer does; transformers gets it too
    batch = make_batch(shape, batch_size, seq, device)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        model, optimizer = build(impl, shape, device)
        for _ in range(2):
            train_step(model, optimizer, batch, device, precision)
        sync(device)
        return {"peak_bytes": torch.cuda.max_memory_allocated(device) - base}
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model, optimizer = build(impl, shape, device)
        for _ in range(2):
            train_step(model, optimizer, batch, device, precision)
    # Every allocation (+bytes) and free (-bytes) through torch's CPU allocator, in time order.
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return {"peak_bytes": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shapes", default="zh-small,bert-base-chinese", help=f"comma-separated: {', '.join(SHAPES)}")
    parser.add_argument("--precisions", default=None,
                        help="comma-separated fp32,bf16 (default: both, but only fp32 on a CPU without native "
                             "bf16, where bf16 autocast is emulated and ~12x slower)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--steps", type=int, default=5, help="training steps timed per variant per round")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's bf16 dense peak for MFU (default: by GPU name, e.g. H100 SXM 989)")
    parser.add_argument("--bf16-weights", action="store_true",
                        help="also time minibert with train.py --bf16-weights (with bf16 in --precisions)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()

    device = torch.device(args.device)
    shapes = args.shapes.split(",")
    for s in shapes:
        if s not in SHAPES:
            parser.error(f"--shapes: unknown shape {s!r}; choose from {', '.join(SHAPES)}")
    if args.precisions is None:
        native = device.type == "cuda" or cpu_has_native_bf16()
        args.precisions = "fp32,bf16" if native else "fp32"
    precisions = args.precisions.split(",")
    for p in precisions:
        if p not in ("fp32", "bf16"):
            parser.error(f"--precisions: unknown precision {p!r}; use fp32 and/or bf16")
    allow_tf32(device)  # what the trainer does for fp32
    reuse_freed_memory(device)  # as the trainer does; transformers gets it too
    peak_tflops = args.peak_tflops or default_peak_tflops(device)
    env = environment(device)
    tokens_per_step = args.batch_size * args.seq
    print(f"torch {env['torch']}, transformers {env['transformers']}, {env['device']}, {env['threads']} threads, "
          f"load average {env['load_average'][0]:.2f}")
    print(f"batch {args.batch_size} x {args.seq} tokens, {args.rounds} rounds x {args.steps} steps, "
          f"precisions {', '.join(precisions)}" + (f", MFU against {peak_tflops} TFLOP/s" if peak_tflops else ""))

    results = []
    for shape in shapes:
        batch = make_batch(shape, args.batch_size, args.seq, device)
        labelled = float((batch["labels"] != -100).float().mean())
        flops = flops_per_token(BertConfig(**SHAPES[shape]), args.seq, mlm_fraction=labelled)
        extra = [("minibert-bf16-weights", "bf16")] if args.bf16_weights and "bf16" in precisions else []
        built = {impl: build(impl, shape, device) for impl in IMPLS + tuple(i for i, _ in extra)}
        variants = [(impl, p) for p in precisions for impl in IMPLS] + extra  # the precisions share a model
        for impl, p in variants:  # warm-up: Adam's moments, autocast caches, kernel selection
            for _ in range(2):
                train_step(*built[impl], batch, device, p)
        # One more warm-up step per implementation, its matmuls counted (the same at every precision).
        gflop = {}
        for impl, (model, optimizer) in built.items():
            gflop[impl] = counted_gflop(partial(train_step, model, optimizer, batch, device, precisions[0]))
        sync(device)
        times: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
        for r in range(args.rounds):
            for impl, p in variants if r % 2 == 0 else variants[::-1]:
                start = time.perf_counter()
                for _ in range(args.steps):
                    train_step(*built[impl], batch, device, p)
                sync(device)
                times[(impl, p)].append((time.perf_counter() - start) / args.steps)
        del built, batch
        if device.type == "cuda":
            torch.cuda.empty_cache()
        for impl, p in variants:
            mem = run_probe("import json, train_throughput as t; print(json.dumps(t.peak_memory("
                            f"{impl!r}, {shape!r}, {p!r}, {args.batch_size}, {args.seq}, {args.device!r})))")
            step_s = statistics.median(times[(impl, p)])
            tps = tokens_per_step / step_s
            results.append({"shape": shape, "impl": impl, "precision": p, "tokens_per_s": tps,
                            "step_ms": step_s * 1e3, "step_ms_all": [t * 1e3 for t in times[(impl, p)]],
                            "peak_mib": mem["peak_bytes"] / 2**20, "tflops": tps * flops / 1e12,
                            "gflop_per_step": gflop[impl], "counted_tflops": gflop[impl] / step_s / 1e3,
                            "mfu": tps * flops / 1e12 / peak_tflops if peak_tflops else None})

    rows = [[r["shape"], r["impl"], r["precision"], f"{r['tokens_per_s']:,.0f}",
             f"{r['step_ms']:.1f} ({min(r['step_ms_all']):.1f}-{max(r['step_ms_all']):.1f})",
             f"{r['peak_mib']:,.0f}", f"{r['tflops']:.2f}", f"{r['mfu']:.1%}" if r["mfu"] is not None else "-",
             f"{r['gflop_per_step']:,.1f}", f"{r['counted_tflops']:.3f}"]
            for r in results]
    print()
    print(markdown_table(["shape", "impl", "precision", "tokens/s", "step ms median (min-max)", "peak MiB",
                          "TFLOP/s", "MFU", "GFLOP/step done", "TFLOP/s done"], rows))

    ratios, ratio_rows = [], []
    for shape in shapes:
        by = {(r["impl"], r["precision"]): r for r in results if r["shape"] == shape}
        best = max((by[("transformers", p)] for p in precisions), key=lambda r: r["tokens_per_s"])
        for p in precisions:
            mb, tf = by[("minibert", p)], by[("transformers", p)]
            ratio = {"shape": shape, "minibert_precision": p, "transformers_best_precision": best["precision"],
                     "vs_same_precision": mb["tokens_per_s"] / tf["tokens_per_s"],
                     "vs_transformers_best": mb["tokens_per_s"] / best["tokens_per_s"],
                     "memory_vs_same_precision": mb["peak_mib"] / tf["peak_mib"]}
            ratios.append(ratio)
            ratio_rows.append([shape, f"minibert {p}", f"{ratio['vs_same_precision']:.2f}x",
                               f"{ratio['vs_transformers_best']:.2f}x (transformers {best['precision']}, "
                               f"{best['tokens_per_s']:,.0f} tokens/s)", f"{ratio['memory_vs_same_precision']:.2f}x"])
        if ("minibert-bf16-weights", "bf16") in by:
            mb, tf = by[("minibert-bf16-weights", "bf16")], by[("transformers", "bf16")]
            ratios.append({"shape": shape, "minibert_precision": "bf16-weights",
                           "vs_same_precision": mb["tokens_per_s"] / tf["tokens_per_s"],
                           "vs_minibert_autocast": mb["tokens_per_s"] / by[("minibert", "bf16")]["tokens_per_s"],
                           "memory_vs_same_precision": mb["peak_mib"] / tf["peak_mib"]})
            ratio_rows.append([shape, "minibert --bf16-weights", f"{ratios[-1]['vs_same_precision']:.2f}x",
                               f"{ratios[-1]['vs_minibert_autocast']:.3f}x minibert bf16 autocast",
                               f"{ratios[-1]['memory_vs_same_precision']:.2f}x"])
    print()
    print(markdown_table(["shape", "variant", "speed vs transformers same precision",
                          "speed vs transformers best", "peak memory vs same precision"], ratio_rows))
    env["load_average_end"] = os.getloadavg()
    print(f"\nload average at the end: {env['load_average_end'][0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "args": vars(args), "results": results, "ratios": ratios}, f, indent=2)


if __name__ == "__main__":
    main()
