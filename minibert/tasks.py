"""The jobs minibert trains for, one object each: masked LM (fill-mask) and sequence classification.

A task owns everything that differs between jobs, so the trainer, the CLI and the pipelines ask it
instead of probing the model:
    load(...)                 read the files, build the features (and the label map), hold out eval
    collator, eval_collator   features -> batches
    model_class               what learns it
    count_targets             what the loss averages over
    metrics, best_metric      how it is measured, and which number picks `best/` by default
    metric_names              the numbers `--metric` may choose instead
    setup_model               what training sets on the model beyond its config (class weights)
A task's options are dataclass fields with their help text; train.py's flags are made from them.
SequenceClassification covers the three problem types transformers names in config.json
(regression, single-label, multi-label): each a loss, a prediction and metrics of its own.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from .config import PROBLEM_TYPES, BertConfig, option
from .data.collators import ClassificationCollator, MaskingCollator, PackingCollator
from .data.features import TRUNCATION_KEY, TRUNCATIONS, load_mlm_features, pack_features, tokenize_examples
from .data.readers import (
    DataError,
    Example,
    build_label_map,
    check_labels,
    class_weights,
    encode_label_sets,
    encode_labels,
    is_multi_label,
    is_regression,
    read_labelled,
)
from .metrics import ClassificationMetrics, MaskedLMMetrics, MultiLabelMetrics, higher_is_better
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
                             f"{self._kind()}; "
                             f"use one of {', '.join(self.metric_names)}")
        return name

    def _kind(self) -> str:
        problem = getattr(self, "problem", None)
        return {"regression": " (regression)", MULTI: " (multi-label)"}.get(problem, "") if problem else ""

    def is_better(self, metrics: dict, best: dict | None, metric: str | None = None) -> bool:
        """Whether `metrics` improve on `best` in `metric` (default best_metric); ties do not."""
        name = metric or self.best_metric
        if best is None:
            return True
        new, old = metrics[name], best[name]
        return new > old if higher_is_better(name) else new < old

    def setup_model(self, model: torch.nn.Module) -> None:
        """Set on `model` what training needs beyond its config; the trainer calls it once."""


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


SINGLE, MULTI = "single_label_classification", "multi_label_classification"


@dataclass
class SequenceClassification(Task):
    """Labels per text (or text pair), one of three problem types (config.json's problem_type):

        single_label_classification  one class per text; softmax, cross-entropy (optionally class-weighted)
        multi_label_classification   a set of classes per text (JSON list labels, or --label-sep); sigmoid,
                                     BCE with logits; a label is predicted when its probability > threshold
        regression                   a number per text; one output, MSE

    Which one: --problem-type, else the starting model's config.json when it names one, else the
    training labels (lists: multi-label; numbers with a fraction among them: regression; else single).
    """

    name: ClassVar[str] = "classify"
    model_class: ClassVar[type] = BertForSequenceClassification

    text_column: str = option("text", "text field/column")
    label_column: str = option("label", "label field/column")
    pair_column: str = option("text_pair", "second-text field/column")
    truncation: str = option("head", "how a text longer than --max-length is cut: head keeps its start; "
                             "head+tail keeps its first quarter and last three quarters (single texts; saved in "
                             "config.json, so predict.py cuts the same way)", choices=TRUNCATIONS)
    problem_type: str | None = option(None, "regression, single_label_classification or "
                                      "multi_label_classification, saved in config.json (default: the --model "
                                      "folder's config.json when it names one, else from the training labels: "
                                      "JSON lists multi-label, numbers with a fraction regression, else single "
                                      "label)", choices=PROBLEM_TYPES)
    label_sep: str | None = option(None, "CSV/TSV: each label cell holds labels separated by SEP, a multi-label "
                                   "example (an empty cell: no label); without it a cell is one label",
                                   metavar="SEP")
    class_weights: str | None = option(None, "single label: weight the cross-entropy of each class, "
                                       "sum(w_y * ce) / sum(w_y): auto for inverse frequency over the training "
                                       "labels, w_c = N / (K * n_c) (N examples, K classes, n_c of class c: the "
                                       "mean weight over the examples is 1). Multi-label: weight each label's "
                                       "positive term of the binary cross-entropy (pos_weight): auto for w_c = "
                                       "(N - n_c) / n_c, negatives per positive. Or FILE, a JSON object {label: "
                                       "weight} (labels left out weigh 1). Used in training only (the eval loss "
                                       "too), never saved in the model", metavar="auto|FILE")
    threshold: float = option(0.5, "multi-label: in evaluation, a label is predicted when its probability is "
                              "above this")
    problem: str = field(default=SINGLE, init=False)  # the problem type load() resolved
    weights: list[float] | None = field(default=None, init=False)  # per class id, from class_weights

    @property
    def regression(self) -> bool:
        return self.problem == "regression"

    @property
    def best_metric(self) -> str:
        return {"regression": "eval_loss", MULTI: "micro_f1"}.get(self.problem, "accuracy")

    @property
    def metric_names(self) -> tuple[str, ...]:
        return {"regression": ("eval_loss",), MULTI: ("micro_f1", "macro_f1", "exact_match", "eval_loss")}.get(
            self.problem, ("accuracy", "macro_f1", "eval_loss"))

    def load(self, tokenizer: Tokenizer, config: BertConfig, max_length: int, train_file: Path,
             eval_file: Path | None = None, eval_split: float = 0.0, seed: int = 0) -> TaskData:
        if not 0 < self.threshold < 1:
            raise ValueError(f"--threshold {self.threshold}: give a probability between 0 and 1")
        columns = dict(text_column=self.text_column, label_column=self.label_column, pair_column=self.pair_column,
                       label_sep=self.label_sep)
        train_ex = read_labelled(train_file, **columns)
        eval_ex = read_labelled(eval_file, **columns) if eval_file else None
        if eval_split:
            train_ex, eval_ex = split(train_ex, eval_split, seed)
        self.problem, source = self._resolve(train_ex, config, train_file)
        if eval_ex:
            self.check_fits(eval_ex, self.problem, source, eval_file or train_file)
        self.weights = None
        if self.class_weights is not None and self.regression:
            raise DataError(f"--class-weights is for classification, single-label or multi-label; this is "
                            f"regression ({source})")
        said = "" if source == "the training labels" else f" (problem_type from {source})"
        if self.regression:
            train_y = [float(e.label) for e in train_ex]
            eval_y = [float(e.label) for e in eval_ex] if eval_ex else None
            config = BertConfig.from_dict({**config.to_dict(), "num_labels": 1, "id2label": None, "label2id": None,
                                           "problem_type": self.problem})
            note = f", regression{said}"
        else:
            check_labels(train_ex, train_file)
            label2id = build_label_map(train_ex)
            encode = encode_label_sets if self.problem == MULTI else encode_labels
            train_y = encode(train_ex, label2id, train_file)
            eval_y = encode(eval_ex, label2id, eval_file or train_file) if eval_ex else None
            if self.class_weights is not None:
                self.weights = class_weights(self.class_weights, train_y, label2id)
            id2label = {i: name for name, i in label2id.items()}
            config = BertConfig.from_dict({**config.to_dict(), "num_labels": len(label2id), "id2label": id2label,
                                           "label2id": label2id, "problem_type": self.problem})
            kind = ", multi-label" if self.problem == MULTI else ""
            note = f"{kind}{said}, labels: {', '.join(label2id)}"
            if self.weights is not None:
                what = "positive-label weights" if self.problem == MULTI else "class weights"
                note += f", {what}: {', '.join(f'{n} {w:.3g}' for n, w in zip(label2id, self.weights))}"
        saved = {k: v for k, v in config.to_dict().items() if k != TRUNCATION_KEY}
        if self.truncation != "head":
            saved[TRUNCATION_KEY] = self.truncation
        config = BertConfig.from_dict(saved)
        train_features = tokenize_examples(tokenizer, train_ex, train_y, max_length, self.truncation)
        eval_features = tokenize_examples(tokenizer, eval_ex, eval_y, max_length, self.truncation) if eval_ex \
            else None
        return TaskData(train_features, eval_features, config, note)

    def _resolve(self, examples: list[Example], config: BertConfig, path: Path) -> tuple[str, str]:
        """(problem type, where it came from): the flag, the model's config.json, or the labels."""
        if self.problem_type is not None:
            problem, source = self.problem_type, "--problem-type"
        elif config.problem_type is not None:
            problem, source = config.problem_type, "the model's config.json"
            if problem == SINGLE and is_regression(examples):
                raise DataError(f"{path}: the labels are numbers with fractions, regression targets, but {source} "
                                f"says {SINGLE}; pass --problem-type regression (or --problem-type {SINGLE} to "
                                "keep them as class names)")
        else:
            problem = MULTI if is_multi_label(examples) else "regression" if is_regression(examples) else SINGLE
            return problem, "the training labels"
        self.check_fits(examples, problem, source, path)
        return problem, source

    @staticmethod
    def check_fits(examples: list[Example], problem: str, source: str, path: Path) -> None:
        """A DataError when the labels cannot be `problem`'s (a single label is a set of one for multi-label)."""
        for e in examples:
            if isinstance(e.label, tuple) and problem != MULTI:
                raise DataError(f"{path}:{e.line}: label is a list (multi-label), but the problem type is {problem} "
                                f"({source}); pass --problem-type {MULTI}, or give single labels")
            if problem == "regression" and isinstance(e.label, str):
                raise DataError(f"{path}:{e.line}: label {e.label!r} is not a number, but the problem type is "
                                f"regression ({source}); give numbers, or pass --problem-type {SINGLE}")

    def setup_model(self, model: torch.nn.Module) -> None:
        model.set_class_weights(torch.tensor(self.weights) if self.weights is not None else None)

    def collator(self, tokenizer: Tokenizer, seed: int = 0, rank: int = 0) -> Callable:
        return ClassificationCollator(tokenizer.pad_token_id)

    def eval_collator(self, tokenizer: Tokenizer, seed: int = 0) -> Callable:
        return ClassificationCollator(tokenizer.pad_token_id)

    def count_targets(self, batch: dict[str, torch.Tensor]) -> float:
        """What the loss averages over: the examples, or the sum of their class weights when a single-label
        loss is weighted (a multi-label loss stays a mean over the examples' labels)."""
        if self.weights is not None and self.problem != MULTI:
            return float(torch.tensor(self.weights)[batch["labels"]].sum())
        return batch["labels"].shape[0]

    def metrics(self, config: BertConfig) -> ClassificationMetrics | MultiLabelMetrics:
        if config.resolved_problem_type == MULTI:
            return MultiLabelMetrics([config.id2label[i] for i in range(config.num_labels)], self.threshold)
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
