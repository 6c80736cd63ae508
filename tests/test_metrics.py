"""Evaluation metrics, and the loop that feeds them batches."""

from __future__ import annotations

import math

import pytest
import torch

from minibert.metrics import (
    ClassificationMetrics,
    MaskedLMMetrics,
    classification_metrics,
    evaluate,
    format_report,
    macro_f1,
)
from minibert.model import Output


def test_macro_f1():
    pred = torch.tensor([0, 0, 1, 1, 2, 2])
    gold = torch.tensor([0, 1, 1, 1, 2, 0])
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp0 fn1 -> 0.8; class 2: tp1 fp1 fn0 -> 2/3
    assert macro_f1(pred, gold, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


# 8 examples of 3 classes; class "c" is never predicted.
REPORT_GOLD = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
REPORT_PRED = torch.tensor([0, 0, 1, 1, 1, 0, 1, 0])


def test_classification_report_by_hand():
    m = classification_metrics(REPORT_PRED, REPORT_GOLD, 3, ["a", "b", "c"])
    # rows: true a, b, c; columns: predicted a, b, c
    assert m["confusion"] == [[2, 1, 0], [1, 2, 0], [1, 1, 0]]
    assert m["labels"] == ["a", "b", "c"] and list(m["report"]) == ["a", "b", "c"]
    # a: 2 right of 4 predicted a (precision 1/2), of 3 true a (recall 2/3): F1 = 2 * 1/2 * 2/3 / (1/2 + 2/3) = 4/7
    # b: the same counts. c: never predicted, so precision 0 by convention (no prediction to be right
    # about), recall 0 of 2, F1 0
    expected = {"a": (1 / 2, 2 / 3, 4 / 7, 3), "b": (1 / 2, 2 / 3, 4 / 7, 3), "c": (0.0, 0.0, 0.0, 2)}
    for name, (precision, recall, f1, support) in expected.items():
        r = m["report"][name]
        assert (r["precision"], r["recall"], r["f1"]) == pytest.approx((precision, recall, f1)), name
        assert r["support"] == support and isinstance(r["support"], int)
    assert m["accuracy"] == 4 / 8 and m["macro_f1"] == pytest.approx((4 / 7 + 4 / 7 + 0) / 3)


def test_report_table_is_aligned():
    text = format_report(classification_metrics(REPORT_PRED, REPORT_GOLD, 3, ["a", "bb", "c"]))
    assert text.splitlines() == [
        "label  precision  recall      f1  support",
        "a         0.5000  0.6667  0.5714        3",
        "bb        0.5000  0.6667  0.5714        3",
        "c         0.0000  0.0000  0.0000        2",
        "",
        "confusion matrix (rows: true label, columns: predicted)",
        "           a     bb      c",
        "a          2      1      0",
        "bb         1      2      0",
        "c          1      1      0",
    ]


def test_masked_lm_metrics_weight_batches_by_their_targets():
    m = MaskedLMMetrics()
    # batch 1: 1 target, right, loss 2; batch 2: 3 targets, 1 right, loss 1 -> mean loss (2 + 3) / 4
    labels1 = torch.tensor([[-100, 3, -100]])
    m.update(Output(torch.nn.functional.one_hot(torch.tensor([3]), 5).float(), torch.tensor(2.0), torch.tensor(1)),
             {"labels": labels1})
    labels2 = torch.tensor([[1, 2, -100, 4]])
    logits = torch.nn.functional.one_hot(torch.tensor([1, 0, 0]), 5).float()
    m.update(Output(logits, torch.tensor(1.0), torch.tensor(3)), {"labels": labels2})
    result = m.result()
    assert result["eval_loss"] == pytest.approx(5 / 4) and result["perplexity"] == pytest.approx(math.exp(5 / 4))
    assert result["accuracy"] == 2 / 4 and result["masked_tokens"] == 4


def test_regression_reports_loss_only():
    m = ClassificationMetrics(num_labels=1)
    m.update(Output(torch.zeros(2, 1), torch.tensor(0.5), torch.tensor(2)), {"labels": torch.tensor([0.1, 0.2])})
    assert m.result() == {"eval_loss": 0.5, "examples": 2}


class Echo(torch.nn.Module):
    """A 'model' whose logits say which class each row's first id is: the loop's bookkeeping, alone."""

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        logits = torch.nn.functional.one_hot(input_ids[:, 0], 3).float()
        return Output(logits, torch.tensor(0.0), torch.tensor(len(labels)))


def test_evaluate_sees_every_feature_once():
    features = [{"input_ids": [i % 3] * (1 + i % 4), "label": i % 3 if i != 5 else 0} for i in range(10)]

    def collate(batch):
        T = max(len(f["input_ids"]) for f in batch)
        ids = torch.tensor([f["input_ids"] + [0] * (T - len(f["input_ids"])) for f in batch])
        return {"input_ids": ids, "labels": torch.tensor([f["label"] for f in batch])}

    result = evaluate(Echo(), features, collate, 4, torch.device("cpu"), ClassificationMetrics(3))
    assert result["examples"] == 10 and result["accuracy"] == pytest.approx(0.9)  # only feature 5 is wrong


@pytest.mark.parametrize("progress", [False, True])
def test_evaluate_progress_bar_on_stderr_only_when_asked(capsys, progress):
    features = [{"input_ids": [i % 3], "label": i % 3} for i in range(8)]

    def collate(batch):
        return {"input_ids": torch.tensor([f["input_ids"] for f in batch]),
                "labels": torch.tensor([f["label"] for f in batch])}

    result = evaluate(Echo(), features, collate, 2, torch.device("cpu"), ClassificationMetrics(3), progress=progress)
    assert result["accuracy"] == 1.0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert ("eval" in captured.err) if progress else captured.err == ""
