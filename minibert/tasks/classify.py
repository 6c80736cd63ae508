"""Sequence classification: labels per text (or pair) in three problem types, and predict.py's classify side."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from ..config import PROBLEM_TYPES, BertConfig, option
from ..data.collators import ClassificationCollator
from ..data.features import TRUNCATION_KEY, TRUNCATIONS, tokenize_examples
from ..data.readers import (
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
from ..metrics import (
    ClassificationMetrics,
    MultiLabelMetrics,
    classification_metrics,
    format_report,
    multi_label_metrics,
)
from ..model import BertForSequenceClassification
from ..pipelines import Classification, MultiLabelClassification, Regression, TextClassifier
from ..plots import INSTALL, PlotUnavailable, load_matplotlib, plot_confusion
from ..tokenizer import Tokenizer
from .base import (
    FEW_TEXTS,
    Metric,
    PredictOptions,
    Predictor,
    Task,
    TaskData,
    TaskWords,
    gold_column,
    split,
    with_inputs,
)

TRAIN_EXAMPLES = """\
  # text classification (labels read from the file), 10% held out for evaluation
  python train.py --task classify --model models/zh-small --train reviews.jsonl --eval-split 0.1 --output out/clf
  # evaluate every epoch, best/ by macro-F1, stop after 2 evaluations without improvement
  python train.py --task classify --model models/zh-small --train reviews.jsonl --eval test.jsonl \\
      --eval-every epoch --metric macro_f1 --patience 2 --epochs 20 --output out/clf
"""
PREDICT_EXAMPLES = """\
  python predict.py --model out/clf --all "这家酒店很干净"
  python predict.py --model out/clf --file test.csv --pair-column question --output preds.csv
  python predict.py --model out/clf --eval test.jsonl  # accuracy, macro-F1, per-class report, confusion matrix
  python predict.py --model out/clf --eval test.jsonl --confusion-png confusion.png
