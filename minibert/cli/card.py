"""What train.py leaves in --output beside the model: the model card (README.md) and every setting
of the run (train_args.json)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..files import replace_atomically
from ..run_folder import RunFolder


def show_metrics(metrics: dict) -> str:
    from ..metrics import summary_numbers

    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in summary_numbers(metrics).items())


def write_model_card(args, task, source: str, data, n_tokens: int, summary: dict, batch: int,
                     max_length: int) -> None:
    """A short README.md in --output: where the model comes from, what it was trained on, how it
    scored and how to run it; written to a temporary file and renamed into place."""
    out = Path(args.output)
    size = sum(f.stat().st_size for f in _files(train_paths(args)))
    train = ", ".join(f"`{p}`" for p in train_paths(args))
    evaluation = f"`{args.eval}`" if args.eval else f"{args.eval_split:g} of the training file" if args.eval_split \
        else "none"
    lines = [
        "---", "library_name: minibert", f"pipeline_tag: {task.pipeline_tag}",
        "---", "", f"# {out.name}", "",
        "Trained with minibert's `train.py`; a Hugging Face BERT folder (`transformers` loads it too).", "",
        "| | |", "|---|---|",
        f"| base model | {source} |",
        f"| task | {task.name} ({task.card_summary(data.config)}) |",
        f"| training data | {train}: {size:,} bytes, {len(data.train):,} examples, {n_tokens:,} tokens |",
        f"| evaluation data | {evaluation}" + (f", {len(data.eval):,} examples" if data.eval else "") + " |",
        f"| training | {summary['steps']:,} steps, batch {batch}, lr {args.lr:g}, max length {max_length}, "
        f"{summary['seconds']:.0f} s |",
        f"| final metrics | {show_metrics(summary['eval']) if summary['eval'] else 'no evaluation'} |",
        "", "Every setting of the run: `train_args.json`; the metrics at each evaluation: `metrics.jsonl`.", "",
        "## Predict", "", "```sh",
        f'python predict.py --model {out} "{task.example_text}"',
        f"python predict.py --model {out} --file texts.jsonl --output predictions.jsonl",
        *([f"python predict.py --model {out} --eval {args.eval}"] if args.eval else []),
        "```", "",
    ]
    replace_atomically(RunFolder(out).model_card, lambda tmp: tmp.write_text("\n".join(lines), encoding="utf-8"))


def train_paths(args) -> list[Path]:
    """--train as a list: one path (a file or folder), or the several a corpus task was given."""
    return args.train if isinstance(args.train, list) else [args.train]


def _files(paths: list[Path]) -> list[Path]:
    """The files of --train: folders stand for the .txt files in them."""
    from ..data.token_cache import corpus_files

    return corpus_files(paths) if any(p.is_dir() for p in paths) else paths


def write_train_args(args, task, tcfg) -> None:
    """Every setting of the run as resolved (job defaults filled in), to --output/train_args.json."""
    settings = {**vars(args), **dataclasses.asdict(task), **dataclasses.asdict(tcfg)}
    run = RunFolder(tcfg.output)
    run.path.mkdir(parents=True, exist_ok=True)
    text = json.dumps(settings, indent=2, ensure_ascii=False, default=str)
    run.train_args.write_text(text + "\n", encoding="utf-8")
