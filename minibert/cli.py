"""Command lines of train.py / minibert-train and predict.py / minibert-predict.

Both are thin layers over the library: parse flags, build the pieces, print what happens. train.py's
flags are made from the fields of TrainConfig and of the task dataclasses (tasks.py), so a setting
is declared once, with its help text; the task object then reads the data and builds the batches.
Every expected failure (bad file, bad folder, bad flag) is one line on stderr and exit status 2.
train.py ends by writing a model card (README.md) into --output; predict.py reads texts from the
command line and --file (any reader format) and prints them, or writes them to --output
(.jsonl/.csv) through a temporary file renamed at the end. --model takes a folder or a name in the
local Hugging Face cache. The default jobs use the repository's models/, vocab/ and examples/, which
a `pip install .` lacks: then the error names the flags to pass instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import typing
import warnings
from pathlib import Path

from .files import read_lines, replace_atomically
from .plots import INSTALL

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = ROOT / "models" / "zh-small"
DEMO_TRAIN = ROOT / "examples" / "three_kingdoms.json"
SHIPPED_VOCAB = ROOT / "vocab" / "zh.txt"
MODEL_CARD = "README.md"  # written to --output at the end of training
DEMO_OUTPUT = Path("output") / "three_kingdoms"
DEMO_QUERY = "三国人物诸葛[MASK]"
# Defaults that depend on the job; README "Fine-tuning defaults" says why these values.
SCRATCH_LR = 1e-3  # pre-training from --config
# Fill-mask fine-tuning of a trained model (--task mlm --model DIR): small batches, no dropout and a
# gentle rate teach a fact from ~60 sentences in 10 epochs at a cost of under 2 points of held-out
# accuracy (README, "Fine-tuning defaults").
MLM_FINETUNE_LR, MLM_FINETUNE_BATCH, MLM_FINETUNE_DROPOUT = 1.2e-4, 8, 0.0
DEMO_EPOCHS = 10  # the default job: 60 sentences, 80 steps
CLASSIFY_METRICS = ("accuracy", "macro_f1", "micro_f1", "exact_match", "eval_loss")  # over the problem types
DEFAULT_MAX_LENGTH = 128  # --max-length; the model's own positions cap it


class UsageError(Exception):
    """Wrong input from the user: printed as one line, exit status 2."""


def _fail(prog: str, message: str, status: int = 2) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return status


def _run(prog: str, fn, argv) -> int:
    """Run a command, turning expected errors into one line on stderr instead of a traceback.

    When stdout's reader goes away (`predict.py ... | head -1`) the command stops quietly with exit
    status 141, 128 + SIGPIPE, what a shell shows for a writer the closed pipe ended.
    """
    import torch

    from .checkpoint import CheckpointError
    from .data.readers import DataError
    from .lock import LockError
    from .trainer import TrainingError

    try:
        status = fn(argv) or 0
        sys.stdout.flush()  # so that a closed pipe shows here, not in the interpreter's flush at exit
        return status
    except BrokenPipeError:
        # Python flushes stdout once more at exit and would report the broken pipe again; a stdout
        # pointing at /dev/null takes that flush (Python docs, signal module, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt as e:  # the trainer's Interrupted carries 143 for SIGTERM
        return _fail(prog, str(e) or "interrupted", getattr(e, "exit_status", 130))
    except torch.OutOfMemoryError:
        return _fail(prog, "out of memory; lower --batch-size (raise --grad-accum to keep the effective batch) "
                           "or --max-length")
    except (UsageError, DataError, CheckpointError, TrainingError, LockError, FileNotFoundError,
            ValueError) as e:
        return _fail(prog, str(e).splitlines()[0] if str(e) else type(e).__name__)
    except RuntimeError as e:
        if "out of memory" in str(e) or "can't allocate memory" in str(e):
            return _fail(prog, "out of memory; lower --batch-size (raise --grad-accum to keep the effective "
                               "batch) or --max-length")
        raise


def _show_warnings() -> None:
    """Library warnings as one plain line each, not Python's file:line form."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show


# ============================================================================ train

TRAIN_EPILOG = """examples:
  # the default job: fine-tune the shipped Chinese model on the Three Kingdoms sentences
  python train.py
  # cloze fine-tuning of your own checkpoint
  python train.py --task mlm --model path/to/bert --train train.json --output out/mlm
  # text classification (labels read from the file), 10%% held out for evaluation
  python train.py --task classify --model models/zh-small --train reviews.jsonl --eval-split 0.1 --output out/clf
  # evaluate every epoch, best/ by macro-F1, stop after 2 evaluations without improvement
  python train.py --task classify --model models/zh-small --train reviews.jsonl --eval test.jsonl \
      --eval-every epoch --metric macro_f1 --patience 2 --epochs 20 --output out/clf
  # pre-training from scratch with whole-word masking on a segmented corpus
  python train.py --task mlm --config zh-small --vocab vocab/zh.txt --train corpus.txt --group-texts \\
      --whole-word-mask --output out/pretrain
  # several processes (GPUs, or CPU with gloo)
  torchrun --nproc_per_node=4 train.py ...
"""
TRAIN_ARGS = "train_args.json"  # the resolved settings, written to --output


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar_type(hint) -> type:
    """int, float or str, from a field's type (`int | None` -> int)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _show_default(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def add_fields(group, cls: type, added: set[str], prefixes: dict[str, str] | None = None,
               defaults: dict[str, tuple] | None = None) -> None:
    """One flag per field of dataclass `cls`, from its type, default and metadata (help, and choices,
    type or metavar where the type says too little); fields in `added` already have a flag.

    A bool field that is off by default is a switch (--compile); one that is on, a --no- switch
    (--no-progress). prefixes: field -> words put before its help (the task a flag is for).
    defaults: field -> (flag default, the default the help states), for defaults that depend on the job.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.name in added:
            continue
        added.add(f.name)
        meta = dict(f.metadata)
        text = ((prefixes or {}).get(f.name, "") + meta.pop("help")).replace("%", "%%")  # argparse formats help
        if hints[f.name] is bool:
            if f.default:
                group.add_argument(_flag("no_" + f.name), dest=f.name, action="store_false", help=f"do not {text}")
            else:
                group.add_argument(_flag(f.name), action="store_true", help=text)
            continue
        default, shown = (defaults or {}).get(f.name, (f.default, f.default))
        if shown is not None:
            text += f" (default: {_show_default(shown)})"
        meta["type"] = _argparse_type(meta["type"]) if "type" in meta else _scalar_type(hints[f.name])
        group.add_argument(_flag(f.name), default=default, help=text, **meta)


