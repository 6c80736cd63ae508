"""The task objects: what each job reads, holds out, measures and keeps as best."""

from __future__ import annotations

import pytest
from conftest import ROOT, TINY_SHAPE, write_jsonl

from minibert.config import BertConfig
from minibert.data import MaskingCollator, PackingCollator
from minibert.tasks import TASKS, MaskedLM, SequenceClassification, saved_task, split
from minibert.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_vocab(ROOT / "vocab" / "zh.txt")


def config(tok) -> BertConfig:
    return BertConfig(**TINY_SHAPE, vocab_size=tok.vocab_size)


def test_split_is_seeded_and_disjoint():
    kept, held = split(list(range(20)), 0.25, seed=3)
    assert sorted(kept + held) == list(range(20)) and len(held) == 5
    assert split(list(range(20)), 0.25, seed=3) == (kept, held)
    assert split(list(range(20)), 0.25, seed=4) != (kept, held)
    with pytest.raises(ValueError, match="leaves no training data from 1 examples"):
        split([1], 0.5, seed=0)


def test_classification_labels_regression_and_best(tok, tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", [{"text": "好", "label": "pos"}, {"text": "坏", "label": "neg"}])
    task = SequenceClassification()
    data = task.load(tok, config(tok), 16, train)
    assert data.config.label2id == {"neg": 0, "pos": 1} and data.note == ", labels: neg, pos"
    assert [f["label"] for f in data.train] == [1, 0] and data.eval is None
    assert task.best_metric == "accuracy" and task.is_better({"accuracy": 0.6}, {"accuracy": 0.5})
    scores = write_jsonl(tmp_path / "r.jsonl", [{"text": "好", "label": 4.5}, {"text": "坏", "label": 1}])
    data = task.load(tok, config(tok), 16, scores)
    assert data.config.num_labels == 1 and data.config.id2label is None and data.note == ", regression"
    assert task.best_metric == "eval_loss" and task.is_better({"eval_loss": 0.4}, {"eval_loss": 0.5})


def test_masked_lm_packs_training_rows_only(tok, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("三国人物诸葛亮\n刘备关羽张飞\n曹操孙权周瑜\n诸葛亮草船借箭\n", encoding="utf-8")
    task = MaskedLM(pack=True)
    data = task.load(tok, config(tok), 40, corpus, eval_split=0.25)
    assert len(data.train) == 1 and "sequence_ids" in data.train[0] and data.note.endswith("packed into 1 rows")
    assert len(data.eval) == 1 and "sequence_ids" not in data.eval[0]
    assert isinstance(task.collator(tok), PackingCollator) and isinstance(task.eval_collator(tok), MaskingCollator)
    assert not task.is_better({"eval_loss": 2.0}, {"eval_loss": 1.0})


def test_saved_task_reads_the_architecture():
    assert saved_task(BertConfig(architectures=["BertForSequenceClassification"])) is SequenceClassification
    assert saved_task(BertConfig(architectures=["BertForMaskedLM"])) is MaskedLM
    assert saved_task(BertConfig()) is MaskedLM  # a bare encoder checkpoint fine-tunes as fill-mask
    assert set(TASKS) == {"mlm", "classify"}
