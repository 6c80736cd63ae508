"""Entity metrics against seqeval's strict mode (the reference, test-only), and word segmentation scores
as the SIGHAN bakeoff computes them. Numbers equal to 1e-12: the same counts divided in another order."""

from __future__ import annotations

import random
import warnings

import pytest

from minibert.data.tagging import bmes_to_words
from minibert.metrics import entity_metrics, segmentation_metrics

TOL = 1e-12


def _seqeval(gold, pred, scheme):
    """seqeval's strict numbers in entity_metrics' shape."""
    metrics = pytest.importorskip("seqeval.metrics")
    v1 = pytest.importorskip("seqeval.metrics.v1")
    schemes = pytest.importorskip("seqeval.scheme")
    if scheme == "BMES":  # BIOES without types: seqeval reads an untyped B as type "_"
        gold, pred = ([["I" if t == "M" else t for t in s] for s in seqs] for seqs in (gold, pred))
    kw = dict(mode="strict", scheme=schemes.IOB2 if scheme == "IOB2" else schemes.IOBES, zero_division=0)
    with warnings.catch_warnings():  # its macro average of a corpus without entities is numpy's mean of nothing
        warnings.simplefilter("ignore", RuntimeWarning)
        p, r, f, _ = v1.precision_recall_fscore_support(gold, pred, average="micro", **kw)
        report = metrics.classification_report(gold, pred, output_dict=True, **kw)
    per_type = {k: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"], "support": v["support"]}
                for k, v in report.items() if not k.endswith(" avg")}
    return {"precision": p, "recall": r, "f1": f, "per_type": per_type,
            # seqeval divides by zero on a corpus without tokens; ours says 0.0
            "accuracy": metrics.accuracy_score(gold, pred) if any(gold) else 0.0}


def _assert_equal(ours, gold, pred, scheme):
    ref = _seqeval(gold, pred, scheme)
    for key in ("precision", "recall", "f1", "accuracy"):
        assert ours[key] == pytest.approx(ref[key], abs=TOL), key
    ref_types = {("" if k == "_" else k): v for k, v in ref["per_type"].items()}
    assert set(ours["per_type"]) == set(ref_types)
    for kind, row in ours["per_type"].items():
        for key in ("precision", "recall", "f1"):
            assert row[key] == pytest.approx(ref_types[kind][key], abs=TOL), (kind, key)
        assert row["support"] == ref_types[kind]["support"]
    assert ours["gold_entities"] == sum(r["support"] for r in ours["per_type"].values())