def _argparse_type(parse):
    """A field's parser as an argparse type: its ValueError message becomes the flag's error."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__
    return convert


def train_parser() -> argparse.ArgumentParser:
    """The flags of TrainConfig and of every task (generated from their fields), plus the few that
    say where the model and data come from and what to do with the output folder."""
    from .tasks import TASKS
    from .trainer import TrainConfig

    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="minibert-train", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=TRAIN_EPILOG,
        description="Fine-tune (or pre-train) a BERT for masked-LM (cloze) or text classification. "
                    "With no arguments: fine-tune the shipped model on the Three Kingdoms example.")
    g = p.add_argument_group("what to train")
    g.add_argument("--task", choices=list(TASKS), default="mlm",
                   help="mlm: masked-language-model (fill-mask) training; classify: sequence classification "
                        "(default: %(default)s)")
    g.add_argument("--model", type=Path, default=None,
                   help=f"Hugging Face BERT folder or minibert output to start from, or a Hugging Face name "
                        f"(ORG/NAME) found in the local Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub or "
                        f"~/.cache/huggingface/hub; nothing is downloaded) (default: {SHIPPED_MODEL.name} "
                        "shipped in models/, unless --config is given)")
    g.add_argument("--config", default=None,
                   help="train from scratch: a config.json or a preset name (tiny, zh-small, bert-base); "
                        "needs --vocab")
    g.add_argument("--vocab", type=Path, default=None, help="vocab.txt for --config (default: vocab/zh.txt)")
    g.add_argument("--dropout", type=float, default=None, metavar="P",
                   help=f"hidden and attention dropout for this run (default: {MLM_FINETUNE_DROPOUT:g} for mlm "
                        "fine-tuning, else the model's config.json, 0.1 for the presets). 0 suits pre-training "
                        "from scratch too. The saved config.json keeps the model's own value, for fine-tuning "
                        "later, unless --dropout-in-config")
    g.add_argument("--dropout-in-config", action="store_true",
                   help="write --dropout into the saved config.json too")

    g = p.add_argument_group("data")
    g.add_argument("--train", type=Path, default=None,
                   help="training file: .txt/.json/.jsonl for mlm; .json/.jsonl/.csv/.tsv with text and label "
                        "for classify (default: examples/three_kingdoms.json)")
    g.add_argument("--eval", type=Path, default=None, help="evaluation file in the same format")
    g.add_argument("--eval-split", type=float, default=0.0,
                   help="hold out this fraction of --train for evaluation, seeded by --seed (default: none)")
    added: set[str] = set()
    options = {name: {f.name for f in dataclasses.fields(task) if f.init} for name, task in TASKS.items()}
    shared = set.intersection(*options.values())  # these need no "mlm: " before their help
    for name, task in TASKS.items():
        add_fields(g, task, added, prefixes={f: f"{name}: " for f in options[name] - shared})

    g = p.add_argument_group("training")
    add_fields(g, TrainConfig, added, defaults={
        "output": (None, f"{DEMO_OUTPUT} for the default job"),
        "epochs": (None, f"{d.epochs}; {DEMO_EPOCHS} for the default job"),
        "batch_size": (None, f"{MLM_FINETUNE_BATCH} for mlm fine-tuning, {d.batch_size} otherwise"),
        "lr": (None, f"{SCRATCH_LR:g} from scratch, {MLM_FINETUNE_LR:g} for mlm fine-tuning, {d.lr:g} for classify"),
        "max_length": (DEFAULT_MAX_LENGTH, DEFAULT_MAX_LENGTH),
    })

    g = p.add_argument_group("output folder")
    g.add_argument("--overwrite", action="store_true", help="replace a model already in --output")
    g.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                   help="continue from the latest checkpoint in --output, or from PATH")
    return p


def _init_distributed():
    """torchrun sets RANK/WORLD_SIZE; then join the process group (NCCL on GPUs, gloo on CPU)."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _resolve_job(args) -> None:
    """Fill in the flags whose default depends on the job, and check the ones that must be given."""
    from .trainer import EPOCH, TrainConfig

    default_job = args.model is None and args.config is None and args.train is None
    if args.model is None and args.config is None:
        args.model = SHIPPED_MODEL
    if args.train is None:
        if not default_job:
            raise UsageError("--train FILE is required (the training data)")
        args.train = DEMO_TRAIN
    if args.output is None:
        if not default_job:
            raise UsageError("--output DIR is required (where the trained model goes)")
        args.output = str(DEMO_OUTPUT)
    if args.model is not None and args.config is not None:
        raise UsageError("give either --model (fine-tune) or --config (train from scratch), not both")
    if args.config is not None and args.vocab is None:
        args.vocab = SHIPPED_VOCAB
    _check_shipped(args)
    if args.model is not None:
        from .files import find_model

        args.model = find_model(args.model)
    if args.epochs is None:
        args.epochs = DEMO_EPOCHS if default_job else TrainConfig.epochs
    mlm_finetune = args.task == "mlm" and args.config is None
    if args.batch_size is None:
        args.batch_size = MLM_FINETUNE_BATCH if mlm_finetune else TrainConfig.batch_size
    if args.dropout is None and mlm_finetune:
        args.dropout = MLM_FINETUNE_DROPOUT  # this run only: the saved config.json keeps the model's value
    if args.lr is None:
        args.lr = SCRATCH_LR if args.config else MLM_FINETUNE_LR if args.task == "mlm" else TrainConfig.lr
    for flag, value, least in (("--batch-size", args.batch_size, 1), ("--grad-accum", args.grad_accum, 1),
                               ("--log-every", args.log_every, 1), ("--keep-checkpoints", args.keep_checkpoints, 1),
                               ("--eval-every", 0 if args.eval_every == EPOCH else args.eval_every, 0),
                               ("--save-every", args.save_every, 0), ("--patience", args.patience, 0)):
        if value < least:
            raise UsageError(f"{flag} {value}: must be at least {least}")
    if args.dropout is not None and not 0 <= args.dropout < 1:
        raise UsageError(f"--dropout {args.dropout}: must be in [0, 1)")
    if args.dropout_in_config and args.dropout is None:
        raise UsageError("--dropout-in-config needs --dropout P")
    given = [flag for flag, value in (("--problem-type", args.problem_type), ("--label-sep", args.label_sep),
                                      ("--class-weights", args.class_weights)) if value is not None]
    if args.task == "mlm" and given:
        raise UsageError(f"{given[0]} is for --task classify")
    has_eval = args.eval is not None or args.eval_split
    for flag, value in (("--metric", args.metric), ("--patience", args.patience)):
        if value and not has_eval:
            raise UsageError(f"{flag} {value} needs evaluation data: add --eval FILE or --eval-split 0.1")
    if args.patience and not args.eval_every:
        raise UsageError(f"--patience {args.patience} counts evaluations during training: add --eval-every N or "
                         f"--eval-every epoch")
    if args.pack and (args.task != "mlm" or args.group_texts):
        raise UsageError("--pack is for --task mlm with one example per line; --group-texts blocks are full "
                         "already")


