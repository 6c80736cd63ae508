"""Evaluation: the loop over a dataset, and the metrics of each task.

A metrics object is fed every evaluation batch with the model's output (`update`) and then says
what it measured (`result`). The task picks which one (tasks/); the trainer, predict.py and the
benchmarks all evaluate through `evaluate`. Classification: ClassificationMetrics (single label, and
the loss of a regression), MultiLabelMetrics (label sets, a threshold on the sigmoid).

Classification results carry, besides accuracy and macro-F1, a per-class report and the confusion
matrix (`classification_report`; `format_report` prints them as aligned tables). Conventions, as in
scikit-learn with zero_division=0: a class never predicted has precision 0, a class absent from the
gold labels has recall 0, and F1 is 0 when precision and recall both are. confusion[i][j] counts
the examples of true class i predicted as class j (rows: truth, columns: prediction).

Which way each number is better, the task that reports it declares (tasks/base.py, `Metric`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .data.collators import META_PREFIX
from .data.tagging import (
    allowed_transitions,
    bmes_to_words,
    check_scheme,
    check_tags,
    ill_formed,
    scheme_of,
    spans,
    viterbi,
)
from .runtime import autocast

if TYPE_CHECKING:
    from .model import Output


def summary_numbers(metrics: dict) -> dict:
    """The numbers of an evaluation that fit one printed line: not the step and token counters, not the
    nested report, per-label numbers or confusion matrix (those go to metrics.jsonl)."""
    return {k: v for k, v in metrics.items() if k not in ("step", "tokens") and not isinstance(v, (dict, list))}


class MaskedLMMetrics:
    """Loss, perplexity and accuracy over the masked tokens."""

    def __init__(self) -> None:
        self.loss_sum, self.n, self.correct = 0.0, 0, 0

    def update(self, out: Output, batch: dict[str, torch.Tensor]) -> None:
        k = int(out.n_targets)
        self.loss_sum += float(out.loss) * k
        self.n += k
        target = batch["labels"][batch["labels"] != -100]  # (N,), the order of the sparse head's logits
        self.correct += int((out.logits.argmax(-1) == target).sum())

    def result(self) -> dict:
        loss = self.loss_sum / max(1, self.n)
        return {"eval_loss": loss, "perplexity": math.exp(min(loss, 50)), "accuracy": self.correct / max(1, self.n),
                "masked_tokens": self.n}


class ClassificationMetrics:
    """Loss, accuracy, macro-F1 and the per-class report over the examples; loss only when
    num_labels == 1 (regression). labels: the class names for the report (default "0", "1", ...)."""

    def __init__(self, num_labels: int, labels: list[str] | None = None) -> None:
        self.num_labels = num_labels
        self.labels = labels
        self.loss_sum, self.weight, self.n = 0.0, 0.0, 0
        self.preds: list[torch.Tensor] = []
        self.golds: list[torch.Tensor] = []

    def update(self, out: Output, batch: dict[str, torch.Tensor]) -> None:
        k = float(out.n_targets)  # the examples, or the sum of their class weights when weighted
        self.loss_sum += float(out.loss) * k
        self.weight += k
        self.n += batch["labels"].shape[0]
        if self.num_labels > 1:
            self.preds.append(out.logits.argmax(-1).cpu())
            self.golds.append(batch["labels"].cpu())

    def result(self) -> dict:
        metrics = {"eval_loss": self.loss_sum / self.weight if self.weight else 0.0, "examples": self.n}
        if self.preds:
            metrics.update(classification_metrics(torch.cat(self.preds), torch.cat(self.golds), self.num_labels,
                                                  self.labels))
        return metrics


def classification_metrics(pred: torch.Tensor, gold: torch.Tensor, num_labels: int,
                           labels: list[str] | None = None) -> dict:
    """Accuracy and macro-F1 of predicted class indices against gold ones, with the per-class report
    and the confusion matrix (see classification_report)."""
    return {"accuracy": float((pred == gold).float().mean()), "macro_f1": macro_f1(pred, gold, num_labels),
            **classification_report(pred, gold, num_labels, labels)}


def confusion_matrix(pred: torch.Tensor, gold: torch.Tensor, num_labels: int) -> list[list[int]]:
    """confusion[i][j]: examples of true class i predicted as class j."""
    counts = torch.bincount(gold.long() * num_labels + pred.long(), minlength=num_labels * num_labels)
    return counts.view(num_labels, num_labels).tolist()


def classification_report(pred: torch.Tensor, gold: torch.Tensor, num_labels: int,
                          labels: list[str] | None = None) -> dict:
    """{"labels": [...], "report": {label: {precision, recall, f1, support}}, "confusion": [[...]]}, classes
    in index order (the confusion matrix's rows and columns too).

    A class never predicted has precision 0 (there is no prediction to be right about), one with no
    gold example recall 0, and F1 is 0 when both are 0: scikit-learn's zero_division=0."""
    names = list(labels) if labels is not None else [str(c) for c in range(num_labels)]
    confusion = confusion_matrix(pred, gold, num_labels)
    report = {}
    for c, name in enumerate(names):
        tp = confusion[c][c]
        predicted = sum(row[c] for row in confusion)
        support = sum(confusion[c])
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        report[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return {"labels": names, "report": report, "confusion": confusion}


MAX_CONFUSION_PRINTED = 20  # classes; a larger matrix does not fit a terminal (--json has it, or a PNG)


def format_report(metrics: dict) -> str:
    """The report and confusion matrix of classification_metrics as aligned text tables."""
    report, confusion = metrics["report"], metrics["confusion"]
    names = list(report)
    w = max(len("label"), *(len(n) for n in names))
    lines = [f"{'label':<{w}}  precision  recall      f1  support"]
    for name, r in report.items():
        lines.append(f"{name:<{w}}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['f1']:6.4f}  {r['support']:7d}")
    if len(names) > MAX_CONFUSION_PRINTED:
        lines.append(f"(confusion matrix of {len(names)} classes: see --json or --confusion-png)")
        return "\n".join(lines)
    cw = max(w, *(len(str(v)) for row in confusion for v in row))
    lines += ["", "confusion matrix (rows: true label, columns: predicted)",
              " " * w + "".join(f"  {n:>{cw}}" for n in names)]
    for name, row in zip(names, confusion, strict=True):
        lines.append(f"{name:<{w}}" + "".join(f"  {v:>{cw}}" for v in row))
    return "\n".join(lines)


def macro_f1(pred: torch.Tensor, gold: torch.Tensor, num_labels: int) -> float:
    f1s = []
    for c in range(num_labels):
        tp = int(((pred == c) & (gold == c)).sum())
        fp = int(((pred == c) & (gold != c)).sum())
        fn = int(((pred != c) & (gold == c)).sum())
        if tp + fp + fn == 0:
            continue  # a class absent from both predictions and gold says nothing
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / max(1, len(f1s))


class MultiLabelMetrics:
    """Multi-label: loss (BCE), exact-match (subset) accuracy, micro- and macro-F1 and per-label precision,
    recall and F1, a label predicted when its sigmoid probability is above `threshold`."""

    def __init__(self, labels: list[str], threshold: float = 0.5) -> None:
        self.labels, self.threshold = labels, threshold
        self.loss_sum, self.n = 0.0, 0
        self.preds: list[torch.Tensor] = []
        self.golds: list[torch.Tensor] = []

    def update(self, out: Output, batch: dict[str, torch.Tensor]) -> None:
        k = int(out.n_targets)
        self.loss_sum += float(out.loss) * k
        self.n += k
        self.preds.append((out.logits.float().sigmoid() > self.threshold).cpu())
        self.golds.append(batch["labels"].cpu() > 0.5)

    def result(self) -> dict:
        return {"eval_loss": self.loss_sum / max(1, self.n), "examples": self.n,
                **multi_label_metrics(torch.cat(self.preds), torch.cat(self.golds), self.labels)}


def multi_label_metrics(pred: torch.Tensor, gold: torch.Tensor, labels: list[str]) -> dict:
    """Metrics of predicted label sets against gold ones, both (N, L) bool.

    exact_match: the fraction of examples whose set is exactly right (an empty set included).
    micro_f1: 2 TP / (2 TP + FP + FN) over every (example, label). macro_f1: the mean of the per-label
    F1s, leaving out labels absent from both predictions and gold (as macro_f1 does). per_label:
    {label: {precision, recall, f1, support}}, a ratio with nothing to divide by counting as 0."""
    tp = (pred & gold).sum(0)  # (L,)
    fp = (pred & ~gold).sum(0)
    fn = (~pred & gold).sum(0)
    per_label, f1s = {}, []
    for i, name in enumerate(labels):
        t, p, n = int(tp[i]), int(fp[i]), int(fn[i])
        f1 = 2 * t / (2 * t + p + n) if t + p + n else 0.0
        if t + p + n:
            f1s.append(f1)
        per_label[name] = {"precision": t / (t + p) if t + p else 0.0, "recall": t / (t + n) if t + n else 0.0,
                           "f1": f1, "support": t + n}
    t, p, n = int(tp.sum()), int(fp.sum()), int(fn.sum())
    return {"exact_match": float((pred == gold).all(1).float().mean()),
            "micro_f1": 2 * t / (2 * t + p + n) if t + p + n else 0.0,
            "macro_f1": sum(f1s) / max(1, len(f1s)), "per_label": per_label}


@torch.no_grad()
def evaluate(model: nn.Module, features: list[dict], collate: Callable, batch_size: int, device: torch.device,
             metrics: MaskedLMMetrics | ClassificationMetrics | MultiLabelMetrics, precision: str = "fp32",
             progress: bool = False) -> dict:
    """Run the model over `features` in batches formed in length order and return `metrics.result()`.
    progress: a progress bar on stderr (it goes away when done)."""
    model.eval()
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    starts = range(0, len(order), batch_size)
    for s in tqdm(starts, desc="eval", unit="batch", leave=False, disable=not progress, dynamic_ncols=True):
        batch = collate([features[i] for i in order[s:s + batch_size]])
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, precision):
            out = model(**{k: v for k, v in batch.items() if not k.startswith(META_PREFIX)})
        metrics.update(out, batch)
    return metrics.result()


def _prf(correct: int, predicted: int, gold: int) -> dict:
    """Precision, recall and F1 of `correct` hits among `predicted` against `gold`; 0 where nothing divides."""
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], scheme: str = "IOB2") -> dict:
    """Entity scores of predicted tag sequences against gold ones, one list of tags per sentence.

    An entity counts when its span and type are both exact; entities are decoded strictly (data.tagging's
    `spans`: an I-X after O starts nothing), as seqeval's mode="strict". precision, recall and f1 are micro
    averages over the types; per_type holds each type's, with its support (gold entities), for every type in
    gold or predictions. accuracy is over tokens. ill_formed_gold / ill_formed_pred count the tags strict
    decoding dropped (data.tagging's `ill_formed`): a model that emits many is losing entities to them."""
    check_scheme(scheme)
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted; give one prediction per sentence")
    hits, n_gold, n_pred = Counter(), Counter(), Counter()
    tokens = right = ill_gold = ill_pred = 0
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted; give one tag per token")
        check_tags(g, scheme)
        check_tags(p, scheme)
        gold_spans, pred_spans = set(spans(g, scheme)), set(spans(p, scheme))
        n_gold.update(kind for kind, _, _ in gold_spans)
        n_pred.update(kind for kind, _, _ in pred_spans)
        hits.update(kind for kind, _, _ in gold_spans & pred_spans)
        tokens += len(g)
        right += sum(a == b for a, b in zip(g, p))
        ill_gold += ill_formed(g, scheme)
        ill_pred += ill_formed(p, scheme)
    per_type = {kind: {**_prf(hits[kind], n_pred[kind], n_gold[kind]), "support": n_gold[kind]}
                for kind in sorted(n_gold.keys() | n_pred.keys())}
    correct, total_gold, total_pred = sum(hits.values()), sum(n_gold.values()), sum(n_pred.values())
    return {**_prf(correct, total_pred, total_gold), "accuracy": right / tokens if tokens else 0.0,
            "gold_entities": total_gold, "pred_entities": total_pred, "correct_entities": correct,
            "ill_formed_gold": ill_gold, "ill_formed_pred": ill_pred, "per_type": per_type}


