"""The tagger's CRF layer (model.CRF, train.py --task tag --crf): its likelihood against brute force over
every tag sequence, its decoding, its weights in and out of checkpoint folders, and a run through the CLI."""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_SHAPE, ids_batch, tiny_config

from minibert import BertConfig, BertForTokenClassification
from minibert.data.collators import TaggingCollator
from minibert.data.tag_features import tokenize_tagged
from minibert.data.tagging import allowed_transitions, marginals, viterbi
from minibert.metrics import TaggingMetrics, evaluate
from minibert.model import CRF, CRF_KEY
from minibert.optim import param_groups
from minibert.pipelines.tag import TokenClassifier
from minibert.tokenizer import Tokenizer

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TINY = dict(**TINY_SHAPE, vocab_size=90)


def _crf(num_labels: int, seed: int) -> CRF:
    crf = CRF(num_labels)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return crf


def _path_score(crf: CRF, em: torch.Tensor, path: tuple[int, ...]) -> torch.Tensor:
    s = crf.start_transitions[path[0]] + crf.end_transitions[path[-1]]
    for t, j in enumerate(path):
        s = s + em[t, j] + (crf.transitions[path[t - 1], j] if t else 0.0)
    return s


def test_nll_is_log_z_minus_the_gold_score_by_brute_force():
    """Rows of 1 to 5 labelled tokens among -100s (a [CLS], later pieces, padding) and one row with none: the
    summed NLL equals, row by row, log of the sum of exp(score) over all L^n tag sequences minus the gold
    sequence's score, computed by enumeration; fp64 so the comparison can be tight (atol 1e-9)."""
    L, T = 3, 8
    crf = _crf(L, 0).double()
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, T, L, generator=g, dtype=torch.float64)
    labels = torch.full((4, T), -100)
    positions = [[1, 2, 3, 5, 6], [1], [], [2, 4, 7]]  # row 2 has no labelled token
    for r, at in enumerate(positions):
        labels[r, at] = torch.randint(0, L, (len(at),), generator=g)
    total, n = crf.nll(logits, labels)
    expected = 0.0
    for r, at in enumerate(positions):
        if not at:
            continue
        em = logits[r, at]
        scores = torch.stack([_path_score(crf, em, p) for p in itertools.product(range(L), repeat=len(at))])
        expected = expected + torch.logsumexp(scores, 0) - _path_score(crf, em, tuple(labels[r, at].tolist()))
    assert int(n) == sum(len(a) for a in positions)
    torch.testing.assert_close(total, expected, atol=1e-9, rtol=0)
    # and its gradient is the expected tag counts minus the gold ones: finite differences agree
    assert torch.autograd.gradcheck(lambda tr: _with_transitions(crf, tr).nll(logits, labels)[0],
                                    (crf.transitions.detach().clone().requires_grad_(),))


def _with_transitions(crf: CRF, transitions: torch.Tensor) -> CRF:
    clone = CRF(crf.transitions.shape[0]).double()
    clone.start_transitions, clone.end_transitions = crf.start_transitions, crf.end_transitions
    del clone.transitions
    clone.transitions = transitions
    return clone


@pytest.mark.parametrize("scheme,labels", [("IOB2", TAGS), ("BMES", ["B", "M", "E", "S"])])
def test_viterbi_with_learned_scores_is_the_best_allowed_path(scheme, labels):
    """Brute force over every well-formed sequence of 5 tags, 20 random score tables and CRFs: the decode
    maximises emissions + transitions + start + end among the sequences the scheme allows."""
    allowed, start, end = allowed_transitions(labels, scheme)
    rng = np.random.default_rng(0)
    L = len(labels)
    for k in range(20):
        lp = rng.normal(size=(5, L)).astype(np.float32)
        scores = tuple(rng.normal(size=s).astype(np.float32) * 2 for s in ((L, L), (L,), (L,)))
        path = viterbi(lp, allowed, start, end, scores=scores)

        def total(seq):
            return (scores[1][seq[0]] + scores[2][seq[-1]] + sum(lp[t, j] for t, j in enumerate(seq))
                    + sum(scores[0][a, b] for a, b in zip(seq, seq[1:])))

        ok = [seq for seq in itertools.product(range(L), repeat=5)
              if start[seq[0]] and end[seq[-1]] and all(allowed[a, b] for a, b in zip(seq, seq[1:]))]
        assert tuple(path) in ok
        assert total(path) == pytest.approx(max(total(seq) for seq in ok), abs=1e-4)


