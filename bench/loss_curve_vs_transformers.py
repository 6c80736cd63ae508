"""Training dynamics: minibert's and transformers' BertForMaskedLM trained side by side, same everything.

Both models start from the same weights (a fresh minibert model of --config, saved and loaded by
transformers), see the same masked batches of --train in the same order (minibert's MaskingCollator,
seeded), and take the same optimizer (torch.optim.AdamW, linear warm-up, clipping at 1.0). Dropout is
on in both, with different random draws, so the curves agree to about the noise of one step, not
bit for bit. Printed: mean training loss of each over every --window steps, and the largest gap.

What it answers: when a from-scratch run sits on a loss plateau, is that minibert or the model?
If the two curves lie on top of each other, the plateau is BERT's own training dynamics.

    .venv/bin/python bench/loss_curve_vs_transformers.py --train data/zh/pretrain.txt --steps 200
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minibert.config import PRESETS, BertConfig  # noqa: E402
from minibert.data import MaskingCollator, load_mlm_features  # noqa: E402
from minibert.model import BertForMaskedLM  # noqa: E402
from minibert.tokenizer import Tokenizer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True, help="pre-training text (words separated by spaces)")
    p.add_argument("--vocab", default="vocab/zh.txt")
    p.add_argument("--config", default="zh-small", choices=sorted(PRESETS))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--window", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the curves here")
    args = p.parse_args()

    import transformers

    torch.manual_seed(args.seed)
    tok = Tokenizer.from_vocab(args.vocab)
    shape = {**PRESETS[args.config], "vocab_size": tok.vocab_size}
    shape["max_position_embeddings"] = max(shape["max_position_embeddings"], args.max_length)
    ours = BertForMaskedLM(BertConfig(**shape))
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(tmp, tokenizer=tok)
        theirs = transformers.BertForMaskedLM.from_pretrained(tmp, attn_implementation="sdpa")

    feats = load_mlm_features(args.train, tok, args.max_length, whole_word_mask=True, group=True)
    collate = MaskingCollator(tok, whole_word_mask=True, seed=args.seed)
    order = torch.randperm(len(feats), generator=torch.Generator().manual_seed(args.seed)).tolist()
    if args.steps * args.batch_size > len(order):
        p.error(f"--steps {args.steps} x --batch-size {args.batch_size} needs more than the "
                f"{len(order)} blocks of {args.train}")

    models = {"minibert": ours, "transformers": theirs}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=args.lr, eps=1e-6, weight_decay=0.01) for k, m in models.items()}
    warm = {k: torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / args.warmup))
            for k, o in opts.items()}
    curves: dict[str, list[float]] = {k: [] for k in models}
    window = {k: 0.0 for k in models}
    for m in models.values():
        m.train()
    print(f"{'step':>6} {'minibert':>9} {'transformers':>13}")
    for step in range(args.steps):
        batch = collate([feats[i] for i in order[step * args.batch_size:(step + 1) * args.batch_size]])
        for name, model in models.items():
            loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opts[name].step()
            warm[name].step()
            opts[name].zero_grad(set_to_none=True)
            window[name] += loss.item()
        if (step + 1) % args.window == 0:
            for name in models:
                curves[name].append(window[name] / args.window)
                window[name] = 0.0
            print(f"{step + 1:>6} {curves['minibert'][-1]:>9.3f} {curves['transformers'][-1]:>13.3f}", flush=True)
    gap = max(abs(a - b) for a, b in zip(curves["minibert"], curves["transformers"]))
    print(f"largest gap between the windowed means: {gap:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "curves": curves, "max_gap": gap}, indent=1))


if __name__ == "__main__":
    main()