def _check_shipped(args) -> None:
    """The files of the repository that the job's defaults use: a `pip install .` has the package only."""
    for path, used, instead in ((SHIPPED_MODEL, args.model == SHIPPED_MODEL, "--model DIR and --train FILE"),
                                (DEMO_TRAIN, args.train == DEMO_TRAIN, "--model DIR and --train FILE"),
                                (SHIPPED_VOCAB, args.vocab == SHIPPED_VOCAB, "--vocab FILE")):
        if used and not path.exists():
            raise UsageError(f"{path} is not installed (minibert was installed without its repository's models/, "
                             f"vocab/ and examples/, as `pip install .` does); pass {instead}, or install from a "
                             f"clone with `pip install -e .`")


def _check_output(args) -> None:
    from .trainer import STATE_FILE

    out = Path(args.output)
    if args.resume not in (None, True) and not (Path(args.resume) / STATE_FILE).is_file():
        raise UsageError(f"--resume {args.resume}: not a checkpoint (no {STATE_FILE}); give a checkpoint-N "
                         f"folder, or --resume alone for the latest in --output")
    has_checkpoint = any(out.glob("checkpoint-*"))
    holds_model = (out / "config.json").is_file() or has_checkpoint
    # --resume with no checkpoint starts from step 0, which must not silently replace a finished model.
    if not holds_model or (args.resume and (has_checkpoint or args.resume is not True)):
        return
    if not args.overwrite:
        if args.resume:
            raise UsageError(f"{out} holds a finished model but no checkpoint to resume; pass --overwrite to "
                             f"train again from the start, or choose another --output")
        raise UsageError(f"{out} already holds a model; pass --overwrite to replace it, --resume to continue "
                         f"it, or choose another --output")
    for old in list(out.glob("checkpoint-*")) + list(out.glob(".tmp-checkpoint-*")) + [out / "best"]:
        shutil.rmtree(old, ignore_errors=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)


def _start_point(args):
    """(tokenizer, config, what to call it) of the model the run starts from: --config or --model."""
    from .checkpoint import load_config
    from .config import PRESETS, BertConfig
    from .tokenizer import Tokenizer

    if args.config is not None:
        tokenizer = Tokenizer.from_vocab(args.vocab, model_max_length=None)
        if args.config in PRESETS:
            cfg = BertConfig(**PRESETS[args.config], vocab_size=tokenizer.vocab_size)
        elif Path(args.config).is_file():
            cfg = BertConfig.from_json(args.config)
        else:
            raise UsageError(f"--config {args.config}: neither a file nor a preset ({', '.join(PRESETS)})")
        if cfg.vocab_size != tokenizer.vocab_size:
            raise UsageError(f"--config vocab_size {cfg.vocab_size} differs from {args.vocab}'s "
                             f"{tokenizer.vocab_size} tokens")
        return tokenizer, cfg, f"new {args.config} model"
    cfg = load_config(args.model)
    tokenizer = Tokenizer.from_pretrained(args.model)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise UsageError(f"{args.model}: the vocabulary has {tokenizer.vocab_size} tokens but config.json "
                         f"says vocab_size {cfg.vocab_size}")
    return tokenizer, cfg, str(args.model)


def _build_model(cls: type, cfg, args, rank: int):
    """A fresh model for --config, else the --model checkpoint; then the run's --dropout."""
    from .checkpoint import from_pretrained
    from .model import set_dropout

    if args.config is not None:
        model = cls(cfg)
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = from_pretrained(cls, args.model, config=cfg)
        for w in caught:
            if rank == 0:
                print(f"note: {w.message}", file=sys.stderr)
    if args.dropout is not None:
        set_dropout(model, args.dropout)
        if args.dropout_in_config:
            model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = args.dropout
            if model.config.classifier_dropout is not None:
                model.config.classifier_dropout = args.dropout
    return model


