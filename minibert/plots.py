"""Pictures of a run: curves.png from metrics.jsonl, and a classifier's confusion matrix.

    python -m minibert.plots OUTPUT_DIR            # OUTPUT_DIR/curves.png from OUTPUT_DIR/metrics.jsonl
    python -m minibert.plots OUTPUT_DIR --out run.png

The trainer writes curves.png at the end of every run; `predict.py --eval FILE --confusion-png
PNG` draws the confusion matrix. matplotlib is an optional extra (`pip install 'minibert[plot]'`),
imported only here and only when a picture is drawn, through its Agg canvas: nothing changes the
backend of a matplotlib session the caller may have open. Imports no torch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from .run_folder import RunFolder

INSTALL = "pip install 'minibert[plot]'"
# Tried after DejaVu Sans for characters it lacks (Chinese labels), where the machine has them.
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei",
             "WenQuanYi Zen Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC")
# Eval numbers that are counts or positions, not measurements: never plotted.
NOT_PLOTTED = {"step", "tokens", "examples", "masked_tokens", "eval_loss"}  # eval_loss goes with the training loss


class PlotUnavailable(ImportError):
    """matplotlib is not installed; the message says how to get it."""


def load_matplotlib():
    """(Figure, FigureCanvasAgg, rc_context), or PlotUnavailable."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable(f"matplotlib is not installed; {INSTALL}") from None
    return Figure, FigureCanvasAgg, matplotlib.rc_context


@contextmanager
def _style(rc_context):
    """Fonts with CJK fallbacks where installed; a character no font has is drawn as a box, not warned about."""
    from matplotlib import font_manager

    have = {f.name for f in font_manager.fontManager.ttflist}
    fonts = ["DejaVu Sans", *(name for name in CJK_FONTS if name in have)]
    with rc_context({"font.family": fonts}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Gg]lyph.*")
        yield


def _save(fig, canvas_class, path: Path) -> Path:
    canvas_class(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def read_metrics(path: Path) -> tuple[list[dict], list[dict], dict | None]:
    """(training records, eval records, the last summary) of a metrics.jsonl, each kind by step. A step
    logged twice (a run resumed from a checkpoint before it) keeps its last record."""
    train: dict[int, dict] = {}
    evals: dict[int, dict] = {}
    summary = None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{n}: not a JSON line") from None
        if "summary" in record:
            summary = record["summary"]
        elif "eval" in record:
            evals[record["eval"]["step"]] = record["eval"]
        elif "loss" in record:
            train[record["step"]] = record
    return [train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)], summary


def plot_run(output: str | Path, path: str | Path | None = None) -> Path:
    """Draw output/metrics.jsonl into `path` (default output/curves.png): the training loss (and the
    eval loss) and the learning rate against step, and each eval metric against step, the best step
    marked. ValueError when there is nothing to draw; PlotUnavailable without matplotlib."""
    run = RunFolder(output)
    source = run.metrics
    if not source.is_file():
        raise ValueError(f"{source}: not found; give the --output folder of a training run")
    train, evals, summary = read_metrics(source)
    if not train:
        raise ValueError(f"{source}: no training records to plot")
    Figure, Canvas, rc_context = load_matplotlib()
    metrics = [k for k in evals[-1] if k not in NOT_PLOTTED and isinstance(evals[-1][k], (int, float))] \
        if evals else []
    n = 2 + len(metrics)
    cols = 2 if n == 4 else min(n, 3)
    rows = math.ceil(n / cols)
    best_step = summary.get("best_step") if summary else None
    with _style(rc_context):
        fig = Figure(figsize=(5 * cols, 3.6 * rows))
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        steps = [r["step"] for r in train]
        loss_ax, lr_ax = axes[0], axes[1]
        loss_ax.plot(steps, [r["loss"] for r in train], label="training loss")
        if evals and "eval_loss" in evals[-1]:
            loss_ax.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], marker="o", label="eval loss")
        loss_ax.set(title="loss", xlabel="step")
        loss_ax.legend()
        lr_ax.plot(steps, [r["lr"] for r in train])
        lr_ax.set(title="learning rate", xlabel="step")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        for ax, name in zip(axes[2:], metrics, strict=False):
            ax.plot([e["step"] for e in evals], [e[name] for e in evals], marker="o")
            ax.set(title=f"eval {name}", xlabel="step")
        for ax in axes[:n]:
            ax.grid(alpha=0.3)
        if best_step is not None:
            metric = summary.get("metric")
            for ax in (axes[0], *axes[2:n]):
                ax.axvline(best_step, color="gray", linestyle="--", linewidth=1)
            fig.suptitle(f"{run.path.name}: best {metric} at step {best_step} (dashed)")
        for ax in axes[n:]:
            ax.set_visible(False)
        fig.tight_layout()
        return _save(fig, Canvas, Path(path) if path else run.curves)


def plot_confusion(confusion: list[list[int]], labels: list[str], path: str | Path, title: str = "") -> Path:
    """The confusion matrix (rows: true label, columns: predicted) as a heat map with its counts."""
    Figure, Canvas, rc_context = load_matplotlib()
    k = len(labels)
    size = min(max(4.0, 0.5 * k + 2), 20)
    with _style(rc_context):
        fig = Figure(figsize=(size + 1, size))
        ax = fig.subplots()
        image = ax.imshow(confusion, cmap="Blues")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(k), labels, rotation=45 if max(map(len, labels)) > 3 else 0, ha="right")
        ax.set_yticks(range(k), labels)
        ax.set(xlabel="predicted", ylabel="true label", title=title or "confusion matrix")
        if k <= 30:  # beyond that the numbers no longer fit their cells
            top = max(max(row) for row in confusion) or 1
            for i, row in enumerate(confusion):
                for j, v in enumerate(row):
                    ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
        fig.tight_layout()
        return _save(fig, Canvas, Path(path))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m minibert.plots",
                                description="Draw a training run's metrics.jsonl as curves.png (needs matplotlib: "
                                            f"{INSTALL}).")
    p.add_argument("output", type=Path, help="the --output folder of a training run")
    p.add_argument("--out", type=Path, default=None, help="PNG to write (default: OUTPUT/curves.png)")
    args = p.parse_args(argv)
    try:
        print(f"wrote {plot_run(args.output, args.out)}")
    except (PlotUnavailable, ValueError, OSError) as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
