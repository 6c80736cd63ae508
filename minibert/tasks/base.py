"""The Task protocol: everything the trainer, train.py, predict.py and the pipelines ask of a job.

A task is a dataclass whose fields are its training options (train.py makes a flag of each) and
whose class attributes and methods answer for it, so that nothing outside a task module branches on
a task's name or probes a result for fields:

training (the trainer and train.py)
    load(...)                    read the files, build the features (and the label map), hold out eval
    corpus_paths                 whether --train may name several files and folders
    collator, eval_collator      features -> batches
    model_class                  what learns it
    setup_model                  what training sets on the model beyond its config (class weights)
    count_targets                what the loss averages over
    metrics(config)              the object that measures an evaluation
    declared_metrics             every number --metric may name, each with its direction (Metric)
    metric_names, best_metric    the numbers this run's data gives, and the one that picks best/ by default
    check_metric, is_better      --metric checked; whether an evaluation improves on the best
    finetune_defaults            job defaults for fine-tuning a trained model (lr, batch_size, dropout)
    exclusive                    options that are an error with another --task
    settings_note, card_summary  its part of the run's printed settings and of the model card
    words                        its part of train.py's and predict.py's --help
prediction (predict.py)
    predict_names                predict.py's --task values for it
    predict_options              a dataclass of its predict.py options (PredictOptions), flags made the same way
    check_model                  whether a model folder can make its predictions
    pipeline                     the pipeline of a model folder
    predictor                    its side of predict.py (Predictor): shows, records and evaluates predictions
"""

from __future__ import annotations

import dataclasses
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from ..config import BertConfig, option
from ..data.readers import Example
from ..tokenizer import Tokenizer

FEW_TEXTS = 100  # predict.py shows no progress bar for this many texts or fewer


@dataclass
class TaskData:
    train: list[dict]
    eval: list[dict] | None
    config: BertConfig  # the model's config with what the data decides (the label map)
    note: str = ""  # what the data brought, for the summary line (", labels: a, b")
    # what a resumed run checks it trains on again (train_state.file_signature's keys); None: the CLI hashes
    # the training file itself
    signature: dict | None = None


@dataclass(frozen=True)
class Metric:
    """A number an evaluation reports that --metric may name, and which way is better."""

    name: str
    higher_is_better: bool


@dataclass(frozen=True)
class TaskWords:
    """A task's part of the --help texts, so that train.py and predict.py list every task without naming one."""

    summary: str  # train.py --task: what training for it is
    purpose: str  # train.py's description: "a BERT for <purpose>"
    train_files: str  # train.py --train: the files it reads
    train_examples: str  # lines of train.py's examples
    predict_does: str  # predict.py's description: "<predict_does> with a trained model"
    predict_record: str  # predict.py --output: what a record holds beside the text and prediction
    predict_eval: str  # predict.py --eval: the file it reads and what it prints
    predict_examples: str  # lines of predict.py's examples
    predict_input: str = ""  # predict.py's texts: what each must hold, when anything


def split(items: Sequence, fraction: float, seed: int) -> tuple[Sequence, list]:
    """(kept, held out): a seeded random `fraction` of `items` held out for evaluation."""
    if not 0 < fraction < 1:
        raise ValueError(f"--eval-split {fraction}: use a fraction between 0 and 1, e.g. 0.1")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(items) * fraction))
    if n_eval >= len(items):
        raise ValueError(f"--eval-split {fraction} leaves no training data from {len(items)} examples")
    held = set(order[:n_eval])
    if hasattr(items, "take"):  # a memory-mapped dataset (token_cache.py): keep a view, not a copy
        return items.take([i for i in range(len(items)) if i not in held]), [items[i] for i in sorted(held)]
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


