"""The task objects: what each job reads, holds out, measures and keeps as best."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT, TINY_SHAPE, write_jsonl

from minibert.config import BertConfig
from minibert.data import MaskingCollator, PackingCollator
from minibert.tasks import TASKS, MaskedLM, SequenceClassification, TokenClassification, saved_task, split
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
    assert saved_task(BertConfig(architectures=["BertForTokenClassification"])) is TokenClassification
    assert set(TASKS) == {"mlm", "classify", "tag"}


def test_head_tail_truncation_keeps_the_start_and_the_end(tok, tmp_path):
    from minibert.data.features import TRUNCATION_KEY, head_tail

    feature = {"input_ids": np.arange(20), "token_type_ids": np.zeros(20, dtype=np.int8)}
    cut = head_tail(feature, 10)  # 8 text tokens: the first 2 and the last 6, [CLS] and [SEP] kept
    assert cut["input_ids"].tolist() == [0, 1, 2, 13, 14, 15, 16, 17, 18, 19] and len(cut["token_type_ids"]) == 10
    assert head_tail(feature, 20) is feature
    text = "".join(chr(0x4E00 + i) for i in range(40))  # 40 distinct characters, each one token
    train = write_jsonl(tmp_path / "t.jsonl", [{"text": text, "label": "a"}, {"text": "好", "label": "b"}])
    task = SequenceClassification(truncation="head+tail")
    data = task.load(tok, config(tok), 18, train)
    ids = tok.encode(text).ids
    assert data.train[0]["input_ids"].tolist() == ids[:5] + ids[-13:]  # 16 text tokens: 4 + 12
    assert data.config.extra[TRUNCATION_KEY] == "head+tail"
    again = SequenceClassification().load(tok, data.config, 18, train)  # back to head: the key goes
    assert TRUNCATION_KEY not in again.config.extra and again.train[0]["input_ids"].tolist() == ids[:17] + ids[-1:]


def test_classifier_predicts_with_the_truncation_it_was_trained_with(tok, tmp_path):
    import torch

    from minibert import BertForSequenceClassification, TextClassifier
    from minibert.data.collators import pad_batch
    from minibert.data.features import head_tail, tokenize_examples
    from minibert.data.readers import Example

    text = "".join(chr(0x4E00 + i) for i in range(60))
    train = write_jsonl(tmp_path / "t.jsonl", [{"text": text, "label": "a"}, {"text": "好", "label": "b"}])
    data = SequenceClassification(truncation="head+tail").load(tok, config(tok), 40, train)
    torch.manual_seed(0)
    data.config.initializer_range = 0.5  # large weights: the output depends clearly on which tokens are in
    model = BertForSequenceClassification(data.config).eval()
    model.save_pretrained(tmp_path / "clf", tokenizer=tok)
    clf = TextClassifier.from_pretrained(tmp_path / "clf", device="cpu")
    got = clf([text])[0].scores["a"]
    # the classifier's own positions (40) cap the text: head+tail of the full encoding at 40
    full = tokenize_examples(tok, [Example(text, "a", None, 1)], None, None)[0]
    with torch.no_grad():
        want = model(**pad_batch([head_tail(full, 40)], tok.pad_token_id)).logits.softmax(-1)[0, 0].item()
        head_only = model(**tok([text], max_length=40)).logits.softmax(-1)[0, 0].item()
    assert abs(got - want) < 1e-6 and abs(got - head_only) > 1e-3, (got, want, head_only)


def test_metric_names_and_which_way_is_better():
    mlm, clf = MaskedLM(), SequenceClassification()
    assert mlm.check_metric(None) == "eval_loss" and clf.check_metric(None) == "accuracy"
    assert mlm.metric_names == ("accuracy", "eval_loss", "perplexity")
    assert clf.metric_names == ("accuracy", "macro_f1", "eval_loss")
    assert clf.check_metric("macro_f1") == "macro_f1"
    with pytest.raises(ValueError, match=r"--metric macro_f1: not a metric of --task mlm; use one of accuracy, "
                                         r"eval_loss, perplexity"):
        mlm.check_metric("macro_f1")
    # the chosen metric, not the task's default, decides; its name says which way is better
    assert mlm.is_better({"accuracy": 0.6, "eval_loss": 9.0}, {"accuracy": 0.5, "eval_loss": 1.0}, "accuracy")
    assert not mlm.is_better({"perplexity": 9.0}, {"perplexity": 3.0}, "perplexity")
    assert clf.is_better({"eval_loss": 0.2, "accuracy": 0.1}, {"eval_loss": 0.3, "accuracy": 0.9}, "eval_loss")
    assert not clf.is_better({"macro_f1": 0.5}, {"macro_f1": 0.5}, "macro_f1")  # a tie is no improvement