def _from_flags(cls: type, args, **resolved):
    """An instance of dataclass `cls` from the flags train_parser made of its fields, with `resolved`
    values in place of some flags'."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init}
    return cls(**{**values, **resolved})


def train_command(argv: list[str] | None) -> int:
    args = train_parser().parse_args(argv)
    _show_warnings()
    from .lock import OutputLock
    from .runtime import resolve_device

    _resolve_job(args)
    resolve_device(args.device)  # a device this machine lacks fails here, before any work
    rank, world = _init_distributed()
    if rank != 0:
        return _train(args, rank, world)
    # Held from before anything in --output is touched (--overwrite, train_args.json) to the end.
    with OutputLock(args.output):
        _check_output(args)
        return _train(args, rank, world)


def _train(args, rank: int, world: int) -> int:
    import torch

    from .model import num_parameters
    from .tasks import TASKS
    from .trainer import TrainConfig, Trainer, file_signature

    torch.manual_seed(args.seed)

    task = _from_flags(TASKS[args.task], args)
    if args.task == "mlm":  # before the data is read: a wrong name fails at once
        task.check_metric(args.metric)
    elif args.metric is not None and args.metric not in CLASSIFY_METRICS:
        raise UsageError(f"--metric {args.metric}: not a metric of --task classify; use one of "
                         f"{', '.join(CLASSIFY_METRICS)}")
    # The classifier's own list depends on the problem type, known once the labels are read (Trainer).
    tokenizer, cfg, source = _start_point(args)
    max_length = min(args.max_length, cfg.max_position_embeddings)
    if args.max_length > cfg.max_position_embeddings and rank == 0:
        print(f"warning: --max-length {args.max_length} exceeds the model's {cfg.max_position_embeddings} "
              f"positions; using {max_length}", file=sys.stderr)
    if not args.train.is_file():
        raise UsageError(f"{args.train}: training file not found")
    if args.eval is not None and not args.eval.is_file():
        raise UsageError(f"{args.eval}: evaluation file not found")
    # Tokenizing a large corpus takes a while: masked LM shows a bar for it.
    progress = {"progress": args.progress and rank == 0} if args.task == "mlm" else {}
    data = task.load(tokenizer, cfg, max_length, args.train, args.eval, args.eval_split, args.seed, **progress)
    if not data.train:
        raise UsageError(f"{args.train}: no training examples")
    try:
        collate = task.collator(tokenizer, seed=args.seed, rank=rank)
    except ValueError as e:
        raise UsageError(str(e).replace("mlm_probability", "--mlm-probability").replace("mask_prob", "--mask-prob")
                         .replace("random_prob", "--random-prob")) from None
    # Evaluation masks with a seed of its own (the trainer restores it before each evaluation).
    eval_collate = task.eval_collator(tokenizer, seed=args.seed + 1)
    model = _build_model(task.model_class, data.config, args, rank)
    tcfg = _from_flags(TrainConfig, args, max_length=max_length)
    trainer = Trainer(model, tcfg, task, data.train, collate, data.eval, eval_collate, tokenizer,
                      data_signature=file_signature(args.train))

    if rank == 0:
        cfg = model.config
        n_tokens = sum(len(f["input_ids"]) for f in data.train)
        eff = args.batch_size * args.grad_accum * world
        print(f"model:     {source} ({type(model).__name__}, {num_parameters(model) / 1e6:.1f}M parameters, "
              f"{cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, vocab {cfg.vocab_size})")
        print(f"data:      {args.train}: {len(data.train)} examples, {n_tokens} tokens{data.note}; "
              f"eval: {len(data.eval) if data.eval else 0} examples")
        print(f"training:  {args.task}, {trainer.total_steps} steps, batch {eff} "
              f"({args.batch_size} x {args.grad_accum} accum x {world} processes), lr {args.lr}, "
              f"{args.schedule} schedule, max length {max_length}")
        dropout = args.dropout if args.dropout is not None else cfg.hidden_dropout_prob
        masking = (f", masking {args.mlm_probability:g} ({args.mask_prob:g} [MASK] / {args.random_prob:g} random"
                   f"{', whole words' if args.whole_word_mask else ''})" if args.task == "mlm" else "")
        print(f"           dropout {dropout:g}{masking}, AdamW betas {args.adam_betas[0]:g},{args.adam_betas[1]:g} "
              f"eps {args.adam_eps:g}, weight decay {args.weight_decay:g}")
        print(f"hardware:  {trainer.device}, precision {trainer.precision}"
              f"{' (bf16 working copy of the weights)' if args.bf16_weights else ''}"
              f"{', compiled' if args.compile else ''}")
        print(f"output:    {args.output}")
    # train_args.json once the run goes ahead: a refused --resume leaves the folder as it was.
    summary = trainer.train(resume=args.resume, on_start=(lambda: _write_train_args(args, task, tcfg)) if rank == 0
                            else None)
    if rank == 0:
        print(f"saved the model to {args.output} after {summary['steps']} steps in {summary['seconds']:.1f}s "
              f"({summary['tokens_per_s']:.0f} tokens/s)")
        if summary["eval"]:
            print("final eval: " + _show_metrics(summary["eval"]))
        if summary["best_step"] is not None:
            print(f"best:      step {summary['best_step']}, {summary['metric']} {summary['best_value']:.4f} "
                  f"({Path(args.output) / 'best'})")
        print(f"stopped:   {summary['stopped']}")
        _write_model_card(args, source, data, n_tokens, summary, eff, max_length)
    return 0


def _show_metrics(metrics: dict) -> str:
    from .metrics import summary_numbers

    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in summary_numbers(metrics).items())


def _write_model_card(args, source: str, data, n_tokens: int, summary: dict, batch: int, max_length: int) -> None:
    """A short README.md in --output: where the model comes from, what it was trained on, how it
    scored and how to run it; written to a temporary file and renamed into place."""
    out = Path(args.output)
    classify = args.task == "classify"
    labels = data.config.id2label or {}
    size = args.train.stat().st_size
    evaluation = f"`{args.eval}`" if args.eval else f"{args.eval_split:g} of the training file" if args.eval_split \
        else "none"
    example = '"a text to classify"' if classify else f'"{DEMO_QUERY}"'
    task = "fill-mask" if not classify else "regression" if not labels else \
        f"{len(labels)} labels: {', '.join(str(labels[i]) for i in sorted(labels))}"
    lines = [
        "---", "library_name: minibert", f"pipeline_tag: {'text-classification' if classify else 'fill-mask'}",
        "---", "", f"# {out.name}", "",
        "Trained with minibert's `train.py`; a Hugging Face BERT folder (`transformers` loads it too).", "",
        "| | |", "|---|---|",
        f"| base model | {source} |",
        f"| task | {args.task} ({task}) |",
        f"| training data | `{args.train}`: {size:,} bytes, {len(data.train):,} examples, {n_tokens:,} tokens |",
        f"| evaluation data | {evaluation}" + (f", {len(data.eval):,} examples" if data.eval else "") + " |",
        f"| training | {summary['steps']:,} steps, batch {batch}, lr {args.lr:g}, max length {max_length}, "
        f"{summary['seconds']:.0f} s |",
        f"| final metrics | {_show_metrics(summary['eval']) if summary['eval'] else 'no evaluation'} |",
        "", "Every setting of the run: `train_args.json`; the metrics at each evaluation: `metrics.jsonl`.", "",
        "## Predict", "", "```sh",
        f"python predict.py --model {out} {example}",
        f"python predict.py --model {out} --file texts.jsonl --output predictions.jsonl",
        *([f"python predict.py --model {out} --eval {args.eval}"] if args.eval else []),
        "```", "",
    ]
    replace_atomically(out / MODEL_CARD, lambda tmp: tmp.write_text("\n".join(lines), encoding="utf-8"))


def _write_train_args(args, task, tcfg) -> None:
    """Every setting of the run as resolved (job defaults filled in), to --output/train_args.json."""
    settings = {**vars(args), **dataclasses.asdict(task), **dataclasses.asdict(tcfg)}
    out = Path(tcfg.output)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(settings, indent=2, ensure_ascii=False, default=str)
    (out / TRAIN_ARGS).write_text(text + "\n", encoding="utf-8")


def train_main(argv: list[str] | None = None) -> int:
    return _run("minibert-train", train_command, argv)


# ============================================================================ predict

PREDICT_EPILOG = """examples:
  python predict.py                                    # the latest fine-tuned model on 三国人物诸葛[MASK]
  python predict.py --model output/three_kingdoms "三国人物诸葛[MASK]"
  python predict.py --model DIR --targets 亮,涛 "三国人物诸葛[MASK]"
  python predict.py --model DIR --targets 诸葛亮,诸葛涛 "三国人物[MASK][MASK][MASK]"   # words, ranked by PLL
  python predict.py --model DIR --beam 5 "[MASK][MASK]是蜀汉丞相"
  python predict.py --model out/clf --all "这家酒店很干净"
  python predict.py --model out/clf --file test.csv --pair-column question --output preds.csv
  python predict.py --model out/clf --eval test.jsonl  # accuracy, macro-F1, per-class report, confusion matrix
  python predict.py --model out/clf --eval test.jsonl --confusion-png confusion.png
  python predict.py --model google-bert/bert-base-chinese "[MASK]国"   # from the Hugging Face cache, offline
