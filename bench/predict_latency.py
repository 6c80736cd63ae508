"""Fill-mask prediction: minibert.FillMask against transformers' pipeline("fill-mask").

Cold start: the wall time of a whole fresh process that imports the library, loads the model folder
and predicts one text, as `predict.py` or a short script does; the process also reports its own
import / load / predict split. The two libraries alternate run by run (order reversed every other
round); the median of --runs each is reported.

Batched: in one process, both loaded once, the time to fill --texts texts (one [MASK] each, cut from
real sentences when data/zh/pretrain_valid.txt or examples/three_kingdoms.json is there) in batches of
--batch-size, after one warm-up pass; interleaved, median of --runs. The share of texts where both
libraries rank the same token first is printed as a check that they compute the same thing.

The model folder is --model, by default models/zh-small when it exists, otherwise a randomly
initialised zh-small-shaped BertForMaskedLM that transformers saves with vocab/zh.txt into a temporary
folder (speed does not depend on the weights). Both run offline (HF_HUB_OFFLINE=1).

    .venv/bin/python bench/predict_latency.py [--model models/zh-small] [--device cpu] [--runs 5]
    .venv/bin/python bench/predict_latency.py --runs 1 --texts 16   # smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from common import ROOT, SHAPES, environment, markdown_table

from minibert import FillMask
from minibert.data import read_texts

TEXT = "三国人物诸葛[MASK]"
IMPLS = ("minibert", "transformers")
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

# Each child prints {"import", "load", "predict": seconds, "top": best token} on its last line.
COLD = {
    "minibert": """
import time
t0 = time.perf_counter()
import json
from minibert import FillMask
t1 = time.perf_counter()
fill = FillMask.from_pretrained({folder!r}, device={device!r})
t2 = time.perf_counter()
top = fill({text!r})[0].masks[0].candidates[0].token
t3 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "load": t2 - t1, "predict": t3 - t2, "top": top}}))
""",
    "transformers": """
import time
t0 = time.perf_counter()
import json
from transformers import pipeline
t1 = time.perf_counter()
fill = pipeline("fill-mask", model={folder!r}, device={device!r})
t2 = time.perf_counter()
top = fill({text!r})[0]["token_str"]
t3 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "load": t2 - t1, "predict": t3 - t2, "top": top}}))
""",
}


def random_model_folder(folder: Path) -> Path:
    """A zh-small-shaped BertForMaskedLM with random weights and the shipped vocabulary, saved by transformers."""
    torch.manual_seed(0)
    transformers.BertForMaskedLM(transformers.BertConfig(**SHAPES["zh-small"])).save_pretrained(folder)
    transformers.BertTokenizer(vocab=str(ROOT / "vocab" / "zh.txt"), do_lower_case=True).save_pretrained(folder)
    return folder


def sample_texts(n: int, seed: int = 0) -> list[str]:
    """n texts of 8-100 characters with one character replaced by [MASK]."""
    sources = [ROOT / "data" / "zh" / "pretrain_valid.txt", ROOT / "examples" / "three_kingdoms.json"]
    lines: list[str] = []
    for path in sources:
        if path.exists():
            lines = [t.replace(" ", "")[:100] for t in read_texts(path)]
            lines = [t for t in lines if len(t) >= 8]
            break
    rng = random.Random(seed)
    if not lines:  # no corpus at hand: strings of common characters
        lines = ["".join(rng.choice("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年")
                         for _ in range(rng.randint(8, 100))) for _ in range(n)]
    texts = []
    for i in range(n):
        t = lines[i % len(lines)]
        k = rng.randrange(len(t))
        texts.append(t[:k] + "[MASK]" + t[k + 1:])
    return texts


def cold_run(impl: str, folder: Path, device: str) -> dict:
    code = COLD[impl].format(folder=str(folder), device=device, text=TEXT)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **OFFLINE},
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{impl} cold run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"wall": wall, **json.loads(proc.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: models/zh-small, else a random one)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--runs", type=int, default=5, help="runs per library, interleaved; the median is reported")
    parser.add_argument("--texts", type=int, default=256, help="texts for the batched measurement")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    os.environ.update(OFFLINE)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.model) if args.model else ROOT / "models" / "zh-small"
        random_weights = not args.model and not (folder / "config.json").exists()
        if random_weights:
            folder = random_model_folder(Path(tmp) / "zh-small-random")
        env = environment(torch.device(args.device))
        print(f"torch {env['torch']}, transformers {env['transformers']}, {env['device']}, {env['threads']} threads, "
              f"load average {env['load_average'][0]:.2f}")
        print(f"model {folder}{' (random weights)' if random_weights else ''}, {args.runs} runs, device {args.device}")

        cold: dict[str, list[dict]] = {impl: [] for impl in IMPLS}
        for r in range(args.runs):
            for impl in IMPLS if r % 2 == 0 else IMPLS[::-1]:
                cold[impl].append(cold_run(impl, folder, args.device))

        texts = sample_texts(args.texts)
        predictors = {
            "minibert": (FillMask.from_pretrained(folder, device=args.device),
                         lambda f, ts: [r.masks[0].candidates[0].token for r in f(ts, batch_size=args.batch_size)]),
            "transformers": (transformers.pipeline("fill-mask", model=str(folder), device=args.device),
                             lambda f, ts: [r[0]["token_str"] for r in f(ts, batch_size=args.batch_size)]),
        }
        tops = {impl: run(model, texts) for impl, (model, run) in predictors.items()}  # warm-up
        agreement = sum(a == b for a, b in zip(tops["minibert"], tops["transformers"])) / len(texts)
        batched: dict[str, list[float]] = {impl: [] for impl in IMPLS}
        for r in range(args.runs):
            for impl in IMPLS if r % 2 == 0 else IMPLS[::-1]:
                model, run = predictors[impl]
                start = time.perf_counter()
                run(model, texts)
                batched[impl].append(len(texts) / (time.perf_counter() - start))

    results = {impl: {key: statistics.median(run[key] for run in cold[impl])
                      for key in ("wall", "import", "load", "predict")} for impl in IMPLS}
    for impl in IMPLS:
        results[impl]["texts_per_s"] = statistics.median(batched[impl])
        results[impl]["top"] = cold[impl][0]["top"]
    rows = [[impl, f"{r['wall'] * 1e3:,.0f}", f"{r['import'] * 1e3:,.0f}", f"{r['load'] * 1e3:,.0f}",
             f"{r['predict'] * 1e3:,.0f}", f"{r['texts_per_s']:,.1f}", r["top"]] for impl, r in results.items()]
    mb, tf = results["minibert"], results["transformers"]
    rows.append(["transformers / minibert", f"{tf['wall'] / mb['wall']:.2f}x", f"{tf['import'] / mb['import']:.2f}x",
                 f"{tf['load'] / mb['load']:.2f}x", f"{tf['predict'] / mb['predict']:.2f}x",
                 f"{mb['texts_per_s'] / tf['texts_per_s']:.2f}x (minibert / transformers)", ""])
    print()
    print(markdown_table(["library", "cold process ms (median)", "import ms", "load ms", "first predict ms",
                          f"batched texts/s ({args.texts} texts, batch {args.batch_size})", f"top-1 for {TEXT}"],
                         rows))
    print(f"\ntop-1 agreement over the {len(texts)} batched texts: {agreement:.1%}")
    env["load_average_end"] = os.getloadavg()
    print(f"load average at the end: {env['load_average_end'][0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "args": vars(args), "results": results, "agreement": agreement,
                       "cold_runs": cold, "batched_runs": batched}, f, indent=2)


if __name__ == "__main__":
    main()
