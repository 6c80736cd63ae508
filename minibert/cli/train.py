"""train.py / minibert-train: flags made from TrainConfig and every task's options, the job's
defaults, the model to start from, the run and what it prints; ends by writing the model card."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from pathlib import Path

from ..run_folder import STATE_FILE, RunFolder, is_checkpoint
from . import shipped
from .card import show_metrics, train_paths, write_model_card, write_train_args
from .errors import UsageError, run_command, show_warnings
from .flags import add_fields, either, from_flags, given_elsewhere, with_flags

DEMO_OUTPUT = Path("output") / "three_kingdoms"
# Defaults that depend on the job; README "Fine-tuning defaults" says why these values. A task's own
# defaults for fine-tuning a trained model are its finetune_defaults.
SCRATCH_LR = 1e-3  # pre-training from --config
DEMO_EPOCHS = 10  # the default job: 60 sentences, 80 steps
DEFAULT_MAX_LENGTH = 128  # --max-length; the model's own positions cap it
TRAIN_EXAMPLES_FIRST = """examples:
  # the default job: fine-tune the shipped Chinese model on the Three Kingdoms sentences
  python train.py
"""
TRAIN_EXAMPLES_LAST = """\
  # several processes (GPUs, or CPU with gloo)
  torchrun --nproc_per_node=4 train.py ...