@dataclass
class PredictOptions:
    """predict.py's settings that every task reads; a task's subclass adds its own, each field a flag."""

    progress: bool = option(True, f"show a progress bar on stderr (shown for more than {FEW_TEXTS} texts)")
    batch_size: int = option(32, "texts per forward pass")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    text_column: str = option("text", "--file/--eval text field/column")
    pair_column: str = option("text_pair", "--file/--eval second-text field/column of a pair, used where present")
    label_column: str = option("label", "--eval label field/column, and the gold label of --file")
    label_sep: str | None = option(None, "--eval/--file CSV/TSV of a multi-label model: labels in a cell "
                                   "separated by SEP", metavar="SEP")
    exclusive: ClassVar[tuple[str, ...]] = ()  # this task's options that are an error with another task's model

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("--batch-size must be at least 1")


class Task(ABC):
    """What the trainer and the command lines ask every task; subclasses are dataclasses whose fields
    are their training options."""

    name: ClassVar[str]  # --task NAME, and the task a resumed run must share with its checkpoint
    model_class: ClassVar[type[torch.nn.Module]]
    kind: ClassVar[str]  # what its models are called in messages: "not a <kind> model"
    pipeline_tag: ClassVar[str]  # the model card's Hugging Face pipeline tag
    example_text: ClassVar[str]  # a text to predict, for the model card
    words: ClassVar[TaskWords]
    declared_metrics: ClassVar[tuple[Metric, ...]] = (Metric("eval_loss", higher_is_better=False),)
    best_metric: ClassVar[str] = "eval_loss"  # the evaluation number that picks best/ by default
    best_metric_words: ClassVar[str | None] = None  # train.py --help's words for it, where data decides it
    # Fine-tuning a trained model (--model, not --config): train.py's defaults for lr, batch_size and
    # dropout where the task needs its own; the rest come from TrainConfig and the model.
    finetune_defaults: ClassVar[dict[str, float]] = {}
    exclusive: ClassVar[tuple[str, ...]] = ()  # its options that train.py refuses with another --task
    corpus_paths: ClassVar[bool] = False  # load() takes several --train paths and folders (a corpus), not one file
    predict_names: ClassVar[tuple[str, ...]]  # predict.py --task values that pick it; the first names it in help
    predict_options: ClassVar[type[PredictOptions]] = PredictOptions
    predictor: ClassVar[type[Predictor]]

    # ------------------------------------------------------------------------------------------ training

    @abstractmethod
    def load(self, tokenizer: Tokenizer, config: BertConfig, max_length: int, train_file: Path,
             eval_file: Path | None = None, eval_split: float = 0.0, seed: int = 0,
             progress: bool = False) -> TaskData:
        """The features of train_file and eval_file (or of eval_split of train_file, held out with seed),
        and the config with what the data decides. progress: a bar while tokenizing a large file."""

    @abstractmethod
    def collator(self, tokenizer: Tokenizer, seed: int = 0, rank: int = 0) -> Callable:
        """Training features -> a batch of tensors; seed and rank make any randomness reproducible."""

    @abstractmethod
    def eval_collator(self, tokenizer: Tokenizer, seed: int = 0) -> Callable:
        """Evaluation features -> a batch, the same for every evaluation."""

    @abstractmethod
    def count_targets(self, batch: dict[str, torch.Tensor]) -> float:
        """What the loss of `batch` averages over (tokens, examples, or their weights)."""

    @abstractmethod
    def metrics(self, config: BertConfig):
        """A fresh metrics object (`update(out, batch)`, `result()`) for the model of `config`."""

    def setup_model(self, model: torch.nn.Module) -> None:
        """Set on `model` what training needs beyond its config; the trainer calls it once."""

    @property
    def metric_names(self) -> tuple[str, ...]:
        """What --metric may name for this run (a task whose data decides its numbers narrows this after load)."""
        return tuple(m.name for m in self.declared_metrics)

    def variant(self) -> str:
        """Words after --task NAME in messages where the loaded data decides the metrics (" (regression)")."""
        return ""

    def check_metric(self, name: str | None) -> str:
        """The metric that picks best/: `name`, or best_metric when None; ValueError if this run has no such number."""
        if name is None:
            return self.best_metric
        _refuse_metric(name, self.name + self.variant(), self.metric_names)
        return name

    @classmethod
    def check_metric_name(cls, name: str | None) -> None:
        """Before the data is read: a ValueError when no data of this task gives a metric `name`."""
        if name is not None:
            _refuse_metric(name, cls.name, tuple(m.name for m in cls.declared_metrics))

    def is_better(self, metrics: dict, best: dict | None, metric: str | None = None) -> bool:
        """Whether `metrics` improve on `best` in `metric` (default best_metric); ties do not."""
        name = metric or self.best_metric
        if best is None:
            return True
        new, old = metrics[name], best[name]
        higher = next(m.higher_is_better for m in self.declared_metrics if m.name == name)
        return new > old if higher else new < old

    def settings_note(self) -> str:
        """Its options worth a mention in the run's printed settings (", masking 0.15 ..."), or ""."""
        return ""

    @abstractmethod
    def card_summary(self, config: BertConfig) -> str:
        """What the trained model of `config` predicts, in the model card ("fill-mask", "3 labels: a, b, c")."""

    # ---------------------------------------------------------------------------------------- prediction

    @classmethod
    def check_model(cls, config: BertConfig, folder: Path) -> None:
        """A ValueError when the model in `folder` (its config.json: `config`) cannot make this task's
        predictions: by default, one saved for another task."""
        if cls.model_class.__name__ not in (config.architectures or []):
            raise ValueError(f"{folder} is not a {cls.kind} model (config.json: {(config.architectures or ['?'])[0]}); "
                             f"train one with --task {cls.name}")

    @classmethod
    @abstractmethod
    def pipeline(cls, folder: Path, device: str = "auto"):
        """The pipeline (pipelines.py) that predicts with the model in `folder`."""


