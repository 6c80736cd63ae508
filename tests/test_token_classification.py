"""BertForTokenClassification: the loss, the dropout it picks, and parity with transformers' folders.

Tolerances of the parity tests: fp32 logits and losses of order 1, computed by the same operations in a
different order (our fused QKV projection and oneDNN linears against transformers' three projections
and BLAS), differ by a few units in the last place; atol 1e-5 with rtol 1.3e-6 (torch's float32
default, about ten ulps) is that, and far below any real mismatch (a wrong key or transpose moves the
logits by ~1e-2 or more).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_SHAPE, ids_batch

from minibert import BertConfig, BertForMaskedLM, BertForTokenClassification

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TINY = dict(**TINY_SHAPE, vocab_size=90)
ATOL, RTOL = 1e-5, 1.3e-6


def _config(**overrides) -> BertConfig:
    return BertConfig(**TINY, id2label=dict(enumerate(TAGS)), **overrides)


def _labels(mask: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """(B, T) random tags, -100 at [CLS] (column 0), the last real token (as [SEP]) and padding."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(TAGS), mask.shape, generator=g)
    labels[:, 0] = -100
    last = mask.sum(1) - 1
    labels[torch.arange(len(labels)), last] = -100
    return labels.masked_fill(mask == 0, -100)


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """A random init has zero biases and unit LayerNorms: move every parameter so a swapped or dropped
    key cannot pass unnoticed."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_loss_is_the_mean_over_tagged_tokens():
    torch.manual_seed(0)
    model = _perturbed(BertForTokenClassification(_config()))
    ids, mask = ids_batch()
    labels = _labels(mask)
    with torch.no_grad():
        out = model(ids, mask, labels=labels)
    assert out.logits.shape == (*ids.shape, len(TAGS))
    keep = labels != -100
    expected = F.cross_entropy(out.logits[keep], labels[keep])  # (N, num_labels), (N,): the mean over N
    torch.testing.assert_close(out.loss, expected)
    assert int(out.n_targets) == int(keep.sum())
    assert model(ids, mask).loss is None


def test_no_tagged_token_gives_zero_loss_not_nan():
    model = BertForTokenClassification(_config())
    ids, mask = ids_batch()
    with torch.no_grad():
        out = model(ids, mask, labels=torch.full_like(ids, -100))
    assert float(out.loss) == 0.0 and int(out.n_targets) == 0


def test_dropout_is_classifier_dropout_when_set_else_hidden_dropout():
    assert BertForTokenClassification(_config(hidden_dropout_prob=0.2)).drop.p == 0.2
    assert BertForTokenClassification(_config(hidden_dropout_prob=0.2, classifier_dropout=0.3)).drop.p == 0.3


def test_encoder_has_no_pooler():
    model = BertForTokenClassification(_config())
    assert model.bert.pooler is None
    assert not any("pooler" in k for k in model.state_dict())


def test_minibert_save_transformers_load_same_logits_and_loss(tmp_path):
    transformers = pytest.importorskip("transformers")
    ours = _perturbed(BertForTokenClassification(_config()))
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == ["BertForTokenClassification"]
    assert saved["id2label"] == {str(i): t for i, t in enumerate(TAGS)}
    assert saved["label2id"] == {t: i for i, t in enumerate(TAGS)}
    ref, info = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert type(ref).__name__ == "BertForTokenClassification"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert ref.config.id2label == dict(enumerate(TAGS))
    ref.eval()
    ids, mask = ids_batch()
    labels = _labels(mask)
    with torch.no_grad():
        r = ref(input_ids=ids, attention_mask=mask, labels=labels)
        o = ours(ids, mask, labels=labels)
    torch.testing.assert_close(o.logits, r.logits, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(o.loss, r.loss, atol=ATOL, rtol=RTOL)


def test_transformers_save_minibert_load_and_back(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_config = transformers.BertConfig(**TINY, id2label=dict(enumerate(TAGS)),
                                        label2id={t: i for i, t in enumerate(TAGS)})
    ref = _perturbed(transformers.BertForTokenClassification(hf_config))
    ref.save_pretrained(tmp_path / "hf")
    ours = BertForTokenClassification.from_pretrained(tmp_path / "hf").eval()  # a warning would be a lost key
    assert ours.config.id2label == dict(enumerate(TAGS)) and ours.config.num_labels == len(TAGS)
    ours.save_pretrained(tmp_path / "again")
    back = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path / "again").eval()
    ids, mask = ids_batch()
    labels = _labels(mask)
    with torch.no_grad():
        a = ref(input_ids=ids, attention_mask=mask, labels=labels)
        b = ours(ids, mask, labels=labels)
        c = back(input_ids=ids, attention_mask=mask, labels=labels)
    for out in (b, c):
        torch.testing.assert_close(out.logits, a.logits, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(out.loss, a.loss, atol=ATOL, rtol=RTOL)


def test_masked_lm_folder_loads_with_a_new_classifier(tmp_path):
    torch.manual_seed(0)
    mlm = BertForMaskedLM(BertConfig(**TINY)).eval()
    mlm.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match=r"newly initialised for this task: classifier\.weight, classifier\.bias$"):
        model = BertForTokenClassification.from_pretrained(tmp_path, id2label=dict(enumerate(TAGS)))
    assert model.classifier.out_features == len(TAGS)
    ids, mask = ids_batch()
    with torch.no_grad():
        torch.testing.assert_close(model.eval().bert(ids, mask), mlm.bert(ids, mask))