"""


def _finetune_defaults(key: str, tasks: dict) -> list[str]:
    """"8 for mlm fine-tuning" for each task with a fine-tuning default for `key`."""
    return [f"{t.finetune_defaults[key]:g} for {name} fine-tuning" for name, t in tasks.items()
            if key in t.finetune_defaults]


def _metric_help(tasks: dict) -> str:
    """--metric's numbers per task, the lower-is-better ones marked, and each task's default."""
    names = "; ".join(f"{name}: " + ", ".join(m.name + ("" if m.higher_is_better else " (lower is better)")
                                               for m in t.declared_metrics) for name, t in tasks.items())
    defaults = ", ".join(f"{t.best_metric_words or t.best_metric} for {name}" for name, t in tasks.items())
    return f"{names}; by default {defaults}"


def train_parser() -> argparse.ArgumentParser:
    """The flags of TrainConfig and of every task (generated from their fields), plus the few that
    say where the model and data come from and what to do with the output folder."""
    from ..tasks import DEFAULT_TASK, TASKS
    from ..train_config import TrainConfig

    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="minibert-train", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="".join([TRAIN_EXAMPLES_FIRST, *(t.words.train_examples for t in TASKS.values()),
                        TRAIN_EXAMPLES_LAST]),
        description=f"Fine-tune (or pre-train) a BERT for {either([t.words.purpose for t in TASKS.values()])}. "
                    "With no arguments: fine-tune the shipped model on the Three Kingdoms example.")
    g = p.add_argument_group("what to train")
    g.add_argument("--task", choices=list(TASKS), default=DEFAULT_TASK,
                   help="; ".join(f"{name}: {t.words.summary}" for name, t in TASKS.items())
                        + " (default: %(default)s)")
    g.add_argument("--model", type=Path, default=None,
                   help=f"Hugging Face BERT folder or minibert output to start from, or a Hugging Face name "
                        f"(ORG/NAME) found in the local Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub or "
                        f"~/.cache/huggingface/hub; nothing is downloaded) (default: {shipped.SHIPPED_MODEL.name} "
                        "shipped in models/, unless --config is given)")
    g.add_argument("--config", default=None,
                   help="train from scratch: a config.json or a preset name (tiny, zh-small, bert-base); "
                        "needs --vocab")
    g.add_argument("--vocab", type=Path, default=None, help="vocab.txt for --config (default: vocab/zh.txt)")
    g.add_argument("--dropout", type=float, default=None, metavar="P",
                   help="hidden and attention dropout for this run (default: "
                        + ", ".join([*_finetune_defaults("dropout", TASKS), "else the model's config.json",
                                     "0.1 for the presets"])
                        + "). 0 suits pre-training from scratch too. The saved config.json keeps the model's own "
                          "value, for fine-tuning later, unless --dropout-in-config")
    g.add_argument("--dropout-in-config", action="store_true",
                   help="write --dropout into the saved config.json too")

    g = p.add_argument_group("data")
    g.add_argument("--train", type=Path, nargs="+", default=None, metavar="PATH",
                   help="training file: " + "; ".join(f"{t.words.train_files} for {name}" for name, t in TASKS.items())
                        + ". For mlm also several .txt files or folders of them, read through the token cache "
                          "(--cache-dir) (default: examples/three_kingdoms.json)")
    g.add_argument("--eval", type=Path, default=None, help="evaluation file in the same format")
    g.add_argument("--eval-split", type=float, default=0.0,
                   help="hold out this fraction of --train for evaluation, seeded by --seed (default: none)")
    added: set[str] = set()
    options = {name: {f.name for f in dataclasses.fields(task) if f.init} for name, task in TASKS.items()}
    shared = set.intersection(*options.values())  # these need no "mlm: " before their help
    for name, task in TASKS.items():
        add_fields(g, task, added, prefixes={f: f"{name}: " for f in options[name] - shared})

    g = p.add_argument_group("training")
    no_lr = [name for name, t in TASKS.items() if "lr" not in t.finetune_defaults]
    add_fields(g, TrainConfig, added, defaults={
        "output": (None, f"{DEMO_OUTPUT} for the default job"),
        "epochs": (None, f"{d.epochs}; {DEMO_EPOCHS} for the default job"),
        "batch_size": (None, ", ".join([*_finetune_defaults("batch_size", TASKS), f"{d.batch_size} otherwise"])),
        "lr": (None, ", ".join([f"{SCRATCH_LR:g} from scratch", *_finetune_defaults("lr", TASKS),
                                *([f"{d.lr:g} for {' and '.join(no_lr)}"] if no_lr else [])])),
        "max_length": (DEFAULT_MAX_LENGTH, DEFAULT_MAX_LENGTH),
        "metric": (None, _metric_help(TASKS)),
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


def _resolve_job(args):
    """Fill in the flags whose default depends on the job, check the ones that must be given, and make
    the task from its flags."""
    from ..tasks import TASKS
    from ..train_config import TrainConfig

    task_class = TASKS[args.task]
    default_job = args.model is None and args.config is None and args.train is None
    if args.train is not None:
        if len(args.train) > 1 and not task_class.corpus_paths:
            raise UsageError(f"--train takes one file for --task {task_class.name}; several files (or a folder) "
                             f"are for --task {' or '.join(n for n, t in TASKS.items() if t.corpus_paths)}")
        args.train = args.train[0] if len(args.train) == 1 else args.train
    if args.model is None and args.config is None:
        args.model = shipped.SHIPPED_MODEL
    if args.train is None:
        if not default_job:
            raise UsageError("--train FILE is required (the training data)")
        args.train = shipped.DEMO_TRAIN
    if args.output is None and not getattr(args, "prepare_only", False):
        if not default_job:
            raise UsageError("--output DIR is required (where the trained model goes)")
        args.output = str(DEMO_OUTPUT)
    if args.model is not None and args.config is not None:
        raise UsageError("give either --model (fine-tune) or --config (train from scratch), not both")
    if args.config is not None and args.vocab is None:
        args.vocab = shipped.SHIPPED_VOCAB
    _check_shipped(args)
    if args.model is not None:
        from ..files import find_model

        args.model = find_model(args.model)
    if args.epochs is None:
        args.epochs = DEMO_EPOCHS if default_job else TrainConfig.epochs
    finetune = task_class.finetune_defaults if args.config is None else {}
    if args.batch_size is None:
        args.batch_size = finetune.get("batch_size", TrainConfig.batch_size)
    if args.dropout is None:
        args.dropout = finetune.get("dropout")  # this run only: the saved config.json keeps the model's value
    if args.lr is None:
        args.lr = SCRATCH_LR if args.config else finetune.get("lr", TrainConfig.lr)
    _check_run_settings(args)
    for other in TASKS.values():
        given = given_elsewhere(args, task_class, other) if other is not task_class else None
        if given:
            raise UsageError(f"{given} is for --task {other.name}")
    task_class.check_metric_name(args.metric)  # before the data is read: a wrong name fails at once
    return from_flags(task_class, args)


def _check_shipped(args) -> None:
    """The files of the repository that the job's defaults use: a `pip install .` has the package only."""
    for path, given, instead in ((shipped.SHIPPED_MODEL, args.model, "--model DIR and --train FILE"),
                                 (shipped.DEMO_TRAIN, args.train, "--model DIR and --train FILE"),
                                 (shipped.SHIPPED_VOCAB, args.vocab, "--vocab FILE")):
        if given == path and not path.exists():
            raise UsageError(f"{path} is not installed (minibert was installed without its repository's models/, "
                             f"vocab/ and examples/, as `pip install .` does); pass {instead}, or install from a "
                             f"clone with `pip install -e .`")