def _refuse_metric(name: str, task: str, names: tuple[str, ...]) -> None:
    if name not in names:
        raise ValueError(f"--metric {name}: not a metric of --task {task}; use one of {', '.join(names)}")


class Predictor(ABC):
    """A task's side of predict.py over one model folder: what it predicts for the texts, how each
    result is shown on a terminal and written as a JSONL record or a CSV row, and how a labelled file
    (--eval) is evaluated and reported. The command line reads the inputs, prints and writes."""

    def __init__(self, folder: Path, options: PredictOptions, eval_file: Path | None = None):
        self.folder, self.options, self.eval_file = folder, options, eval_file

    def check_inputs(self, items: list[Example], path: Path | None) -> None:
        """A ValueError for inputs the model cannot read; `path`: the --file they came from."""

    @abstractmethod
    def default_inputs(self) -> list[Example]:
        """What to predict when no text is given (and no --eval); a ValueError when there is nothing sensible."""

    def banner(self) -> str | None:
        """A line printed on a terminal before the predictions, or None."""
        return None

    @abstractmethod
    def stream(self, items: list[Example]) -> Iterator[list]:
        """The results for `items`, a list per batch; the model is loaded before this returns."""

    @abstractmethod
    def show(self, example: Example, result) -> str:
        """A result as lines on a terminal."""

    def json_record(self, result) -> dict:
        """A result as one JSON object (--json)."""
        return dataclasses.asdict(result)

    @abstractmethod
    def record(self, example: Example, result) -> dict:
        """A result as an --output record: the text (and pair), the prediction, the gold label when known."""

    @abstractmethod
    def columns(self, items: list[Example]) -> list[str]:
        """The CSV columns of the records of `items`."""

    def csv_row(self, record: dict) -> dict:
        """A record as CSV cells."""
        return record

    @abstractmethod
    def evaluate(self) -> dict:
        """The metrics of the model on eval_file."""

    @abstractmethod
    def report(self, metrics: dict) -> str:
        """The metrics as printed lines."""

    def eval_files(self, metrics: dict) -> list[Path]:
        """Files the evaluation writes besides its report (a confusion matrix drawn), written here."""
        return []


def with_inputs(e: Example, fields: dict) -> dict:
    """An --output record: the text (and pair), the prediction's fields, the gold label when known."""
    record = {"text": e.text, **({"text_pair": e.text_pair} if e.text_pair else {}), **fields}
    return {**record, "gold": e.label} if e.label is not None else record


def gold_column(items: list[Example]) -> list[str]:
    return ["gold"] if any(e.label is not None for e in items) else []