def _word_spans(words: Sequence[str], sentence: int) -> list[tuple[int, int]]:
    out, start = [], 0
    for j, word in enumerate(words):
        if not word:
            raise ValueError(f"sentence {sentence}: word {j} is empty; a word has at least one character")
        out.append((start, start + len(word)))
        start += len(word)
    return out


def segmentation_metrics(gold_words: Sequence[Sequence[str]], pred_words: Sequence[Sequence[str]],
                         train_words: Collection[str] | None = None) -> dict:
    """Word segmentation scores as the SIGHAN bakeoff's score script computes them: a predicted word is
    right when its characters span exactly a gold word's (so the same word in the wrong place is wrong).
    precision, recall and f1 over the words of all sentences; with train_words (the training data's
    vocabulary), oov_rate (the share of gold words not in it), oov_recall and iv_recall (recall over the
    gold words outside and inside it). Each sentence's words must spell the same text in both."""
    if len(gold_words) != len(pred_words):
        raise ValueError(f"{len(gold_words)} gold sentences but {len(pred_words)} predicted; give one per sentence")
    known = None if train_words is None else set(train_words)
    correct = n_gold = n_pred = oov = oov_right = iv_right = 0
    for i, (g, p) in enumerate(zip(gold_words, pred_words)):
        if "".join(g) != "".join(p):
            raise ValueError(f"sentence {i}: the predicted words spell {''.join(p)[:30]!r}, the gold words "
                             f"{''.join(g)[:30]!r}; segment the same text")
        gold_spans, pred_spans = _word_spans(g, i), set(_word_spans(p, i))
        hits = [span in pred_spans for span in gold_spans]
        correct += sum(hits)
        n_gold += len(gold_spans)
        n_pred += len(pred_spans)
        if known is not None:
            for word, hit in zip(g, hits):
                if word in known:
                    iv_right += hit
                else:
                    oov += 1
                    oov_right += hit
    metrics = {**_prf(correct, n_pred, n_gold), "gold_words": n_gold, "pred_words": n_pred, "correct_words": correct}
    if known is not None:
        metrics.update(oov_rate=oov / n_gold if n_gold else 0.0, oov_recall=oov_right / oov if oov else 0.0,
                       iv_recall=iv_right / (n_gold - oov) if n_gold - oov else 0.0)
    return metrics


