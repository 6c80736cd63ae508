"""The shipped model's pre-training recipe, minibert against transformers, on the same batches.

The recipe is phase 1 of scripts/pretrain_zh.sh: the zh-small shape from scratch, the corpus
grouped into 64-token blocks, 128 blocks per step, token-level 15% masking (80/10/10), dropout 0,
AdamW (lr 1e-3, weight decay 0.01 off biases and LayerNorms), gradient clipping at 1.0, a linear
warm-up schedule; bf16 autocast where the CPU has native bf16 (AMX/AVX512-BF16) or on a GPU, fp32
elsewhere (and always fp32 as well).

    minibert      BertForMaskedLM + minibert.optim.AdamW, one step as Trainer.step does it
    transformers  BertForMaskedLM(attn_implementation="sdpa") + torch.optim.AdamW(foreach=True)
    minibert-full-last-layer  (with --full-last-layer) minibert with its last layer run at every
                  position and the masked positions picked afterwards, the head still sparse: what
                  running the last layer at the masked positions only (BertModel's `positions`) gains
    minibert-compiled  (with --compile) minibert with torch.compile(model), as train.py --compile
    minibert-bf16-weights  (with --bf16-weights, bf16 only) minibert with its passes on a bf16 copy
                  of the model and the fp32 weights updated, as train.py --bf16-weights

Both start from the same weights and read the same batches: --batches blocks of real corpus text
collated once by minibert's MaskingCollator (so collation is outside the timing for both). Variants
run interleaved in one process, round after round, the order reversed every other round; each
round times --steps steps; the median over --rounds is reported, with tokens/s counting every
token of the 128 x 64 batch (grouped blocks have no padding). "GFLOP/step done" is what each
implementation's matmuls compute in one step (torch.utils.flop_counter during a warm-up step), "TFLOP/s
done" that over the median step: the speed ratio is the ratio of work done times the ratio of rates.

    .venv/bin/python bench/pretrain_throughput.py                       # data/zh/pretrain.txt (make data)
    .venv/bin/python bench/pretrain_throughput.py --rounds 1 --steps 1  # smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from common import ROOT, counted_gflop, environment, markdown_table, sync

from minibert import AdamW, BertConfig, BertForMaskedLM, MaskingCollator, Tokenizer
from minibert.config import PRESETS
from minibert.data.features import group_texts, tokenize_texts
from minibert.model import masked_lm_loss
from minibert.optim import make_schedule, param_groups
from minibert.runtime import BF16Copy, allow_tf32, autocast, cpu_has_native_bf16, reuse_freed_memory

IMPLS = ("minibert", "transformers")


class FullLastLayer(torch.nn.Module):
    """minibert's BertForMaskedLM with the whole last layer computed and the head sparse."""

    def __init__(self, model: BertForMaskedLM):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        m = self.model
        where = labels != -100
        h = m.bert(input_ids, attention_mask, token_type_ids)[where]  # (N, C)
        logits = m.head(h, m.bert.embeddings.word.weight)
        return type("Out", (), {"loss": masked_lm_loss(logits, labels[where])[0]})


def build(impl: str, cfg: BertConfig, state: dict, device: torch.device, steps: int):
    if impl.startswith("minibert"):
        model = BertForMaskedLM(cfg)
        model.load_state_dict(state)
        model = model.to(device).train()
        optimizer = AdamW(param_groups(model, 0.01), lr=1e-3)
        if impl == "minibert-full-last-layer":
            model = FullLastLayer(model)
        elif impl == "minibert-compiled":
            model = torch.compile(model)
        elif impl == "minibert-bf16-weights":
            model = BF16Copy(model)
    else:
        import transformers

        from minibert.checkpoint import convert_to_hf

        model = transformers.BertForMaskedLM(transformers.BertConfig(**cfg.to_dict(), attn_implementation="sdpa"))
        src = BertForMaskedLM(cfg)
        src.load_state_dict(state)
        missing, unexpected = model.load_state_dict(convert_to_hf(src), strict=False)
        assert not unexpected and all("position_ids" in k or "decoder" in k for k in missing), (missing, unexpected)
        model.tie_weights()
        model = model.to(device).train()
        optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-3, foreach=True)
    return model, optimizer, make_schedule("linear", optimizer, 10_000, 300)