"""


SINGLE, MULTI = "single_label_classification", "multi_label_classification"


@dataclass
class ClassifyOptions(PredictOptions):
    all: bool = option(False, "classify: print every label's probability")
    threshold: float = option(0.5, "multi-label: predict the labels whose probability is above this")
    confusion_png: Path | None = option(None, f"classify --eval: also draw the confusion matrix into PNG (needs "
                                        f"matplotlib: {INSTALL})", metavar="PNG")
    exclusive: ClassVar[tuple[str, ...]] = ("confusion_png",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.threshold < 1:
            raise ValueError(f"--threshold {self.threshold}: give a probability between 0 and 1")


class ClassifyPredictor(Predictor):
    """A label with its probability, the set of labels above --threshold (multi-label), or a value (regression)."""

    options: ClassifyOptions

    def __init__(self, folder: Path, options: ClassifyOptions, eval_file: Path | None = None):
        super().__init__(folder, options, eval_file)
        if options.confusion_png is not None:
            if eval_file is None:
                raise ValueError("--confusion-png is for a classification model's --eval FILE")
            try:
                load_matplotlib()
            except PlotUnavailable:
                raise ValueError(f"--confusion-png needs matplotlib, which is not installed; {INSTALL}") from None
        self.pipe = SequenceClassification.pipeline(folder, options.device)
        if eval_file is not None and options.confusion_png is not None and self.pipe.problem_type != SINGLE:
            raise ValueError(f"--confusion-png is for single-label classifiers; {folder} is "
                             f"{self.pipe.problem_type.replace('_', ' ')}")

    def default_inputs(self) -> list[Example]:
        raise ValueError("no text to classify; give texts, --file or --eval")

    def stream(self, items: list[Example]) -> Iterator[list]:
        """The classifier's results for `items`, --batch-size at a time."""
        size = self.options.batch_size
        for s in range(0, len(items), size):
            chunk = items[s:s + size]
            pairs = [e.text_pair for e in chunk] if any(e.text_pair for e in chunk) else None
            yield self.pipe([e.text for e in chunk], pairs, batch_size=size, threshold=self.options.threshold)

    def show(self, e: Example, r: Classification | MultiLabelClassification | Regression) -> str:
        text = r.text + (f"\t{e.text_pair}" if e.text_pair else "")
        if isinstance(r, Regression):  # the value, not a label
            return f"{r.value:.4f}\t{text}"
        if self.options.all:
            return text + "\n  " + "   ".join(f"{k} {v:.4f}" for k, v in r.scores.items())
        if isinstance(r, MultiLabelClassification):  # the set above --threshold
            return (", ".join(f"{k} {r.scores[k]:.4f}" for k in r.labels) or "(none)") + f"\t{text}"
        return f"{r.label}\t{r.score:.4f}\t{text}"

    def record(self, e: Example, r: Classification | MultiLabelClassification | Regression) -> dict:
        if isinstance(r, Regression):
            return with_inputs(e, {"prediction": r.value})
        if isinstance(r, MultiLabelClassification):  # the predicted set, most probable first
            return with_inputs(e, {"prediction": list(r.labels), "probabilities": r.scores})
        return with_inputs(e, {"prediction": r.label, "score": r.score, "probabilities": r.scores})

    def columns(self, items: list[Example]) -> list[str]:
        kind = self.pipe.problem_type
        return ["text"] + (["text_pair"] if any(e.text_pair for e in items) else []) + ["prediction"] \
            + ([] if kind in ("regression", MULTI) else ["score"]) \
            + ([] if kind == "regression" else [f"prob_{label}" for label in self.pipe.labels]) + gold_column(items)

    def csv_row(self, record: dict) -> dict:
        """One prob_LABEL column per label; a multi-label set (and gold set) joined by "|"."""
        row = {k: "|".join(v) if isinstance(v, (list, tuple)) else v for k, v in record.items()
               if k != "probabilities"}
        return {**row, **{f"prob_{k}": v for k, v in record.get("probabilities", {}).items()}}

    def evaluate(self) -> dict:
        """Accuracy and macro-F1 with the per-label report (single label); exact match, micro- and macro-F1
        and per-label numbers (multi-label); mean squared error (regression)."""
        o, pipe = self.options, self.pipe
        examples = read_labelled(self.eval_file, text_column=o.text_column, label_column=o.label_column,
                                 pair_column=o.pair_column, label_sep=o.label_sep)
        SequenceClassification.check_fits(examples, pipe.problem_type, "the model's config.json", self.eval_file)
        label2id = {name: i for i, name in enumerate(pipe.labels)}
        results = []
        with tqdm(total=len(examples), desc="eval", unit="text", leave=False, dynamic_ncols=True,
                  disable=not o.progress or len(examples) <= FEW_TEXTS) as bar:
            for batch in self.stream(examples):
                results += batch
                bar.update(len(batch))
        if pipe.problem_type == "regression":
            errors = [(r.value - float(e.label)) ** 2 for r, e in zip(results, examples)]
            return {"examples": len(examples), "mse": sum(errors) / len(errors)}
        if pipe.problem_type == MULTI:
            gold = torch.tensor(encode_label_sets(examples, label2id, self.eval_file)) > 0.5
            pred = torch.tensor([[lab in r.labels for lab in pipe.labels] for r in results])
            return {"examples": len(examples), **multi_label_metrics(pred, gold, pipe.labels)}
        gold = encode_labels(examples, label2id, self.eval_file)
        pred = torch.tensor([label2id[r.label] for r in results])
        return {"examples": len(examples),
                **classification_metrics(pred, torch.tensor(gold), len(pipe.labels), pipe.labels)}

    def report(self, metrics: dict) -> str:
        head = f"{self.eval_file}: {metrics['examples']} examples"
        if self.pipe.problem_type == "regression":
            return f"{head}, mean squared error {metrics['mse']:.4f}"
        if self.pipe.problem_type == MULTI:
            return (f"{head}, exact match {metrics['exact_match']:.4f}, micro-F1 {metrics['micro_f1']:.4f}, "
                    f"macro-F1 {metrics['macro_f1']:.4f}")
        return f"{head}, accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}\n" \
            + format_report(metrics)

    def eval_files(self, metrics: dict) -> list[Path]:
        if self.options.confusion_png is None:
            return []
        return [plot_confusion(metrics["confusion"], self.pipe.labels, self.options.confusion_png,
                               f"{self.folder.name} on {self.eval_file.name}")]


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
    kind: ClassVar[str] = "classification"
    pipeline_tag: ClassVar[str] = "text-classification"
    example_text: ClassVar[str] = "a text to classify"
    words: ClassVar[TaskWords] = TaskWords(
        summary="sequence classification", purpose="text classification",
        train_files=".json/.jsonl/.csv/.tsv with text and label", train_examples=TRAIN_EXAMPLES,
        predict_does="classify texts", predict_record="its score and probabilities",
        predict_eval="a labelled file (.jsonl/.json/.csv/.tsv), prints accuracy, macro-F1, each label's precision, "
                     "recall, F1 and support, and the confusion matrix",
        predict_examples=PREDICT_EXAMPLES)
    declared_metrics: ClassVar[tuple[Metric, ...]] = (  # over the three problem types; metric_names: this run's
        Metric("accuracy", higher_is_better=True), Metric("macro_f1", higher_is_better=True),
        Metric("micro_f1", higher_is_better=True), Metric("exact_match", higher_is_better=True),
        Metric("eval_loss", higher_is_better=False))
    best_metric_words: ClassVar[str] = "accuracy (micro_f1 multi-label, eval_loss regression)"
    exclusive: ClassVar[tuple[str, ...]] = ("problem_type", "label_sep", "class_weights")
    predict_names: ClassVar[tuple[str, ...]] = ("classify",)
    predict_options: ClassVar[type] = ClassifyOptions
    predictor: ClassVar[type] = ClassifyPredictor

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

    def variant(self) -> str:
        return {"regression": " (regression)", MULTI: " (multi-label)"}.get(self.problem, "")

    def load(self, tokenizer: Tokenizer, config: BertConfig, max_length: int, train_file: Path,
             eval_file: Path | None = None, eval_split: float = 0.0, seed: int = 0, progress: bool = False) -> TaskData:
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

    def card_summary(self, config: BertConfig) -> str:
        labels = config.id2label
        return f"{len(labels)} labels: {', '.join(str(labels[i]) for i in sorted(labels))}" if labels else "regression"

    @classmethod
    def pipeline(cls, folder: Path, device: str = "auto") -> TextClassifier:
        return TextClassifier.from_pretrained(folder, device=device)
