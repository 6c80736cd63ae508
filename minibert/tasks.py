"""The jobs minibert trains for, one object each: masked LM (fill-mask) and sequence classification.

A task owns everything that differs between jobs, so the trainer, the CLI and the pipelines ask it
instead of probing the model:
    load(...)                 read the files, build the features (and the label map), hold out eval
    collator, eval_collator   features -> batches
    model_class               what learns it
    count_targets             what the loss averages over
    metrics, best_metric      how it is measured, and which number picks `best/` by default
    metric_names              the numbers `--metric` may choose instead
A task's options are dataclass fields with their help text; train.py's flags are made from them.
A new job (multi-label, regression) is one more class with these members.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from .config import BertConfig, option
from .data.collators import ClassificationCollator, MaskingCollator, PackingCollator
from .data.features import TRUNCATION_KEY, TRUNCATIONS, load_mlm_features, pack_features, tokenize_examples
from .data.readers import build_label_map, check_labels, encode_labels, is_regression, read_labelled
from .metrics import ClassificationMetrics, MaskedLMMetrics, higher_is_better
from .model import BertForMaskedLM, BertForSequenceClassification
from .tokenizer import Tokenizer


@dataclass
class TaskData:
    train: list[dict]
    eval: list[dict] | None
    config: BertConfig  # the model's config with what the data decides (the label map)
    note: str = ""  # what the data brought, for the summary line (", labels: a, b")


def split(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """(kept, held out): a seeded random `fraction` of `items` held out for evaluation."""
    if not 0 < fraction < 1:
        raise ValueError(f"--eval-split {fraction}: use a fraction between 0 and 1, e.g. 0.1")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(items) * fraction))
    if n_eval >= len(items):
        raise ValueError(f"--eval-split {fraction} leaves no training data from {len(items)} examples")
    held = set(order[:n_eval])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


class Task:
    """What the trainer asks every task; subclasses are dataclasses whose fields are their options."""

    name: ClassVar[str]  # --task NAME, and the task a resumed run must share with its checkpoint
    model_class: ClassVar[type[torch.nn.Module]]
    best_metric: ClassVar[str] = "eval_loss"  # the evaluation number that picks best/ by default
    metric_names: ClassVar[tuple[str, ...]] = ("eval_loss",)  # what --metric may name

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.best_metric)

    def check_metric(self, name: str | None) -> str:
        """The metric that picks best/: `name`, or best_metric when None; ValueError if this task has no such number."""
        if name is None:
            return self.best_metric
        if name not in self.metric_names:
            raise ValueError(f"--metric {name}: not a metric of --task {self.name}"
                             f"{' (regression)' if getattr(self, 'regression', False) else ''}; "
                             f"use one of {', '.join(self.metric_names)}")
        return name

    def is_better(self, metrics: dict, best: dict | None, metric: str | None = None) -> bool:
        """Whether `metrics` improve on `best` in `metric` (default best_metric); ties do not."""
        name = metric or self.best_metric
        if best is None:
            return True
        new, old = metrics[name], best[name]
        return new > old if higher_is_better(name) else new < old


@dataclass
class MaskedLM(Task):
    """Fill-mask training: tokens chosen at random are hidden and predicted; the loss averages over them."""

    name: ClassVar[str] = "mlm"
    model_class: ClassVar[type] = BertForMaskedLM
    metric_names: ClassVar[tuple[str, ...]] = ("accuracy", "eval_loss", "perplexity")

    mlm_probability: float = option(0.15, "fraction of tokens chosen for prediction")
    mask_prob: float = option(0.8, "of the chosen tokens, the fraction replaced by [MASK]")
    random_prob: float = option(0.1, "of the chosen tokens, the fraction replaced by a random token; the rest "
                                "stay as they are")
    whole_word_mask: bool = option(False, "mask whole space-separated words (for Chinese: pre-segmented text)")
    group_texts: bool = option(False, "concatenate lines into full --max-length blocks (pre-training) instead of "
                               "one example per line")
    pack: bool = option(False, "put several lines into each --max-length row, attention kept within each line "
                        "(the same loss as unpacked); --batch-size then counts rows. Measured on 2 CPU cores "
                        "(zh-small, 692 corpus lines): padding 4.3% -> 0.3% of each batch, but 1.01x the tokens/s "
                        "of the default length-grouped batches (BENCHMARKS.md)")
    text_column: str = option("text", "text field/column")

    def load(self, tokenizer: Tokenizer, config: BertConfig, max_length: int, train_file: Path,
             eval_file: Path | None = None, eval_split: float = 0.0, seed: int = 0, progress: bool = False) -> TaskData:
        """The features of train_file and eval_file (or of eval_split of train_file, held out with seed).
        progress: a progress bar while tokenizing a large file (see load_mlm_features)."""

        def features(path: Path) -> list[dict]:
            return load_mlm_features(path, tokenizer, max_length, self.whole_word_mask, self.group_texts,
                                     self.text_column, progress=progress)

        train_features = features(train_file)
        eval_features = features(eval_file) if eval_file else None
        if eval_split:
            train_features, eval_features = split(train_features, eval_split, seed)
        note = ""
        if self.pack:  # evaluation stays one sequence per row: its numbers compare with unpacked runs
            rows = pack_features(train_features, max_length)
            note = f", {len(train_features)} sequences packed into {len(rows)} rows"
            train_features = rows
        return TaskData(train_features, eval_features, config, note)

    def collator(self, tokenizer: Tokenizer, seed: int = 0, rank: int = 0) -> Callable:
        collate = MaskingCollator(tokenizer, self.mlm_probability, self.mask_prob, self.random_prob,
                                  whole_word_mask=self.whole_word_mask, seed=seed, rank=rank)
        return PackingCollator(collate) if self.pack else collate

    def eval_collator(self, tokenizer: Tokenizer, seed: int = 0) -> Callable:
        # The standard 80/10/10 whatever the training split, so numbers compare across runs; the
        # trainer restores the seed before each evaluation, so every one masks the same tokens.
        return MaskingCollator(tokenizer, self.mlm_probability, whole_word_mask=self.whole_word_mask, seed=seed)

    def count_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != -100).sum())

    def metrics(self, config: BertConfig) -> MaskedLMMetrics:
        return MaskedLMMetrics()


@dataclass
class SequenceClassification(Task):
    """One label per text (or text pair): classes from the training file's labels.

    Numeric labels with a fraction among them make a regression (one output, MSE loss), decided
    from the training data as before; issue 14 turns it into a task of its own.
    """

    name: ClassVar[str] = "classify"
    model_class: ClassVar[type] = BertForSequenceClassification

    text_column: str = option("text", "text field/column")
    label_column: str = option("label", "label field/column")
    pair_column: str = option("text_pair", "second-text field/column")
    truncation: str = option("head", "how a text longer than --max-length is cut: head keeps its start; "
                             "head+tail keeps its first quarter and last three quarters (single texts; saved in "
                             "config.json, so predict.py cuts the same way)", choices=TRUNCATIONS)
    regression: bool = field(default=False, init=False)  # set by load() from the training labels

    @property
    def best_metric(self) -> str:
        return "eval_loss" if self.regression else "accuracy"

    @property
    def metric_names(self) -> tuple[str, ...]:
        return ("eval_loss",) if self.regression else ("accuracy", "macro_f1", "eval_loss")

    def load(self, tokenizer: Tokenizer, config: BertConfig, max_length: int, train_file: Path,
             eval_file: Path | None = None, eval_split: float = 0.0, seed: int = 0) -> TaskData:
        columns = dict(text_column=self.text_column, label_column=self.label_column, pair_column=self.pair_column)
        train_ex = read_labelled(train_file, **columns)
        eval_ex = read_labelled(eval_file, **columns) if eval_file else None
        if eval_split:
            train_ex, eval_ex = split(train_ex, eval_split, seed)
        self.regression = is_regression(train_ex)
        if self.regression:
            train_y = [float(e.label) for e in train_ex]
            eval_y = [float(e.label) for e in eval_ex] if eval_ex else None
            config = BertConfig.from_dict({**config.to_dict(), "num_labels": 1, "id2label": None, "label2id": None})
            note = ", regression"
        else:
            check_labels(train_ex, train_file)
            label2id = build_label_map(train_ex)
            train_y = encode_labels(train_ex, label2id, train_file)
            eval_y = encode_labels(eval_ex, label2id, eval_file or train_file) if eval_ex else None
            id2label = {i: name for name, i in label2id.items()}
            config = BertConfig.from_dict({**config.to_dict(), "num_labels": len(label2id), "id2label": id2label,
                                           "label2id": label2id})
            note = f", labels: {', '.join(label2id)}"
        saved = {k: v for k, v in config.to_dict().items() if k != TRUNCATION_KEY}
        if self.truncation != "head":
            saved[TRUNCATION_KEY] = self.truncation
        config = BertConfig.from_dict(saved)
        train_features = tokenize_examples(tokenizer, train_ex, train_y, max_length, self.truncation)
        eval_features = tokenize_examples(tokenizer, eval_ex, eval_y, max_length, self.truncation) if eval_ex \
            else None
        return TaskData(train_features, eval_features, config, note)

    def collator(self, tokenizer: Tokenizer, seed: int = 0, rank: int = 0) -> Callable:
        return ClassificationCollator(tokenizer.pad_token_id)

    def eval_collator(self, tokenizer: Tokenizer, seed: int = 0) -> Callable:
        return ClassificationCollator(tokenizer.pad_token_id)

    def count_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["labels"].shape[0]

    def metrics(self, config: BertConfig) -> ClassificationMetrics:
        labels = [config.id2label[i] for i in range(config.num_labels)] if config.id2label else None
        return ClassificationMetrics(config.num_labels, labels)


TASKS: dict[str, type[Task]] = {task.name: task for task in (MaskedLM, SequenceClassification)}


def saved_task(config: BertConfig) -> type[Task]:
    """The task a saved model was trained for, by the class in its config.json (masked LM when none is
    named: a bare encoder checkpoint fine-tunes as a fill-mask model)."""
    for task in TASKS.values():
        if config.architectures and task.model_class.__name__ in config.architectures:
            return task
    return MaskedLM