@pytest.mark.parametrize("scheme,labels", [("IOB2", TAGS), ("BMES", ["B", "M", "E", "S"])])
def test_marginals_sum_the_allowed_paths_by_brute_force(scheme, labels):
    """Each tag's probability at each of 4 tokens equals the summed exp(score) of the allowed sequences with
    that tag there, over all of them (enumeration, fp64); rows sum to 1; disallowed tags get 0."""
    allowed, start, end = allowed_transitions(labels, scheme)
    rng = np.random.default_rng(1)
    L, T = len(labels), 4
    for _ in range(5):
        lp = rng.normal(size=(T, L))
        scores = tuple(rng.normal(size=s) for s in ((L, L), (L,), (L,)))
        ok = [seq for seq in itertools.product(range(L), repeat=T)
              if start[seq[0]] and end[seq[-1]] and all(allowed[a, b] for a, b in zip(seq, seq[1:]))]
        weight = np.array([np.exp(scores[1][q[0]] + scores[2][q[-1]] + sum(lp[t, j] for t, j in enumerate(q))
                                  + sum(scores[0][a, b] for a, b in zip(q, q[1:]))) for q in ok])
        want = np.zeros((T, L))
        for q, w in zip(ok, weight / weight.sum()):
            want[np.arange(T), list(q)] += w
        got = marginals(lp, allowed, start, end, scores)
        np.testing.assert_allclose(got, want, atol=1e-6)  # float32 output of an fp64 computation
        np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-6)
        assert (got[0][~start] == 0).all() and (got[-1][~end] == 0).all()


def test_crf_tagger_loss_saves_and_loads_with_its_transitions(tmp_path):
    """A "crf": true config builds the layer; the loss is the NLL per tagged token; the folder keeps the
    transitions through save -> load; the transitions skip weight decay."""
    cfg = BertConfig(**TINY, id2label=dict(enumerate(TAGS)), extra={CRF_KEY: True})
    torch.manual_seed(0)
    model = BertForTokenClassification(cfg).eval()
    with torch.no_grad():
        for p in model.crf.parameters():
            p.normal_()
    ids, mask = ids_batch()
    labels = torch.randint(0, len(TAGS), ids.shape).masked_fill(mask == 0, -100)
    labels[:, 0] = -100
    with torch.no_grad():
        out = model(ids, mask, labels=labels)
        total, n = model.crf.nll(out.logits, labels)
    torch.testing.assert_close(out.loss, total / n)
    assert out.crf is not None and torch.equal(out.crf[0], model.crf.transitions)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())[CRF_KEY] is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a lost key would be a "newly initialised" warning
        back = BertForTokenClassification.from_pretrained(tmp_path).eval()
    for a, b in zip(model.crf.parameters(), back.crf.parameters()):
        assert torch.equal(a, b)
    no_decay = {id(p) for p in param_groups(model, 0.01)[1]["params"]}
    assert all(id(p) in no_decay for p in model.crf.parameters())
    # a folder without the layer loads into a CRF tagger with fresh (zero) transitions, said in a warning
    plain = BertForTokenClassification(BertConfig(**TINY, id2label=dict(enumerate(TAGS))))
    plain.save_pretrained(tmp_path / "plain")
    with pytest.warns(UserWarning, match="crf.transitions"):
        fresh = BertForTokenClassification.from_pretrained(tmp_path / "plain", **{CRF_KEY: True})
    assert not fresh.crf.transitions.any()


def test_transformers_reads_a_crf_tagger_as_a_plain_one_with_the_same_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = BertConfig(**TINY, id2label=dict(enumerate(TAGS)), extra={CRF_KEY: True})
    torch.manual_seed(0)
    ours = BertForTokenClassification(cfg).eval()
    ours.save_pretrained(tmp_path)
    ref, info = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and sorted(info["unexpected_keys"]) == \
        ["crf.end_transitions", "crf.start_transitions", "crf.transitions"]
    ids, mask = ids_batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, mask).logits, ref.eval()(input_ids=ids, attention_mask=mask).logits,
                                   atol=1e-5, rtol=1.3e-6)