"""
OUTPUT_SUFFIXES = (".jsonl", ".csv")
INPUT_SUFFIXES = (".txt", ".jsonl", ".json", ".csv", ".tsv")
FEW_TEXTS = 100  # no progress bar for this many texts or fewer


def predict_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="minibert-predict", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=PREDICT_EPILOG,
        description="Fill in [MASK] tokens, or classify texts, with a trained model.")
    p.add_argument("texts", nargs="*", help="texts to predict (fill-mask: each with at least one [MASK])")
    p.add_argument("--model", type=Path, default=None,
                   help=f"model folder, or a Hugging Face name (ORG/NAME) found in the local Hugging Face cache "
                        f"($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub; nothing is downloaded) "
                        f"(default: the newest model under output/, else models/{SHIPPED_MODEL.name})")
    p.add_argument("--task", choices=["fill-mask", "mlm", "classify"], default=None,
                   help="default: read from the model's config.json")
    p.add_argument("--file", type=Path, default=None,
                   help="more texts: .txt, one per line; or .jsonl/.json/.csv/.tsv with the --text-column "
                        "(and --pair-column) fields; a --label-column, where present, is written as gold")
    p.add_argument("--output", type=Path, default=None, metavar="PREDS",
                   help="write one record per text to PREDS, .jsonl or .csv: the text (and pair), the "
                        "prediction, its score and probabilities (classify) or the top candidates (fill-mask), "
                        "the gold label when the file has one; replaced only once every prediction is written")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help=f"do not show a progress bar on stderr (shown for more than {FEW_TEXTS} texts)")
    p.add_argument("--eval", type=Path, default=None,
                   help="classify: a labelled file (.jsonl/.json/.csv/.tsv), prints accuracy, macro-F1, each "
                        "label's precision, recall, F1 and support, and the confusion matrix; "
                        "fill-mask: a text file (.txt/.json/.jsonl), masks --mlm-probability of its tokens with a "
                        "fixed seed and prints masked-token accuracy and perplexity")
    p.add_argument("--mlm-probability", type=float, default=0.15,
                   help="fill-mask --eval: fraction of tokens to mask (default: %(default)s)")
    p.add_argument("--whole-word-mask", action="store_true",
                   help="fill-mask --eval: mask whole space-separated words (segmented text)")
    p.add_argument("--seed", type=int, default=0, help="fill-mask --eval: masking seed (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=5, help="fill-mask: candidates per [MASK] (default: %(default)s)")
    p.add_argument("--targets", default=None,
                   help="fill-mask: comma-separated candidates. A single token is scored at each [MASK] by its "
                        "probability; a word of several tokens fills a run of as many consecutive [MASK]s, and "
                        "the candidates are ranked by pseudo-log-likelihood (PLL: with the word filled in, mask "
                        "each of its tokens in turn and sum the log-probabilities of the word's tokens; 0 is "
                        "certain, lower is less likely)")
    p.add_argument("--beam", type=int, default=1, metavar="N",
                   help="fill-mask: fill several [MASK]s by a left-to-right beam search keeping the N best partial "
                        "fills, each scored by its chain log-probability (the sum, mask by mask, of the chosen "
                        "token's log-probability with the later masks still [MASK]); 1 is greedy "
                        "(default: %(default)s)")
    p.add_argument("--all", action="store_true", help="classify: print every label's probability")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="multi-label: predict the labels whose probability is above this (default: %(default)s)")
    p.add_argument("--confusion-png", type=Path, default=None, metavar="PNG",
                   help=f"classify --eval: also draw the confusion matrix into PNG (needs matplotlib: {INSTALL})")
    p.add_argument("--json", action="store_true", help="one JSON object per text on stdout")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--text-column", default="text",
                   help="--file/--eval text field/column (default: %(default)s)")
    p.add_argument("--pair-column", default="text_pair",
                   help="--file/--eval second-text field/column of a pair, used where present (default: %(default)s)")
    p.add_argument("--label-column", default="label",
                   help="--eval label field/column, and the gold label of --file (default: %(default)s)")
    p.add_argument("--label-sep", default=None, metavar="SEP",
                   help="--eval/--file CSV/TSV of a multi-label model: labels in a cell separated by SEP")
    return p


def default_model() -> Path:
    """The newest model folder under ./output, else the shipped model."""
    found = [p.parent for p in Path("output").glob("**/config.json")
             if "checkpoint-" not in str(p) and p.parent.name != "best"]
    if found:
        return max(found, key=lambda d: (d / "config.json").stat().st_mtime)
    if not SHIPPED_MODEL.is_dir():
        raise UsageError(f"no model under output/, and the shipped model ({SHIPPED_MODEL}) is not installed "
                         "(minibert was installed without its repository files); pass --model DIR")
    return SHIPPED_MODEL


def _read_lines(path: Path) -> list[str]:
    """The non-blank lines of --file, stripped, read as the readers read a .txt corpus."""
    from .data.readers import MAX_TEXT_CHARS, DataError

    if not path.is_file():
        raise UsageError(f"{path}: file not found")
    return [line.strip() for _, line in read_lines(path, DataError, MAX_TEXT_CHARS, "a text") if line.strip()]


def _read_inputs(args, task: str) -> list:
    """The texts to predict: the command line's, then --file's, as readers.Example (label: the gold, or None)."""
    from .data.readers import Example, read_labelled

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
    found = read_labelled(path, text_column=args.text_column, label_column=args.label_column,
                          pair_column=args.pair_column, label_sep=args.label_sep, label_required=False)
    paired = next((e for e in found if e.text_pair), None)
    if task == "mlm" and paired is not None:
        raise UsageError(f"{path}:{paired.line}: a text pair ({args.pair_column!r}) for a fill-mask model, which "
                         "reads one text; drop the column, or name another with --pair-column")
    return items + found


class PredictionWriter:
    """--output: records written to a temporary file next to PREDS, renamed to PREDS once all are
    written, so that a failed run leaves neither half a file nor a changed one."""

    def __init__(self, path: Path, columns: list[str], csv_row=None):
        import csv

        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.file = open(self.tmp, "w", encoding="utf-8", newline="")
        self.csv = csv.DictWriter(self.file, columns, extrasaction="ignore") if path.suffix.lower() == ".csv" \
            else None
        self.csv_row = csv_row
        if self.csv:
            self.csv.writeheader()

    def write(self, record: dict) -> None:
        if self.csv:
            self.csv.writerow(self.csv_row(record))
        else:
            self.file.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self, ok: bool) -> None:
        self.file.close()
        if ok:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _emit(args, items: list, batches, show, record, columns: list[str], csv_row) -> None:
    """Print (stdout) or write (--output) each result as its batch comes, with a progress bar on stderr."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(items), unit="text", file=sys.stderr, dynamic_ncols=True,
               disable=not args.progress or len(items) <= FEW_TEXTS)
    writer = PredictionWriter(args.output, columns, csv_row) if args.output else None
    done, ok = 0, False
    try:
        for results in batches:
            lines = []
            for e, r in zip(items[done:done + len(results)], results):
                if writer:
                    writer.write(record(e, r))
                elif args.json:
                    lines.append(json.dumps(dataclasses.asdict(r), ensure_ascii=False))
                else:
                    lines.append(show(e, r))
            if lines:
                tqdm.write("\n".join(lines), file=sys.stdout)  # above the bar, not through it
            done += len(results)
            bar.update(len(results))
        ok = True
    finally:
        bar.close()
        if writer:
            writer.close(ok)
    if writer:
        print(f"wrote {done} predictions to {args.output}")