def _check_run_settings(args) -> None:
    """TrainConfig's own checks (its __post_init__), then what needs the flags around it: --dropout, and the
    evaluation data that --metric and --patience need."""
    from ..train_config import TrainConfig

    from_flags(TrainConfig, args)  # refuses values no run can use, in one line naming the flag (ValueError)
    if args.dropout is not None and not 0 <= args.dropout < 1:
        raise UsageError(f"--dropout {args.dropout}: must be in [0, 1)")
    if args.dropout_in_config and args.dropout is None:
        raise UsageError("--dropout-in-config needs --dropout P")
    has_eval = args.eval is not None or args.eval_split
    for flag, value in (("--metric", args.metric), ("--patience", args.patience)):
        if value and not has_eval:
            raise UsageError(f"{flag} {value} needs evaluation data: add --eval FILE or --eval-split 0.1")


def _check_output(args, run) -> None:
    """--output holding a model needs --overwrite (which clears what the earlier run left, RunFolder.clear) or
    --resume."""
    if args.resume not in (None, True) and not is_checkpoint(args.resume):
        raise UsageError(f"--resume {args.resume}: not a checkpoint (no {STATE_FILE}); give a checkpoint-N "
                         f"folder, or --resume alone for the latest in --output")
    # --resume with no checkpoint starts from step 0, which must not silently replace a finished model.
    if not run.holds_model() or (args.resume and (run.has_checkpoints() or args.resume is not True)):
        return
    if not args.overwrite:
        if args.resume:
            raise UsageError(f"{run.path} holds a finished model but no checkpoint to resume; pass --overwrite to "
                             f"train again from the start, or choose another --output")
        raise UsageError(f"{run.path} already holds a model; pass --overwrite to replace it, --resume to continue "
                         f"it, or choose another --output")
    run.clear()


def _start_point(args):
    """(tokenizer, config, what to call it) of the model the run starts from: --config or --model."""
    from ..checkpoint import load_config
    from ..config import PRESETS, BertConfig
    from ..tokenizer import Tokenizer

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
    from ..checkpoint import from_pretrained
    from ..model import set_dropout

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


def train_command(argv: list[str] | None) -> int:
    args = train_parser().parse_args(argv)
    show_warnings()
    from ..runtime import resolve_device

    task = _resolve_job(args)
    resolve_device(args.device)  # a device this machine lacks fails here, before any work
    if getattr(task, "prepare_only", False):
        return _prepare_only(args, task)
    rank, world = _init_distributed()
    if rank != 0:
        return _train(args, task, rank, world)
    run = RunFolder(args.output)
    with run.lock():  # from before anything in --output is touched (--overwrite, train_args.json) to the end
        _check_output(args, run)
        return _train(args, task, rank, world)


