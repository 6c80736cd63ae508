"""Held-out accuracy and perplexity against tokens seen, for one or more pre-training runs, as a PNG
and a Markdown table. Reads the `eval` records of each run's metrics.jsonl; needs matplotlib
(`pip install -e ".[plot]"`).

    python bench/plot_pretraining.py --out BENCHMARKS_pretraining.png \\
        --run "new recipe=runs/zh-small/phase1/metrics.jsonl,runs/zh-small/phase2/metrics.jsonl" \\
        --run "old recipe=runs/old/metrics.jsonl"

A run given as several files joined with "," is one curve: later files (later phases, started
from the earlier phase's weights) continue where the earlier ones stopped. A file whose records
predate the `tokens` field takes `PATH@TOKENS_PER_STEP` (e.g. 8192 for 128 blocks of 64 tokens).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_curve(spec: str) -> list[dict]:
    """Eval records of one run (its phases in order), each with cumulative `tokens` and `step`."""
    points, token_offset, step_offset = [], 0, 0
    for part in spec.split(","):
        path, _, per_step = part.partition("@")
        records = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        tokens = lambda row: row.get("tokens", row["step"] * int(per_step or 0))  # noqa: E731
        logged = [r for r in records if "loss" in r]  # one line per --log-every steps, the last at the end
        for e in (r["eval"] for r in records if "eval" in r):
            if not tokens(e):
                sys.exit(f"{path}: eval records have no 'tokens'; give it as {path}@TOKENS_PER_STEP")
            points.append({**e, "tokens": token_offset + tokens(e), "step": step_offset + e["step"]})
        token_offset += tokens(logged[-1])
        step_offset += logged[-1]["step"]
    return points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, metavar="LABEL=FILE[,FILE...]",
                    help="a curve: its label and metrics.jsonl file(s) (repeatable)")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--title", default="Pre-training zh-small: held-out masked-token accuracy and perplexity")
    args = ap.parse_args()
    try:
        import matplotlib
    except ImportError:
        sys.exit('plotting needs matplotlib: pip install -e ".[plot]"')
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {}
    for spec in args.run:
        label, sep, files = spec.partition("=")
        if not sep:
            sys.exit(f"--run {spec!r}: write LABEL=FILE")
        curves[label] = read_curve(files)

    fig, (acc_ax, ppl_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, pts in curves.items():
        x = [p["tokens"] / 1e6 for p in pts]
        acc_ax.plot(x, [100 * p["accuracy"] for p in pts], marker=".", label=label)
        ppl_ax.plot(x, [p["perplexity"] for p in pts], marker=".", label=label)
    acc_ax.set(xlabel="tokens seen (millions)", ylabel="held-out masked-token accuracy (%)")
    ppl_ax.set(xlabel="tokens seen (millions)", ylabel="held-out perplexity (log scale)", yscale="log")
    for ax in (acc_ax, ppl_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}\n")

    print("| run | steps | tokens seen | held-out accuracy | perplexity | best accuracy |\n|---|---|---|---|---|---|")
    for label, pts in curves.items():
        last, best = pts[-1], max(pts, key=lambda p: p["accuracy"])
        print(f"| {label} | {last['step']:,} | {last['tokens'] / 1e6:.1f}M | {100 * last['accuracy']:.1f}% | "
              f"{last['perplexity']:.1f} | {100 * best['accuracy']:.1f}% (step {best['step']:,}) |")


if __name__ == "__main__":
    main()