def _with_inputs(e, fields: dict) -> dict:
    """An --output record: the text (and pair), the prediction's fields, the gold label when known."""
    record = {"text": e.text, **({"text_pair": e.text_pair} if e.text_pair else {}), **fields}
    return {**record, "gold": e.label} if e.label is not None else record


def _gold_column(items: list) -> list[str]:
    return ["gold"] if any(e.label is not None for e in items) else []


def _fill_record(e, r) -> dict:
    best = r.ranking[0] if r.ranking else None
    fields = {"prediction": best.target if best else r.filled, "score": best.score if best else r.fill_score,
              "filled": r.filled, "fill_score": r.fill_score,
              "candidates": [[dataclasses.asdict(c) for c in m.candidates] for m in r.masks]}
    if r.ranking:
        fields["ranking"] = [dataclasses.asdict(t) for t in r.ranking]
    if r.targets:
        fields["target_probabilities"] = r.targets
    return _with_inputs(e, fields)


def _fill_csv_row(record: dict) -> dict:
    """A fill-mask record as CSV cells: candidates "token score ..." per [MASK], separated by " | "."""
    row = dict(record)
    row["candidates"] = " | ".join("  ".join(f"{c['token']} {c['score']:.4f}" for c in mask)
                                   for mask in record["candidates"])
    if "ranking" in record:
        row["ranking"] = "  ".join(f"{t['target']} {t['score']:.4f}" for t in record["ranking"])
    if "target_probabilities" in record:
        row["target_probabilities"] = " | ".join("  ".join(f"{t} {p:.4f}" for t, p in mask.items())
                                                 for mask in record["target_probabilities"])
    return row