def step(built, batch: dict[str, torch.Tensor], device: torch.device, precision: str) -> None:
    model, optimizer, schedule = built
    if isinstance(model, BF16Copy):  # Trainer.step with --bf16-weights
        model.module(**batch).loss.backward()
        model.add_grads()
        torch.nn.utils.clip_grad_norm_([p for p, _ in model.pairs], 1.0)
        optimizer.step()
        model.refresh()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        return
    with autocast(device, precision):
        loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "zh" / "pretrain.txt")
    parser.add_argument("--vocab", type=Path, default=ROOT / "vocab" / "zh.txt")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--precisions", default=None,
                        help="comma-separated fp32,bf16 (default: both where bf16 is native, else fp32)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps timed per variant per round")
    parser.add_argument("--batches", type=int, default=8, help="distinct batches, cycled")
    parser.add_argument("--full-last-layer", action="store_true",
                        help="also time minibert with its last layer at every position (the lever's share)")
    parser.add_argument("--compile", action="store_true",
                        help="also time minibert under torch.compile (compiled during the warm-up steps)")
    parser.add_argument("--bf16-weights", action="store_true",
                        help="also time minibert with train.py --bf16-weights (bf16 precision only)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    if not args.data.is_file():
        parser.error(f"{args.data}: not found; run `make data` first")

    device = torch.device(args.device)
    allow_tf32(device)
    reuse_freed_memory(device)  # as the trainer does; transformers gets it too
    if args.precisions is None:
        args.precisions = "fp32,bf16" if device.type == "cuda" or cpu_has_native_bf16() else "fp32"
    precisions = args.precisions.split(",")

    tok = Tokenizer.from_vocab(args.vocab, model_max_length=None)
    lines = [t for t in args.data.read_text(encoding="utf-8").splitlines() if t.strip()]
    lines = lines[: args.batches * args.batch_size * 2]  # the corpus's first lines, as many as the blocks need
    blocks = group_texts(tokenize_texts(tok, lines), args.max_length, tok.cls_token_id, tok.sep_token_id)
    collate = MaskingCollator(tok, seed=0)
    need = args.batches * args.batch_size
    if len(blocks) < need:
        parser.error(f"{args.data}: {len(blocks)} blocks of {args.max_length} tokens, need {need}")
    batches = [{k: v.to(device) for k, v in collate(blocks[i * args.batch_size:(i + 1) * args.batch_size]).items()}
               for i in range(args.batches)]
    tokens_per_step = int(batches[0]["attention_mask"].sum())

    cfg = BertConfig(**PRESETS["zh-small"], vocab_size=tok.vocab_size)
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    state = BertForMaskedLM(cfg).state_dict()
    impls = IMPLS + (("minibert-full-last-layer",) if args.full_last_layer else ()) + (
        ("minibert-compiled",) if args.compile else ())
    built = {impl: build(impl, cfg, state, device, args.steps) for impl in impls}
    env = environment(device)
    print(f"torch {env['torch']}, transformers {env['transformers']}, {env['device']}, {env['threads']} threads, "
          f"load average {env['load_average'][0]:.2f}")
    print(f"recipe: zh-small, {args.batch_size} x {args.max_length} blocks ({tokens_per_step} tokens/step), "
          f"15% token-level masking, dropout 0, clip 1.0; {args.rounds} rounds x {args.steps} steps")

    if args.bf16_weights:
        built["minibert-bf16-weights"] = build("minibert-bf16-weights", cfg, state, device, args.steps)
    variants = [(impl, p) for p in precisions for impl in impls] + (
        [("minibert-bf16-weights", "bf16")] if args.bf16_weights and "bf16" in precisions else [])
    cursor = {v: 0 for v in variants}

    def run(v, n):
        for _ in range(n):
            step(built[v[0]], batches[cursor[v] % len(batches)], device, v[1])
            cursor[v] += 1

    for v in variants:  # warm-up: Adam's moments, kernel choice, compilation
        start = time.perf_counter()
        run(v, 2)
        if v[0] == "minibert-compiled":
            print(f"{v[1]}: compilation and 2 warm-up steps took {time.perf_counter() - start:.1f} s")
    # One more warm-up step per implementation at the first precision it runs at, its matmuls counted
    # (the same at every precision); the compiled model runs its kernels outside torch's dispatcher,
    # so it is not counted.
    first = {}
    for impl, p in variants:
        first.setdefault(impl, p)
    gflop = {impl: counted_gflop(lambda v=(impl, p): run(v, 1))
             for impl, p in first.items() if impl != "minibert-compiled"}
    sync(device)
    times: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:
            start = time.perf_counter()
            run(v, args.steps)
            sync(device)
            times[v].append((time.perf_counter() - start) / args.steps)

    results, rows = [], []
    for impl, p in variants:
        med = statistics.median(times[(impl, p)])
        results.append({"impl": impl, "precision": p, "tokens_per_s": tokens_per_step / med, "step_ms": med * 1e3,
                        "step_ms_all": [t * 1e3 for t in times[(impl, p)]], "gflop_per_step": gflop.get(impl),
                        "counted_tflops": gflop[impl] / med / 1e3 if impl in gflop else None})
    for p in precisions:
        mb, tf = (next(r for r in results if r["impl"] == i and r["precision"] == p) for i in IMPLS)
        rows.append([p, f"{mb['tokens_per_s']:,.0f}", f"{tf['tokens_per_s']:,.0f}",
                     f"{mb['step_ms']:.0f} ({min(mb['step_ms_all']):.0f}-{max(mb['step_ms_all']):.0f})",
                     f"{tf['step_ms']:.0f} ({min(tf['step_ms_all']):.0f}-{max(tf['step_ms_all']):.0f})",
                     f"**{mb['tokens_per_s'] / tf['tokens_per_s']:.2f}x**",
                     f"{mb['gflop_per_step']:.1f} / {tf['gflop_per_step']:.1f}",
                     f"{mb['counted_tflops']:.3f} / {tf['counted_tflops']:.3f}"])
    print()
    print(markdown_table(["precision", "minibert tokens/s", "transformers tokens/s", "minibert step ms (min-max)",
                          "transformers step ms (min-max)", "ratio", "GFLOP/step done (minibert / transformers)",
                          "TFLOP/s done"], rows))
    for r in results:
        if r["impl"] in ("minibert-full-last-layer", "minibert-compiled", "minibert-bf16-weights"):
            mb = next(x for x in results if x["impl"] == "minibert" and x["precision"] == r["precision"])
            tf = next(x for x in results if x["impl"] == "transformers" and x["precision"] == r["precision"])
            what = {"minibert-full-last-layer": "with the full last layer", "minibert-compiled": "compiled",
                    "minibert-bf16-weights": "with --bf16-weights"}[r["impl"]]
            print(f"{r['precision']}: minibert {what} {r['tokens_per_s']:,.0f} tokens/s "
                  f"(step {r['step_ms']:.0f} ms, {min(r['step_ms_all']):.0f}-{max(r['step_ms_all']):.0f}), "
                  f"{r['tokens_per_s'] / tf['tokens_per_s']:.2f}x transformers, "
                  f"{r['tokens_per_s'] / mb['tokens_per_s']:.3f}x minibert")
    env["load_average_end"] = os.getloadavg()
    print(f"\nload average at the end: {env['load_average_end'][0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "args": {k: str(v) for k, v in vars(args).items()}, "results": results}, f,
                      indent=2)


if __name__ == "__main__":
    main()
