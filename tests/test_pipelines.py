"""FillMask's scores checked against direct computations on a tiny random model.

Word targets are ranked by pseudo-log-likelihood (PLL): here computed by hand, one masked copy of
the filled text per target token, the full (B, T, V) logits, log-softmax, sum. The beam fill is
checked against a greedy fill written out by hand (beam 1) and against every fill of a 5-token
vocabulary scored by its chain log-probability (a beam as wide as all the fills).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import SPECIALS, tiny_config, vocab_tokenizer

from minibert import BertForMaskedLM, FillMask

WORDS = ["甲", "乙", "丙", "丁", "戊"]  # the 5 tokens a fill may use; the specials are never filled in


@pytest.fixture(scope="module")
def fill(tmp_path_factory) -> FillMask:
    tokenizer = vocab_tokenizer(tmp_path_factory.mktemp("vocab"), SPECIALS + WORDS)
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_config(len(SPECIALS + WORDS), dropout=0.0))
    with torch.no_grad():  # weights far larger than BERT's init: distinct scores, no near-ties to flip
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.5)
    return FillMask(model, tokenizer, device="cpu")


def log_probs(fill: FillMask, ids: list[int]) -> torch.Tensor:
    """(T, V) log-probabilities of the whole sequence, the full logits of one unpadded row."""
    with torch.no_grad():
        return fill.model(torch.tensor([ids])).logits[0].float().log_softmax(-1)


def ids_of(fill: FillMask, text: str) -> list[int]:
    return fill.tokenizer.encode(text).ids


def test_word_targets_are_ranked_by_pseudo_log_likelihood(fill):
    text, targets = "甲乙[MASK][MASK][MASK]丁", ["丙丁戊", "戊戊甲", "乙丙丙", "丁甲乙"]
    result = fill(text, targets=targets)[0]
    ids = ids_of(fill, text)
    positions = [i for i, t in enumerate(ids) if t == fill.tokenizer.mask_token_id]
    expected = {}
    for target in targets:
        tokens = fill.tokenizer.convert_tokens_to_ids(list(target))
        filled = list(ids)
        for p, t in zip(positions, tokens):
            filled[p] = t
        pll = 0.0
        for p, t in zip(positions, tokens):  # mask one position of the word, score its token there
            masked = filled[:p] + [fill.tokenizer.mask_token_id] + filled[p + 1:]
            pll += float(log_probs(fill, masked)[p, t])
        expected[target] = pll
    assert [r.target for r in result.ranking] == sorted(targets, key=lambda t: -expected[t])
    for r in result.ranking:
        assert r.tokens == list(r.target)
        assert r.score == pytest.approx(expected[r.target], abs=1e-4)
    assert result.targets == []  # per-mask probabilities are for single-token targets


def test_a_single_token_target_in_a_single_mask_scores_its_log_probability(fill):
    result = fill("甲[MASK]乙", targets=["丙", "丁"])[0]
    lp = log_probs(fill, ids_of(fill, "甲[MASK]乙"))[2]
    for r in result.ranking:
        assert r.score == pytest.approx(float(lp[fill.tokenizer.convert_tokens_to_ids(r.target)]), abs=1e-5)
        assert r.score == pytest.approx(float(torch.tensor(result.targets[0][r.target]).log()), abs=1e-5)


@pytest.mark.parametrize("text, targets, expected", [
    ("甲[MASK][MASK]", ["丙丁戊"], ["'丙丁戊' is 3 tokens", "2 consecutive [MASK]s"]),
    ("甲[MASK][MASK][MASK]", ["丙丁戊", "丙丁"], ["'丙丁' is 2 tokens", "3 consecutive"]),
    ("[MASK]甲[MASK]", ["丙丁"], ["text 1", "apart", "consecutive"]),
])
def test_a_word_target_must_fit_the_masks(fill, text, targets, expected):
    with pytest.raises(ValueError) as e:
        fill(text, targets=targets)
    for part in expected:
        assert part in str(e.value), str(e.value)


def chain_score(fill: FillMask, ids: list[int], positions: list[int], tokens: tuple[int, ...]) -> float:
    """log p(t1 | all masked) + log p(t2 | t1, rest masked) + ...: the score of a left-to-right fill."""
    row, score = list(ids), 0.0
    for p, t in zip(positions, tokens):
        score += float(log_probs(fill, row)[p, t])
        row[p] = t
    return score


def test_beam_one_is_the_greedy_fill(fill):
    text = "甲[MASK][MASK]乙[MASK]"
    ids = ids_of(fill, text)
    positions = [i for i, t in enumerate(ids) if t == fill.tokenizer.mask_token_id]
    allowed = fill.tokenizer.convert_tokens_to_ids(WORDS)
    row, chosen = list(ids), []
    for p in positions:  # greedy by hand: the best word at the next mask, the later ones still masked
        lp = log_probs(fill, row)[p]
        best = max(allowed, key=lambda t: float(lp[t]))
        chosen.append(best)
        row[p] = best
    result = fill(text, beam=1)[0]
    expected = text
    for t in chosen:
        expected = expected.replace("[MASK]", fill.tokenizer.convert_ids_to_tokens(t), 1)
    assert result.filled == expected
    assert result.fill_score == pytest.approx(chain_score(fill, ids, positions, tuple(chosen)), abs=1e-4)
    assert fill(text)[0].filled == expected  # greedy is the default


def test_a_beam_as_wide_as_every_fill_finds_the_best_chain_score(fill):
    text = "[MASK][MASK]甲[MASK]"
    ids = ids_of(fill, text)
    positions = [i for i, t in enumerate(ids) if t == fill.tokenizer.mask_token_id]
    allowed = fill.tokenizer.convert_tokens_to_ids(WORDS)
    scores = {fill_: chain_score(fill, ids, positions, fill_) for fill_ in itertools.product(allowed, repeat=3)}
    ranked = sorted(scores, key=scores.get, reverse=True)
    assert scores[ranked[0]] - scores[ranked[1]] > 1e-3, "a near-tie: the test would not show the best"
    result = fill(text, beam=len(allowed) ** 3)[0]
    expected = text
    for t in ranked[0]:
        expected = expected.replace("[MASK]", fill.tokenizer.convert_ids_to_tokens(t), 1)
    assert result.filled == expected
    assert result.fill_score == pytest.approx(scores[ranked[0]], abs=1e-4)
    greedy = fill(text, beam=1)[0]
    assert greedy.fill_score <= result.fill_score + 1e-6