def _show_fill(e, r) -> str:
    lines = [r.text]
    for m in r.masks:
        label = f"  [MASK] {m.index + 1}:" if len(r.masks) > 1 else "  top:"
        lines.append(label + "  " + "   ".join(f"{c.token} {c.score:.4f}" for c in m.candidates))
        if r.targets:
            lines.append("  targets:  " + "   ".join(f"{t} {p:.4f}" for t, p in r.targets[m.index].items()))
    if r.ranking and not r.targets:
        lines.append("  targets by PLL (sum of log-probabilities):  "
                     + "   ".join(f"{t.target} {t.score:.4f}" for t in r.ranking))
    return "\n".join(lines + [f"  filled: {r.filled}"])


def _show_fill_beam(e, r) -> str:
    return _show_fill(e, r) + f"   (chain log-probability {r.fill_score:.4f})"


def _classify_record(e, r) -> dict:
    if not hasattr(r, "scores"):  # regression
        return _with_inputs(e, {"prediction": r.value})
    if hasattr(r, "labels"):  # multi-label: the predicted set, most probable first
        return _with_inputs(e, {"prediction": list(r.labels), "probabilities": r.scores})
    return _with_inputs(e, {"prediction": r.label, "score": r.score, "probabilities": r.scores})


def _classify_csv_row(record: dict) -> dict:
    """CSV cells: one prob_LABEL column per label; a multi-label set (and gold set) joined by "|"."""
    row = {k: "|".join(v) if isinstance(v, (list, tuple)) else v for k, v in record.items()
           if k != "probabilities"}
    return {**row, **{f"prob_{k}": v for k, v in record.get("probabilities", {}).items()}}


def predict_command(argv: list[str] | None) -> int:
    args = predict_parser().parse_args(argv)
    _show_warnings()
    from .checkpoint import load_config
    from .files import find_model
    from .metrics import format_report
    from .pipelines import FillMask, TextClassifier
    from .runtime import resolve_device
    from .tasks import saved_task

    if args.output is not None and args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(f"--output {args.output}: unknown extension {args.output.suffix!r}; use .jsonl (one JSON "
                         "object per line) or .csv")
    model_dir = find_model(args.model) if args.model else default_model()
    cfg = load_config(model_dir)
    saved = saved_task(cfg).name
    task = {"fill-mask": "mlm"}.get(args.task, args.task) or saved
    if task == "classify" and saved != "classify":
        raise UsageError(f"{model_dir} is not a classification model (config.json: "
                         f"{(cfg.architectures or ['?'])[0]}); train one with --task classify")
    if args.top_k < 1:
        raise UsageError("--top-k must be at least 1")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if args.beam < 1:
        raise UsageError(f"--beam {args.beam}: must be at least 1")
    items = _read_inputs(args, task)
    resolve_device(args.device)
    if args.confusion_png is not None:
        if task != "classify" or not args.eval:
            raise UsageError("--confusion-png is for a classification model's --eval FILE")
        from .plots import PlotUnavailable, load_matplotlib

        try:
            load_matplotlib()
        except PlotUnavailable:
            raise UsageError(f"--confusion-png needs matplotlib, which is not installed; {INSTALL}") from None

    if task == "mlm" and args.eval:
        metrics = evaluate_mlm_file(model_dir, args)
        if args.json:
            print(json.dumps(metrics))
        else:
            print(f"{args.eval}: {metrics['masked_tokens']} masked tokens, accuracy {metrics['accuracy']:.4f}, "
                  f"perplexity {metrics['perplexity']:.2f}")
        if not items:
            return 0
    if task == "mlm":
        from .data.readers import Example

        if not items:
            items = [Example(DEMO_QUERY, None, None, 0)]
        pipe = FillMask.from_pretrained(model_dir, device=args.device)
        targets = [t for t in args.targets.split(",") if t.strip()] if args.targets else None
        batches = pipe.stream([e.text for e in items], top_k=args.top_k, targets=targets,
                              batch_size=args.batch_size, beam=args.beam)
        if not args.json and not args.output:
            print(f"model: {model_dir}")
        columns = ["text", "prediction", "score", "filled", "fill_score", "candidates"] \
            + (["ranking", "target_probabilities"] if targets else []) + _gold_column(items)
        _emit(args, items, batches, _show_fill_beam if args.beam > 1 else _show_fill, _fill_record, columns,
              _fill_csv_row)
        return 0

    pipe = TextClassifier.from_pretrained(model_dir, device=args.device)
    if not 0 < args.threshold < 1:
        raise UsageError(f"--threshold {args.threshold}: give a probability between 0 and 1")
    if args.eval:
        if args.confusion_png is not None and pipe.problem_type != "single_label_classification":
            raise UsageError(f"--confusion-png is for single-label classifiers; {model_dir} is "
                             f"{pipe.problem_type.replace('_', ' ')}")
        metrics = evaluate_classifier_file(pipe, args)
        if args.json:
            print(json.dumps(metrics, ensure_ascii=False))
        elif pipe.problem_type == "regression":
            print(f"{args.eval}: {metrics['examples']} examples, mean squared error {metrics['mse']:.4f}")
        elif pipe.problem_type == "multi_label_classification":
            print(f"{args.eval}: {metrics['examples']} examples, exact match {metrics['exact_match']:.4f}, "
                  f"micro-F1 {metrics['micro_f1']:.4f}, macro-F1 {metrics['macro_f1']:.4f}")
        else:
            print(f"{args.eval}: {metrics['examples']} examples, accuracy {metrics['accuracy']:.4f}, "
                  f"macro-F1 {metrics['macro_f1']:.4f}")
            print(format_report(metrics))
        if args.confusion_png is not None:
            from .plots import plot_confusion

            written = plot_confusion(metrics["confusion"], pipe.labels, args.confusion_png,
                                     f"{model_dir.name} on {args.eval.name}")
            print(f"wrote {written}", file=sys.stderr if args.json else sys.stdout)
        if not items:
            return 0
    if not items:
        raise UsageError("no text to classify; give texts, --file or --eval")

    def show(e, r) -> str:
        text = r.text + (f"\t{e.text_pair}" if e.text_pair else "")
        if not hasattr(r, "scores"):  # regression: the value, not a label
            return f"{r.value:.4f}\t{text}"
        if args.all:
            return text + "\n  " + "   ".join(f"{k} {v:.4f}" for k, v in r.scores.items())
        if hasattr(r, "labels"):  # multi-label: the set above --threshold
            return (", ".join(f"{k} {r.scores[k]:.4f}" for k in r.labels) or "(none)") + f"\t{text}"
        return f"{r.label}\t{r.score:.4f}\t{text}"

    kind = pipe.problem_type
    columns = ["text"] + (["text_pair"] if any(e.text_pair for e in items) else []) + ["prediction"] \
        + ([] if kind in ("regression", "multi_label_classification") else ["score"]) \
        + ([] if kind == "regression" else [f"prob_{label}" for label in pipe.labels]) + _gold_column(items)
    _emit(args, items, _classify_batches(pipe, items, args), show, _classify_record, columns, _classify_csv_row)
    return 0