def test_training_metrics_and_the_pipeline_both_decode_with_the_learned_scores():
    """A tagger whose classifier says O everywhere (bias +20) but whose CRF strongly prefers to start on
    B-LOC and then to go on with I-LOC: every sentence decodes as one LOC entity over the whole of it, in
    TaggingMetrics (training's evaluation) and in TokenClassifier (predict.py) alike. A path that ignored
    the CRF would find no entity at all."""
    tok = Tokenizer.from_pretrained(ROOT / "models" / "zh-small")
    cfg = tiny_config(tok.vocab_size, num_labels=5, id2label=dict(enumerate(TAGS)))
    cfg.extra.update({"tokens_are_characters": True, CRF_KEY: True})
    model = BertForTokenClassification(cfg).eval()
    with torch.no_grad():
        model.classifier.bias[0] = 20.0
        b, i = TAGS.index("B-LOC"), TAGS.index("I-LOC")
        model.crf.start_transitions[b] = 100.0
        model.crf.transitions.fill_(-100.0)  # every pair but B-LOC I-LOC and I-LOC I-LOC
        model.crf.transitions[b, i] = model.crf.transitions[i, i] = 0.0
    texts = ["北京会见客人", "上海"]
    gold = [[3] + [4] * (len(t) - 1) for t in texts]
    feats = tokenize_tagged(tok, [list(t) for t in texts], gold, max_length=16).features
    got = evaluate(model, feats, TaggingCollator(tok.pad_token_id, words=True), 4, torch.device("cpu"),
                   TaggingMetrics(TAGS))
    assert got["f1"] == 1.0
    tagged = TokenClassifier(model, tok, device="cpu")(texts)
    assert [[(e.entity_group, e.word) for e in t.entities] for t in tagged] == [[("LOC", t)] for t in texts]
    # the score is the CRF's marginal (near 1: the one allowed path has all the weight), not the softmax of
    # the classifier's logits (near e^-20 for B-LOC and I-LOC)
    assert all(e.score > 0.99 for t in tagged for e in t.entities)


def test_train_with_crf_then_predict_eval_gives_training_s_numbers(tmp_path):
    """train.py --task tag --crf writes "crf": true and the learned scores; predict.py --eval on the same
    file decodes as training's evaluation did (fp32 both, so the same logits): the same F1."""
    from conftest import PREDICT, TRAIN, call
    from test_tag_task import NER, VOCAB, write_conll

    train, out = tmp_path / "train.conll", tmp_path / "ner"
    write_conll(train, NER)
    r = call(TRAIN, "--task", "tag", "--crf", "--config", "tiny", "--vocab", VOCAB, "--train", str(train),
             "--eval", str(train), "--eval-every", "epoch", "--epochs", "3", "--lr", "3e-3", "--precision", "fp32",
             "--output", str(out), "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "CRF layer" in r.stdout
    assert json.loads((out / "config.json").read_text())[CRF_KEY] is True
    assert "with a CRF layer" in (out / "README.md").read_text()  # the model card says so
    model = BertForTokenClassification.from_pretrained(out)
    assert model.crf is not None and model.crf.transitions.abs().max() > 0  # trained, not left at zero
    final = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]["summary"]["eval"]
    r = call(PREDICT, "--model", str(out), "--eval", str(train), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # fine-tuning that tagger further, without --crf: it keeps its CRF, and the start-up line says so
    r2 = call(TRAIN, "--task", "tag", "--model", str(out), "--train", str(train), "--epochs", "1",
              "--precision", "fp32", "--output", str(tmp_path / "more"), "--no-progress", cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr
    assert "CRF layer" in r2.stdout and json.loads((tmp_path / "more" / "config.json").read_text())[CRF_KEY] is True
    assert 0 < final["f1"] < 1  # (0.67 here): a score a decoding difference could move
    assert json.loads(r.stdout)["f1"] == pytest.approx(final["f1"], abs=1e-12)


def test_a_batch_without_labels_gives_zero_loss_with_a_gradient_for_every_parameter():
    """0, not NaN, and every CRF score gets a (zero) gradient, as data-parallel training needs from every rank."""
    model = BertForTokenClassification(BertConfig(**TINY, id2label=dict(enumerate(TAGS)), extra={CRF_KEY: True}))
    ids, mask = ids_batch()
    out = model(ids, mask, labels=torch.full_like(ids, -100))
    out.loss.backward()
    assert float(out.loss.detach()) == 0.0 and int(out.n_targets) == 0
    assert all(p.grad is not None and not p.grad.any() for p in model.crf.parameters())