def test_hand_made_iob2():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"], ["B-ORG", "O", "B-PER"], ["O", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC", "O", "O"],  # PER right, LOC cut short
            ["I-ORG", "O", "B-PER"],  # an I-ORG after nothing: strict mode finds no ORG
            ["B-LOC", "O"]]  # a LOC where there is none
    ours = entity_metrics(gold, pred)
    assert (ours["gold_entities"], ours["pred_entities"], ours["correct_entities"]) == (4, 4, 2)
    assert ours["precision"] == ours["recall"] == ours["f1"] == 0.5
    assert ours["per_type"]["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert ours["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert ours["accuracy"] == 8 / 11
    assert (ours["ill_formed_gold"], ours["ill_formed_pred"]) == (0, 1)
    _assert_equal(ours, gold, pred, "IOB2")


def test_hand_made_bioes_and_empty_cases():
    gold = [["B-PER", "E-PER", "S-LOC", "O"], ["S-ORG"]]
    pred = [["B-PER", "I-PER", "S-LOC", "O"], ["S-ORG"]]  # the PER is never closed: not an entity
    ours = entity_metrics(gold, pred, "BIOES")
    assert (ours["correct_entities"], ours["pred_entities"], ours["ill_formed_pred"]) == (2, 2, 2)
    assert ours["recall"] == 2 / 3 and ours["precision"] == 1.0
    _assert_equal(ours, gold, pred, "BIOES")
    nothing = entity_metrics([["O", "O"]], [["O", "O"]])
    assert nothing["f1"] == nothing["precision"] == nothing["recall"] == 0.0 and nothing["accuracy"] == 1.0
    assert nothing["per_type"] == {}
    assert entity_metrics([], [])["accuracy"] == 0.0


@pytest.mark.parametrize("scheme, prefixes", [("IOB2", "BI"), ("BIOES", "BIES"), ("BMES", None)])
def test_random_sequences_equal_seqeval(scheme, prefixes):
    """250 random corpora per scheme, of 1-6 sentences of 0-12 tags. Half of them are well-formed (gold
    entities, with predictions perturbed tag by tag); the other half draw every tag uniformly, so most
    are ill-formed."""
    rng = random.Random(0)
    tags = ["B", "M", "E", "S"] if scheme == "BMES" else ["O"] + [f"{p}-{t}" for p in prefixes for t in ("A", "B", "C")]
    start = [t for t in tags if t[0] in "BS"]
    f1s = []
    for trial in range(250):
        gold, pred = [], []
        for _ in range(rng.randint(1, 6)):
            n = rng.randint(0, 12)
            if trial % 2:
                g = [rng.choice(tags) for _ in range(n)]
            else:
                g = []
                while len(g) < n:  # a well-formed sequence: entities of 1-3 tokens, O between
                    kind = rng.choice(start)
                    length = 1 if kind[0] == "S" else rng.randint(2, 3) if scheme != "IOB2" else rng.randint(1, 3)
                    body = {"IOB2": "I", "BIOES": "I", "BMES": "M"}[scheme]
                    suffix = kind[1:]
                    entity = [kind] if length == 1 else [kind] + [body + suffix] * (length - 2) + [
                        ("I" if scheme == "IOB2" else "E") + suffix]
                    g += entity
                    if scheme != "BMES" and rng.random() < 0.5:
                        g.append("O")
                g = g[:n]
            p = [t if rng.random() < 0.8 else rng.choice(tags) for t in g]
            gold.append(g)
            pred.append(p)
        ours = entity_metrics(gold, pred, scheme)
        _assert_equal(ours, gold, pred, scheme)
        f1s.append(ours["f1"])
    assert sum(0 < f < 1 for f in f1s) > 100  # most corpora score in between: neither trivially right nor empty


def test_entity_metrics_errors():
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted"):
        entity_metrics([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1 predicted"):
        entity_metrics([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="tag 'E-PER' is not a tag of the IOB2 scheme"):
        entity_metrics([["O"]], [["E-PER"]])
    with pytest.raises(ValueError, match="tag scheme 'BIO'"):
        entity_metrics([["O"]], [["O"]], "BIO")


def test_segmentation_as_sighan_scores_it():
    gold = [["我", "爱", "北京", "天安门"], ["研究生", "命", "起源"]]
    pred = [["我", "爱", "北京", "天", "安门"], ["研究", "生命", "起源"]]
    m = segmentation_metrics(gold, pred)
    # right: 我 爱 北京 起源 = 4 of 8 predicted and 7 gold words; 研究 / 生命 are words, but not these text's
    assert (m["correct_words"], m["pred_words"], m["gold_words"]) == (4, 8, 7)
    assert m["precision"] == 0.5 and m["recall"] == 4 / 7
    assert m["f1"] == pytest.approx(2 * 0.5 * (4 / 7) / (0.5 + 4 / 7), abs=TOL)
    assert "oov_recall" not in m
    m = segmentation_metrics(gold, pred, train_words={"我", "北京", "天安门", "研究生", "生命"})
    # out of vocabulary: 爱 (right), 命 (wrong), 起源 (right); in: 我 北京 (right), 天安门 研究生 (wrong)
    assert m["oov_rate"] == 3 / 7 and m["oov_recall"] == 2 / 3 and m["iv_recall"] == 2 / 4
    # a well-formed BMES sequence gives the words its strict entities span
    chars = list("我爱北京天安门")
    assert segmentation_metrics([bmes_to_words(chars, ["S", "S", "B", "E", "B", "M", "E"])],
                                [bmes_to_words(chars, ["S", "S", "B", "E", "B", "M", "E"])])["f1"] == 1.0
    with pytest.raises(ValueError, match="sentence 0: the predicted words spell '我爱', the gold words '我'"):
        segmentation_metrics([["我"]], [["我", "爱"]])
    with pytest.raises(ValueError, match="sentence 0: word 1 is empty"):
        segmentation_metrics([["我", ""]], [["我"]])