def _classify_batches(pipe, items: list, args):
    """The classifier's results for `items` (readers.Example), --batch-size at a time."""
    for s in range(0, len(items), args.batch_size):
        chunk = items[s:s + args.batch_size]
        pairs = [e.text_pair for e in chunk] if any(e.text_pair for e in chunk) else None
        yield pipe([e.text for e in chunk], pairs, batch_size=args.batch_size, threshold=args.threshold)


def evaluate_classifier_file(pipe, args) -> dict:
    """The metrics of a classifier on a labelled file: accuracy and macro-F1; exact match, micro- and
    macro-F1 and per-label numbers (multi-label); mean squared error (regression)."""
    import torch

    from .data.readers import encode_label_sets, encode_labels, read_labelled
    from .metrics import classification_metrics, multi_label_metrics
    from .tasks import SequenceClassification

    examples = read_labelled(args.eval, text_column=args.text_column, label_column=args.label_column,
                             pair_column=args.pair_column, label_sep=args.label_sep)
    SequenceClassification.check_fits(examples, pipe.problem_type, "the model's config.json", args.eval)
    label2id = {name: i for i, name in enumerate(pipe.labels)}
    from tqdm.auto import tqdm

    results = []
    with tqdm(total=len(examples), desc="eval", unit="text", leave=False, dynamic_ncols=True,
              disable=not args.progress or len(examples) <= FEW_TEXTS) as bar:
        for batch in _classify_batches(pipe, examples, args):
            results += batch
            bar.update(len(batch))
    if pipe.problem_type == "regression":
        errors = [(r.value - float(e.label)) ** 2 for r, e in zip(results, examples)]
        return {"examples": len(examples), "mse": sum(errors) / len(errors)}
    if pipe.problem_type == "multi_label_classification":
        gold = torch.tensor(encode_label_sets(examples, label2id, args.eval)) > 0.5
        pred = torch.tensor([[lab in r.labels for lab in pipe.labels] for r in results])
        return {"examples": len(examples), **multi_label_metrics(pred, gold, pipe.labels)}
    gold = encode_labels(examples, label2id, args.eval)
    pred = torch.tensor([label2id[r.label] for r in results])
    return {"examples": len(examples),
            **classification_metrics(pred, torch.tensor(gold), len(pipe.labels), pipe.labels)}


def evaluate_mlm_file(model_dir: Path, args) -> dict:
    """Masked-token accuracy and perplexity of a fill-mask model on a text file, one example per line."""
    from .checkpoint import from_pretrained
    from .data.features import load_mlm_features
    from .metrics import evaluate
    from .runtime import resolve_device
    from .tasks import MaskedLM
    from .tokenizer import Tokenizer

    task = MaskedLM(mlm_probability=args.mlm_probability, whole_word_mask=args.whole_word_mask)
    tokenizer = Tokenizer.from_pretrained(model_dir)
    model = from_pretrained(task.model_class, model_dir)
    features = load_mlm_features(args.eval, tokenizer, model.config.max_position_embeddings,
                                 whole_word_mask=args.whole_word_mask, progress=args.progress)
    if not features:
        raise UsageError(f"{args.eval}: no text to evaluate on")
    device = resolve_device(args.device)
    return evaluate(model.to(device), features, task.eval_collator(tokenizer, args.seed), args.batch_size, device,
                    task.metrics(model.config), progress=args.progress)


def predict_main(argv: list[str] | None = None) -> int:
    return _run("minibert-predict", predict_command, argv)