class TaggingMetrics:
    """Loss, and entity precision / recall / F1 with the per-type report (IOB2, BIOES) or word precision /
    recall / F1 (BMES segmentation), over whole sentences: the windows of a long sentence (meta_ keys of
    the tagging collator's batches) are put back together, each word read where its window owns it, and
    every sentence is decoded as a whole into the best well-formed tags (data.tagging's viterbi, with a CRF
    tagger's learned scores), as the TokenClassifier pipeline decodes them, so training's numbers are
    predict.py --eval's."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels
        self.scheme = scheme_of(labels)
        self.constraints = allowed_transitions(labels, self.scheme)
        self.crf: tuple[np.ndarray, ...] | None = None  # a CRF tagger's learned scores (model.CRF)
        self.loss_sum = self.count = 0.0
        self.words: dict[int, dict[int, tuple[int, torch.Tensor]]] = {}  # sentence -> word -> (gold, log-probs)

    def update(self, out: Output, batch: dict[str, torch.Tensor]) -> None:
        k = float(out.n_targets)
        self.loss_sum += float(out.loss) * k
        self.count += k
        log_probs = out.logits.float().log_softmax(-1).cpu()  # (B, T, L)
        if out.crf is not None:
            self.crf = tuple(t.float().cpu().numpy() for t in out.crf)
        first = batch["meta_prediction_mask"].cpu().bool()
        rows, cols = first.nonzero(as_tuple=True)
        sentences = batch["meta_sentence"].cpu()[rows].tolist()
        word_ids = batch["meta_word_ids"].cpu()[rows, cols].tolist()
        gold = batch["labels"].cpu()[rows, cols].tolist()
        for s, w, g, lp in zip(sentences, word_ids, gold, log_probs[rows, cols]):
            self.words.setdefault(s, {})[w] = (g, lp)

    def result(self) -> dict:
        gold, pred = [], []
        for s in sorted(self.words):
            words = self.words[s]
            order = sorted(words)
            gold.append([self.labels[words[w][0]] for w in order])
            lp = torch.stack([words[w][1] for w in order]).numpy()
            pred.append([self.labels[i] for i in viterbi(lp, *self.constraints, scores=self.crf)])
        loss = {"eval_loss": self.loss_sum / self.count if self.count else float("nan")}
        if self.scheme == "BMES":
            as_words = lambda tags: bmes_to_words(["x"] * len(tags), tags)  # noqa: E731 (lengths are what count)
            seg = segmentation_metrics([as_words(g) for g in gold], [as_words(p) for p in pred])
            right = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p))
            total = sum(len(g) for g in gold)
            return {**loss, "f1": seg["f1"], "precision": seg["precision"], "recall": seg["recall"],
                    "accuracy": right / total if total else 0.0, "words": seg["gold_words"]}
        scores = entity_metrics(gold, pred, self.scheme)
        return {**loss, **{k: scores[k] for k in ("f1", "precision", "recall", "accuracy")},
                "entities": scores["gold_entities"], "per_type": scores["per_type"]}
