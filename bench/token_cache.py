"""The token cache against the in-memory path: preparation speed and memory on a corpus of 1 GB or
more that this script builds, and pre-training runs (the shipped recipe's phase 1) on it and on 5 MB.

    python bench/token_cache.py                      # 1 GB corpus under /tmp/minibert-bench
    python bench/token_cache.py --size-mb 2048 --steps 30 --rounds 2 --work /data/bench

The corpus is data/zh/pretrain.txt (`make data`) repeated, each copy's lines in a fresh seeded order,
until it passes --size-mb MiB. Measured, each train.py run a process of its own, its anonymous memory
(RssAnon in /proc/PID/status: the process's own pages, not the page cache of the mapped files)
sampled every 20 ms:

  preparation    train.py --prepare-only on the big corpus: MB of text per second, peak RssAnon
  runs           phase 1 of scripts/pretrain_zh.sh (--group-texts, 128 x 64 tokens; warm-up 1 step) for --steps on
                 (a) the 5 MB corpus as JSONL, read into memory (the path .json/.jsonl files take),
                 (b) the same 5 MB as .txt through the token cache, (c) the big corpus through the cache;
                 interleaved a, b, c, a, b, c, ... for --rounds rounds. Each: peak RssAnon, seconds from
                 the process's start to its first optimizer step (the first record in metrics.jsonl),
                 and training tokens/s (median of the per-step rates after the first 3 steps).

Prints a Markdown table and writes the numbers to --json. Name the CPU next to them (lscpu).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "data" / "zh" / "pretrain.txt"
PHASE1 = ["--task", "mlm", "--config", "zh-small", "--vocab", str(ROOT / "vocab" / "zh.txt"), "--dropout", "0",
          "--precision", "auto", "--group-texts", "--max-length", "64", "--batch-size", "128", "--lr", "1e-3",
          "--warmup", "1", "--log-every", "1", "--save-every", "0", "--no-progress"]


def build_corpora(work: Path, size_mb: int, small_mb: float) -> tuple[Path, Path, Path]:
    """(big .txt of at least size_mb MiB, small .txt of about small_mb MB, the small one as JSONL)."""
    lines = [line for line in SOURCE.read_text(encoding="utf-8").splitlines() if line.strip()]
    small, small_jsonl, big = work / "small.txt", work / "small.jsonl", work / f"big_{size_mb}mib.txt"
    if not small.exists():
        taken, size = [], 0
        for line in lines:
            if size >= small_mb * 1e6:
                break
            taken.append(line)
            size += len(line.encode()) + 1
        small.write_text("".join(t + "\n" for t in taken), encoding="utf-8")
        small_jsonl.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in taken),
                               encoding="utf-8")
    if not big.exists() or big.stat().st_size < size_mb << 20:
        tmp = big.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            rng, written = random.Random(0), 0
            while written < size_mb << 20:
                rng.shuffle(lines)
                chunk = "".join(t + "\n" for t in lines)
                f.write(chunk)
                written += len(chunk.encode())
        tmp.replace(big)
    return big, small, small_jsonl


def run(cmd: list[str], metrics: Path | None = None) -> dict:
    """Run `cmd`, sampling its RssAnon; with `metrics`, also when its first record appeared."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    peak, first_step = 0, None
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, int(next(line.split()[1] for line in status.splitlines() if line.startswith("RssAnon"))))
        except (OSError, StopIteration):
            pass
        if first_step is None and metrics is not None and metrics.exists() and metrics.stat().st_size:
            first_step = time.perf_counter() - start
        time.sleep(0.02)
    reader.join()
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{''.join(output)[-3000:]}")
    result = {"wall_s": round(wall, 2), "peak_rss_anon_mb": round(peak / 1024, 1), "output": "".join(output)}
    if metrics is not None:
        records = [json.loads(line) for line in metrics.read_text().splitlines() if '"loss"' in line]
        rates = [r["tokens_per_s"] for r in records if r["step"] > 3]
        result["first_step_s"] = round(first_step, 2) if first_step is not None else None
        result["tokens_per_s"] = round(statistics.median(rates), 1) if rates else None
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/minibert-bench"), help="corpora, cache and runs go here")
    ap.add_argument("--size-mb", type=int, default=1024, help="the big corpus, in MiB of text (default: 1024)")
    ap.add_argument("--small-mb", type=float, default=5.0, help="the small corpus (default: 5)")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per run (default: 20)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the three runs (default: 2)")
    ap.add_argument("--runs-only", action="store_true",
                    help="skip the preparation measurement (the caches of an earlier run are used, or made)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "token_cache.json")
    args = ap.parse_args()
    if not SOURCE.exists():
        sys.exit(f"{SOURCE} is missing: run `make data` first")
    args.work.mkdir(parents=True, exist_ok=True)
    big, small, small_jsonl = build_corpora(args.work, args.size_mb, args.small_mb)
    cache = args.work / "cache"
    py = [sys.executable, str(ROOT / "train.py")]
    results: dict = {"corpus_bytes": {"big": big.stat().st_size, "small": small.stat().st_size}}

    prepare = [*py, *PHASE1[:6], "--prepare-only", "--cache-dir", str(cache), "--no-progress", "--train"]
    if not args.runs_only:
        # Preparation from nothing: an earlier cache of the big corpus is removed first.
        for old in cache.glob("*"):
            meta = old / "cache.json"
            if meta.exists() and json.loads(meta.read_text())["bytes"] == big.stat().st_size:
                subprocess.run(["rm", "-rf", str(old)], check=True)
        prep = run([*prepare, str(big)])
        prep["mb_per_s"] = round(big.stat().st_size / 1e6 / prep["wall_s"], 2)
        again = run([*prepare, str(big)])
        results["prepare"] = {k: v for k, v in prep.items() if k != "output"}
        results["prepare_again_s"] = again["wall_s"]
        print(prep["output"].strip().splitlines()[-2])
        print(f"\npreparation of {big.stat().st_size / 1e6:,.0f} MB: {prep['wall_s']:.1f} s, {prep['mb_per_s']} MB/s, "
              f"peak RssAnon {prep['peak_rss_anon_mb']:.0f} MB; found again in {again['wall_s']:.1f} s\n", flush=True)
    run([*prepare, str(big)])
    run([*prepare, str(small)])

    cases = {"5 MB JSONL, in memory": small_jsonl, "5 MB .txt, token cache": small,
             f"{big.stat().st_size / 1e9:.2f} GB .txt, token cache": big}
    runs: dict[str, list[dict]] = {name: [] for name in cases}
    for r in range(args.rounds):
        for name, corpus in cases.items():
            out = args.work / f"run-{r}-{corpus.name}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            result = run([*py, *PHASE1, "--train", str(corpus), "--cache-dir", str(cache), "--max-steps",
                          str(args.steps), "--output", str(out)], metrics=out / "metrics.jsonl")
            result.pop("output")
            runs[name].append(result)
            print(f"round {r + 1} {name}: {result}", flush=True)
    results["runs"] = runs

    print("| corpus | peak RssAnon (MB) | start to first step (s) | tokens/s |")
    print("|---|---|---|---|")
    for name, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("peak_rss_anon_mb", "first_step_s", "tokens_per_s")}
        results.setdefault("medians", {})[name] = med
        print(f"| {name} | {med['peak_rss_anon_mb']:.0f} | {med['first_step_s']:.1f} | {med['tokens_per_s']:.0f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
