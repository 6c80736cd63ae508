"""Packed rows (several sequences per row, block-diagonal attention) against the same sequences padded.

Every comparison runs the same tiny random model (fp32, dropout off) on one batch of mixed-length
sequences two ways: packed by pack_features + PackingCollator, and unpacked back into an ordinary
padded batch with the same masked tokens. Only the summation order differs (other matmul shapes, other
attention masks): values within 1e-5 of the largest entry compared (conftest.assert_close_fp32).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from conftest import CLS, PAD, SEP, SPECIALS, TINY_SHAPE, assert_close_fp32, tiny_config, vocab_tokenizer

from minibert import BertForMaskedLM, MaskedLM, MaskingCollator, Tokenizer, TrainConfig, Trainer
from minibert.data import PackingCollator, pack_features
from minibert.model import packed_mask_for_sdpa, packed_position_ids

VOCAB = SPECIALS + [f"w{i}" for i in range(115)]
MAX_LEN = TINY_SHAPE["max_position_embeddings"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    return vocab_tokenizer(tmp_path_factory.mktemp("vocab"), VOCAB)


def tiny_model(seed: int = 0) -> BertForMaskedLM:
    torch.manual_seed(seed)
    model = BertForMaskedLM(tiny_config(len(VOCAB), dropout=0.0))
    # Init leaves LayerNorms at identity and biases at zero; perturb every parameter so all of them
    # take part, the position table above all (a wrong position id must change the output).
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def features(lengths: list[int], seed: int = 0) -> list[dict]:
    """[CLS] a [SEP] (b [SEP]) with the given total lengths; every other one is a pair (types 0 / 1),
    words of one or two tokens."""
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(lengths):
        ids = rng.integers(len(SPECIALS), len(VOCAB), n)
        ids[0], ids[-1] = CLS, SEP
        types = np.zeros(n, dtype=np.int8)
        if i % 2 and n >= 5:
            ids[n // 2] = SEP
            types[n // 2 + 1:] = 1
        words = np.repeat(np.arange(n), 2)[:n].astype(np.int32)
        words[ids == SEP] = -1
        words[0] = -1
        out.append({"input_ids": ids.astype(np.int32), "token_type_ids": types, "word_ids": words})
    return out


LENGTHS = [3, 17, 9, 40, 5, 12, 28, 7, 21, 33, 4, 14]  # 193 tokens; padded to 40 that is 480 slots


def packed_batch(tok: Tokenizer, seed: int = 0, whole_word: bool = True) -> dict[str, torch.Tensor]:
    collate = PackingCollator(MaskingCollator(tok, whole_word_mask=whole_word, seed=seed))
    return collate(pack_features(features(LENGTHS, seed), MAX_LEN))


def unpack(batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[tuple[int, torch.Tensor]]]:
    """The packed batch's sequences as an ordinary padded batch (one row each, the same tokens and
    labels), and for each sequence the (row, columns) it occupies in the packed batch."""
    where = []
    for r, row in enumerate(batch["sequence_ids"]):
        for k in row.unique().tolist():
            if k > 0:
                where.append((r, (row == k).nonzero().squeeze(1)))
    N, T = len(where), max(len(cols) for _, cols in where)
    padded = {
        "input_ids": torch.full((N, T), PAD),
        "attention_mask": torch.zeros(N, T, dtype=torch.long),
        "token_type_ids": torch.zeros(N, T, dtype=torch.long),
        "labels": torch.full((N, T), -100),
    }
    for n, (r, cols) in enumerate(where):
        padded["attention_mask"][n, : len(cols)] = 1
        for key in ("input_ids", "token_type_ids", "labels"):
            padded[key][n, : len(cols)] = batch[key][r, cols]
    return padded, where


def test_positions_restart_per_sequence():
    seg = torch.tensor([[1, 1, 1, 2, 2, 3, 0, 0],
                        [1, 1, 1, 1, 1, 1, 1, 1],
                        [0, 0, 0, 0, 0, 0, 0, 0]])
    expected = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 1],
                             list(range(8)),
                             list(range(8))])
    torch.testing.assert_close(packed_position_ids(seg), expected, rtol=0, atol=0)
    mask = packed_mask_for_sdpa(seg)
    assert mask.shape == (3, 1, 8, 8) and mask.dtype == torch.bool
    assert mask[0, 0, 3].tolist() == [False, False, False, True, True, False, False, False]
    assert mask.any(-1).all(), "every query row, padding included, must see some key"


def test_pack_features_best_fit_decreasing():
    feats = features([6, 5, 4, 3, 2])
    packed = pack_features(feats, 10)
    # Longest first, each into the fullest row with room: [6, 4], [5, 3, 2].
    assert [np.bincount(p["sequence_ids"])[1:].tolist() for p in packed] == [[6, 4], [5, 3, 2]]
    rows = pack_features(features(LENGTHS), MAX_LEN)
    assert all(len(p["input_ids"]) <= MAX_LEN for p in rows)
    assert len(rows) == 5  # 193 tokens need at least ceil(193 / 40) = 5 rows; 12 when padded
    # Every sequence comes out once, intact, with its token types.
    got = Counter()
    for p in rows:
        for k in range(1, p["sequence_ids"].max() + 1):
            s = p["sequence_ids"] == k
            got[(tuple(p["input_ids"][s]), tuple(p["token_type_ids"][s]))] += 1
    assert got == Counter((tuple(f["input_ids"]), tuple(f["token_type_ids"])) for f in features(LENGTHS))
    # Whole words never cross sequences: every word id belongs to one sequence.
    for p in rows:
        w = p["word_ids"]
        for word in np.unique(w[w >= 0]):
            assert len(np.unique(p["sequence_ids"][w == word])) == 1
        assert (w[p["input_ids"] == CLS] == -1).all()
    with pytest.raises(ValueError, match="more than max_length=10"):
        pack_features(features([11]), 10)


def test_packing_collator_batch(tok):
    batch = packed_batch(tok)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "sequence_ids"}
    assert all(v.dtype == torch.long and v.shape == batch["input_ids"].shape for v in batch.values())
    assert torch.equal(batch["sequence_ids"] > 0, batch["attention_mask"].bool())
    labelled = batch["labels"] != -100
    assert labelled.any()
    assert not torch.isin(batch["labels"][labelled], torch.tensor([PAD, CLS, SEP])).any()
    with pytest.raises(ValueError, match="pack_features"):
        PackingCollator(MaskingCollator(tok))(features([5]))


@pytest.mark.parametrize("whole_word", [True, False])
def test_packed_matches_padded(tok, whole_word):
    model = tiny_model().eval()
    packed = packed_batch(tok, seed=1, whole_word=whole_word)
    padded, where = unpack(packed)
    assert len(where) == len(LENGTHS) and padded["input_ids"].shape[0] > packed["input_ids"].shape[0]
    with torch.no_grad():
        h_packed = model.bert(packed["input_ids"], packed["attention_mask"], packed["token_type_ids"],
                              sequence_ids=packed["sequence_ids"])
        h_padded = model.bert(padded["input_ids"], padded["attention_mask"], padded["token_type_ids"])
        logits_packed = model(packed["input_ids"], sequence_ids=packed["sequence_ids"],
                              token_type_ids=packed["token_type_ids"]).logits
        logits_padded = model(padded["input_ids"], padded["attention_mask"], padded["token_type_ids"]).logits
    # Hidden states and logits up to |x| = 3.1, per sequence at most 2.4 fp32 ulps of the largest apart on
    # AMX and AVX2 kernels; 1e-5 of the largest is 84.
    for n, (r, cols) in enumerate(where):
        assert_close_fp32(h_packed[r, cols], h_padded[n, : len(cols)])
        assert_close_fp32(logits_packed[r, cols], logits_padded[n, : len(cols)])


def test_packed_loss_and_gradients_match_padded(tok):
    packed = packed_batch(tok, seed=2)
    padded, _ = unpack(packed)
    models = {"packed": tiny_model().train(), "padded": tiny_model().train()}
    out = {"packed": models["packed"](**packed), "padded": models["padded"](**padded)}
    assert int(out["packed"].n_targets) == int(out["padded"].n_targets) > 0
    # The loss (4.8) and each gradient at most 4.4 ulps of its largest entry apart (AMX and AVX2 kernels);
    # 1e-5 of the largest is 84.
    assert_close_fp32(out["packed"].loss, out["padded"].loss)
    for o in out.values():
        o.loss.backward()
    grads = {k: dict(m.named_parameters()) for k, m in models.items()}
    for name, p in grads["packed"].items():
        assert_close_fp32(p.grad, grads["padded"][name].grad, msg=name)


def test_no_nan_with_padding():
    """Rows mostly padding, one all padding: every output and gradient stays finite."""
    model = tiny_model().train()
    seg = torch.zeros(3, 16, dtype=torch.long)
    seg[0, :3], seg[0, 3:5] = 1, 2
    seg[1, :16] = 1
    ids = torch.where(seg > 0, torch.randint(5, len(VOCAB), seg.shape), PAD)
    labels = torch.where(seg > 0, ids, -100)
    out = model(ids, (seg > 0).long(), labels=labels, sequence_ids=seg)
    h = model.bert(ids, sequence_ids=seg)
    assert torch.isfinite(h).all() and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_trainer_takes_packed_batches(tok, tmp_path):
    """The trainer passes the collator's sequence_ids through to the model."""
    train = pack_features(features(LENGTHS), MAX_LEN)
    cfg = TrainConfig(output=str(tmp_path), max_steps=2, batch_size=2, device="cpu", precision="fp32",
                      progress=False, log_every=1)
    trainer = Trainer(tiny_model(), cfg, MaskedLM(pack=True), train, MaskedLM(pack=True).collator(tok),
                      log=lambda *_: None)
    summary = trainer.train()
    assert summary["steps"] == 2 and np.isfinite(summary["final_train_loss"])