def _train(args, task, rank: int, world: int) -> int:
    import torch

    from ..model import num_parameters
    from ..trainer import TrainConfig, Trainer, file_signature

    torch.manual_seed(args.seed)
    tokenizer, cfg, source = _start_point(args)
    max_length = min(args.max_length, cfg.max_position_embeddings)
    if args.max_length > cfg.max_position_embeddings and rank == 0:
        print(f"warning: --max-length {args.max_length} exceeds the model's {cfg.max_position_embeddings} "
              f"positions; using {max_length}", file=sys.stderr)
    _check_train_paths(args)
    if args.eval is not None and not args.eval.is_file():
        raise UsageError(f"{args.eval}: evaluation file not found")
    data = task.load(tokenizer, cfg, max_length, args.train, args.eval, args.eval_split, args.seed,
                     progress=args.progress and rank == 0)
    if not data.train:
        raise UsageError(f"{_train_label(args)}: no training examples")
    try:
        collate = task.collator(tokenizer, seed=args.seed, rank=rank)
    except ValueError as e:
        raise UsageError(with_flags(str(e), type(task))) from None
    # Evaluation masks with a seed of its own (the trainer restores it before each evaluation).
    eval_collate = task.eval_collator(tokenizer, seed=args.seed + 1)
    model = _build_model(task.model_class, data.config, args, rank)
    tcfg = from_flags(TrainConfig, args, max_length=max_length)
    trainer = Trainer(model, tcfg, task, data.train, collate, data.eval, eval_collate, tokenizer,
                      data_signature=data.signature or file_signature(args.train))

    if rank == 0:
        cfg = model.config
        n_tokens = int(trainer.sampler.lengths.sum())
        eff = args.batch_size * args.grad_accum * world
        print(f"model:     {source} ({type(model).__name__}, {num_parameters(model) / 1e6:.1f}M parameters, "
              f"{cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, vocab {cfg.vocab_size})")
        print(f"data:      {_train_label(args)}: {len(data.train)} examples, {n_tokens} tokens{data.note}; "
              f"eval: {len(data.eval) if data.eval else 0} examples")
        print(f"training:  {args.task}, {trainer.total_steps} steps, batch {eff} "
              f"({args.batch_size} x {args.grad_accum} accum x {world} processes), lr {args.lr}, "
              f"{args.schedule} schedule, max length {max_length}")
        dropout = args.dropout if args.dropout is not None else cfg.hidden_dropout_prob
        print(f"           dropout {dropout:g}{task.settings_note()}, AdamW betas {args.adam_betas[0]:g},"
              f"{args.adam_betas[1]:g} eps {args.adam_eps:g}, weight decay {args.weight_decay:g}")
        print(f"hardware:  {trainer.device}, precision {trainer.precision}"
              f"{' (bf16 working copy of the weights)' if args.bf16_weights else ''}"
              f"{', compiled' if args.compile else ''}")
        print(f"output:    {args.output}")
    # train_args.json once the run goes ahead: a refused --resume leaves the folder as it was.
    summary = trainer.train(resume=args.resume, on_start=(lambda: write_train_args(args, task, tcfg)) if rank == 0
                            else None)
    if rank == 0:
        print(f"saved the model to {args.output} after {summary['steps']} steps in {summary['seconds']:.1f}s "
              f"({summary['tokens_per_s']:.0f} tokens/s)")
        if summary["eval"]:
            print("final eval: " + show_metrics(summary["eval"]))
        if summary["best_step"] is not None:
            print(f"best:      step {summary['best_step']}, {summary['metric']} {summary['best_value']:.4f} "
                  f"({RunFolder(args.output).best})")
        print(f"stopped:   {summary['stopped']}")
        write_model_card(args, task, source, data, n_tokens, summary, eff, max_length)
    return 0


def _train_label(args) -> str:
    return ", ".join(map(str, train_paths(args)))


def _check_train_paths(args) -> None:
    """Each --train path exists: a file, or a folder for a task that reads corpora."""
    from ..tasks import TASKS

    for path in train_paths(args):
        if not (path.is_file() or (path.is_dir() and TASKS[args.task].corpus_paths)):
            raise UsageError(f"{path}: training file not found" if not path.exists()
                             else f"{path}: a folder; --task {args.task} trains on one file")


def _prepare_only(args, task) -> int:
    """--prepare-only: the token cache of --train, and what it holds; no model, no --output."""
    import time

    from ..data.token_cache import TokenCache, uses_token_cache

    _check_train_paths(args)
    paths = train_paths(args)
    if not uses_token_cache(paths):
        raise UsageError(f"--prepare-only: {', '.join(map(str, paths))} would be read into memory, not cached; "
                         "the token cache takes .txt files and folders of them")
    tokenizer, _, _ = _start_point(args)
    start = time.perf_counter()
    folder = task.prepare(paths, tokenizer, progress=args.progress)
    meta = TokenCache(folder).meta
    print(f"token cache: {folder}")
    print(f"           {meta['bytes']:,} bytes of text in {len(meta['files'])} file(s), {meta['lines']:,} lines, "
          f"{meta['tokens']:,} tokens ({meta['dtype']}), {len(meta['parts'])} part(s); "
          f"ready in {time.perf_counter() - start:.1f}s")
    return 0


def train_main(argv: list[str] | None = None) -> int:
    return run_command("minibert-train", train_command, argv)
