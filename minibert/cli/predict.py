"""predict.py / minibert-predict: texts from the command line and --file (any reader format), the
task from the model's config.json (or --task), and each prediction printed or written to --output.
Every task's predict options are flags made from its PredictOptions fields; what is predicted and how
it is shown, written and evaluated, the task's Predictor says. --model takes a folder or a name in
the local Hugging Face cache."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..files import read_lines
from ..run_folder import BEST, CHECKPOINT_PREFIX
from . import shipped
from .errors import UsageError, run_command, show_warnings
from .flags import add_fields, either, from_flags, given_elsewhere
from .writers import OUTPUT_SUFFIXES, emit

PREDICT_EXAMPLES_FIRST = """examples:
  python predict.py                                    # the latest fine-tuned model on 三国人物诸葛[MASK]
"""
PREDICT_EXAMPLES_LAST = """\
  python predict.py --model google-bert/bert-base-chinese "[MASK]国"   # from the Hugging Face cache, offline
"""
INPUT_SUFFIXES = (".txt", ".jsonl", ".json", ".csv", ".tsv")


def predict_parser() -> argparse.ArgumentParser:
    """Where the texts and the model come from and where the predictions go, plus every task's
    options (generated from their PredictOptions fields)."""
    from ..tasks import TASKS

    tasks = list(TASKS.values())
    does = [t.words.predict_does for t in tasks]
    what = f"{', '.join(does[:-1])}, or {does[-1]}," if len(does) > 1 else does[0]
    inputs = "; ".join(f"{t.predict_names[0]}: {t.words.predict_input}" for t in tasks if t.words.predict_input)
    p = argparse.ArgumentParser(
        prog="minibert-predict", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="".join([PREDICT_EXAMPLES_FIRST, *(t.words.predict_examples for t in tasks), PREDICT_EXAMPLES_LAST]),
        description=f"{what[0].upper()}{what[1:]} with a trained model.")
    p.add_argument("texts", nargs="*", help="texts to predict" + (f" ({inputs})" if inputs else ""))
    p.add_argument("--model", type=Path, default=None,
                   help=f"model folder, or a Hugging Face name (ORG/NAME) found in the local Hugging Face cache "
                        f"($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub; nothing is downloaded) "
                        f"(default: the newest model under output/, else models/{shipped.SHIPPED_MODEL.name})")
    p.add_argument("--task", choices=[name for t in tasks for name in t.predict_names], default=None,
                   help="default: read from the model's config.json")
    p.add_argument("--file", type=Path, default=None,
                   help="more texts: .txt, one per line; or .jsonl/.json/.csv/.tsv with the --text-column "
                        "(and --pair-column) fields; a --label-column, where present, is written as gold")
    p.add_argument("--output", type=Path, default=None, metavar="PREDS",
                   help="write one record per text to PREDS, .jsonl or .csv: the text (and pair), the prediction, "
                        + either([f"{t.words.predict_record} ({t.predict_names[0]})" for t in tasks])
                        + ", the gold label when the file has one; replaced only once every prediction is written")
    p.add_argument("--eval", type=Path, default=None,
                   help="; ".join(f"{t.predict_names[0]}: {t.words.predict_eval}" for t in tasks))
    p.add_argument("--json", action="store_true", help="one JSON object per text on stdout")
    added: set[str] = set()
    for task in tasks:
        add_fields(p, task.predict_options, added)
    return p


def default_model() -> Path:
    """The newest model folder under ./output, else the shipped model."""
    found = [p.parent for p in Path("output").glob("**/config.json")
             if CHECKPOINT_PREFIX not in str(p) and p.parent.name != BEST]
    if found:
        return max(found, key=lambda d: (d / "config.json").stat().st_mtime)
    if not shipped.SHIPPED_MODEL.is_dir():
        raise UsageError(f"no model under output/, and the shipped model ({shipped.SHIPPED_MODEL}) is not "
                         "installed (minibert was installed without its repository files); pass --model DIR")
    return shipped.SHIPPED_MODEL


def _read_lines(path: Path) -> list[str]:
    """The non-blank lines of --file, stripped, read as the readers read a .txt corpus."""
    from ..data.readers import MAX_TEXT_CHARS, DataError

    if not path.is_file():
        raise UsageError(f"{path}: file not found")
    return [line.strip() for _, line in read_lines(path, DataError, MAX_TEXT_CHARS, "a text") if line.strip()]


def _read_inputs(args) -> list:
    """The texts to predict: the command line's, then --file's, as readers.Example (label: the gold, or None)."""
    from ..data.readers import Example, read_labelled

    items = [Example(t, None, None, 0) for t in args.texts]
    path = args.file
    if path is None:
        return items
    suffix = path.suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise UsageError(f"--file {path}: unknown extension {path.suffix!r}; use .txt (one text per line), "
                         ".jsonl, .json, .csv or .tsv")
    if suffix == ".txt":
        return items + [Example(t, None, None, n) for n, t in enumerate(_read_lines(path), start=1)]
    return items + read_labelled(path, text_column=args.text_column, label_column=args.label_column,
                                 pair_column=args.pair_column, label_sep=args.label_sep, label_required=False)


def predict_command(argv: list[str] | None) -> int:
    args = predict_parser().parse_args(argv)
    show_warnings()
    from ..checkpoint import load_config
    from ..files import find_model
    from ..runtime import resolve_device
    from ..tasks import TASKS, saved_task

    if args.output is not None and args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(f"--output {args.output}: unknown extension {args.output.suffix!r}; use .jsonl (one JSON "
                         "object per line) or .csv")
    model_dir = find_model(args.model) if args.model else default_model()
    cfg = load_config(model_dir)
    task = next((t for t in TASKS.values() if args.task in t.predict_names), None) or saved_task(cfg)
    task.check_model(cfg, model_dir)
    for other in TASKS.values():
        given = given_elsewhere(args, task.predict_options, other.predict_options) if other is not task else None
        if given:
            raise UsageError(f"{given} is for a {other.kind} model")
    options = from_flags(task.predict_options, args)
    items = _read_inputs(args)
    resolve_device(args.device)
    predictor = task.predictor(model_dir, options, args.eval)
    predictor.check_inputs(items, args.file)

    if args.eval:
        metrics = predictor.evaluate()
        print(json.dumps(metrics, ensure_ascii=False) if args.json else predictor.report(metrics))
        for path in predictor.eval_files(metrics):
            print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
        if not items:
            return 0
    items = items or predictor.default_inputs()
    batches = predictor.stream(items)
    banner = predictor.banner()
    if banner and not args.json and not args.output:
        print(banner)
    emit(args, items, batches, predictor)
    return 0


def predict_main(argv: list[str] | None = None) -> int:
    return run_command("minibert-predict", predict_command, argv)
