"""Collators: a list of features -> a batch of int64 tensors (B, T) for the model.

    MaskingCollator         masked LM: 80/10/10 replacement of the chosen tokens, whole words if asked
    PackingCollator         masked LM over packed rows (pack_features), adding sequence_ids
    ClassificationCollator  padded texts and their labels

All of them pad with padding.pad_batch, which Tokenizer.pad uses too.

Determinism
    MaskingCollator owns a torch.Generator seeded from (seed, epoch, rank, DataLoader worker), created
    lazily inside the process that calls it, so every worker and every rank draws its own reproducible
    stream. Call set_epoch(epoch) each epoch (it reaches workers because the DataLoader re-creates them
    each epoch unless persistent_workers=True, in which case each worker's stream just continues).
    state_dict()/load_state_dict() carry the generator of the calling process for exact resumption
    (exact mid-epoch only with num_workers=0; at epoch boundaries always).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import get_worker_info

from .padding import pad_batch

META_PREFIX = "meta_"  # batch keys for the metrics that the model is not called with

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer


def mix_seed(*numbers: int) -> int:
    """One 64-bit seed from several non-negative ints; SeedSequence hashes them so that nearby tuples
    like (seed=1, worker=0) and (seed=0, worker=1) give unrelated streams, unlike seed + worker."""
    a, b = np.random.SeedSequence(list(numbers)).generate_state(2, dtype=np.uint32)
    return int(a) << 32 | int(b)


class MaskingCollator:
    """MLM batches: pad, choose mlm_probability of the maskable tokens (whole words if asked), replace
    mask_prob of the chosen with [MASK], random_prob with a random ordinary token, keep the rest.

    Returns int64 tensors (B, T): input_ids, attention_mask, token_type_ids, labels (-100 = no loss).
    """

    def __init__(self, tokenizer: Tokenizer, mlm_probability: float = 0.15, mask_prob: float = 0.8,
                 random_prob: float = 0.1, whole_word_mask: bool = False, pad_to_multiple_of: int | None = None,
                 seed: int = 0, rank: int = 0) -> None:
        if not 0 < mlm_probability <= 1:
            raise ValueError(f"mlm_probability must be in (0, 1], got {mlm_probability}")
        for name, p in (("mask_prob", mask_prob), ("random_prob", random_prob)):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if mask_prob + random_prob > 1:
            raise ValueError(f"mask_prob + random_prob must be <= 1 (the rest stay unchanged), got "
                             f"{mask_prob} + {random_prob} = {mask_prob + random_prob}")
        if seed < 0 or rank < 0:
            raise ValueError(f"seed and rank must be >= 0, got seed={seed}, rank={rank}")
        self.mlm_probability, self.mask_prob, self.random_prob = mlm_probability, mask_prob, random_prob
        self.whole_word_mask = whole_word_mask
        self.pad_to_multiple_of = pad_to_multiple_of
        self.seed, self.rank, self.epoch = seed, rank, 0
        self.pad_token_id, self.mask_token_id = tokenizer.pad_token_id, tokenizer.mask_token_id
        self.special_ids = torch.tensor(sorted(tokenizer.all_special_ids))
        # Replacements come from ordinary tokens only: never a special, nor "[unused12]"-style placeholders
        # whose embeddings were never trained.
        self.random_ids = torch.tensor(sorted(
            i for t, i in tokenizer.get_vocab().items()
            if i not in tokenizer.all_special_ids and not (len(t) > 2 and t[0] == "[" and t[-1] == "]")
        ))
        self._generator: torch.Generator | None = None
        self._owner = -1  # which process slot seeded _generator (0 = main process, k + 1 = worker k)

    # ---------------------------------------------------------------- randomness

    def _rng(self) -> torch.Generator:
        info = get_worker_info()
        slot = 0 if info is None else info.id + 1
        # A worker inherits the main process's generator when it is forked; re-seed so workers differ.
        if self._generator is None or self._owner != slot:
            self._generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, self.rank, slot))
            self._owner = slot
        return self._generator

    def set_epoch(self, epoch: int) -> None:
        """Start the epoch's own stream, so epoch e is reproducible without replaying epochs 0..e-1."""
        self.epoch = epoch
        self._generator = None

    def state_dict(self) -> dict:
        return {"seed": self.seed, "rank": self.rank, "epoch": self.epoch, "owner": self._owner,
                "generator": None if self._generator is None else self._generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.rank, self.epoch, self._owner = state["seed"], state["rank"], state["epoch"], state["owner"]
        self._generator = None
        if state["generator"] is not None:
            self._generator = torch.Generator()
            self._generator.set_state(state["generator"])

    # ---------------------------------------------------------------- masking

    def _select(self, maskable: torch.Tensor, word_ids: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """(B, T) bool: whole words chosen at random until mlm_probability of each row's maskable tokens.

        Token-level masking is the case where every token is its own word. Vectorised over the batch:
        each (row, word) gets a random rank; words are taken in that order while they fit the row's
        budget p * n, and the word that straddles the budget is taken with probability
        (budget - tokens before it) / its size, so the expected count is exactly p * n.
        """
        B, T = maskable.shape
        rows = torch.arange(B).unsqueeze(1).expand(B, T)[maskable]  # (N,) row of each maskable token
        words = word_ids[maskable]  # (N,)
        stride = int(words.max()) + 1 if len(words) else 1
        # unique() numbers the batch's words 0..W-1 sorted by (row, word); inverse maps token -> word.
        keys, token_word = torch.unique(rows * stride + words, return_inverse=True)
        word_row = keys // stride  # (W,)
        size = torch.bincount(token_word, minlength=len(keys))  # (W,) tokens per word
        n_row = maskable.sum(1)  # (B,)
        budget = self.mlm_probability * n_row.double()  # (B,)
        # Adding a uniform [0, 1) to the row index shuffles words within each row and keeps rows apart.
        order = torch.argsort(word_row + torch.rand(len(keys), generator=g, dtype=torch.float64))
        size_o, row_o = size[order], word_row[order]
        row_start = torch.cumsum(n_row, 0) - n_row  # (B,) maskable tokens in earlier rows
        before = torch.cumsum(size_o, 0) - size_o - row_start[row_o]  # (W,) row tokens ranked ahead of the word
        take = torch.rand(len(keys), generator=g, dtype=torch.float64) * size_o < budget[row_o] - before
        # Every row with a maskable token takes at least its first word, so no batch has an empty loss.
        took = torch.bincount(row_o[take], minlength=B)
        take |= (before == 0) & (took[row_o] == 0)
        taken = torch.empty_like(take)
        taken[order] = take
        selected = torch.zeros(B, T, dtype=torch.bool)
        selected[maskable] = taken[token_word]
        return selected

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        keys = ("word_ids",) if self.whole_word_mask else ()
        if keys and any("word_ids" not in f for f in features):
            raise ValueError("whole_word_mask needs features with 'word_ids'; tokenize with whole_word_mask=True")
        batch = pad_batch(features, self.pad_token_id, self.pad_to_multiple_of, keys)
        input_ids = batch["input_ids"]
        g = self._rng()
        maskable = batch["attention_mask"].bool() & ~torch.isin(input_ids, self.special_ids)
        if self.whole_word_mask:
            word_ids = batch.pop("word_ids")
            if (word_ids[maskable] < 0).any():
                raise ValueError("a maskable token has word id -1; word_ids must be >= 0 for all but [CLS]/[SEP]")
        else:
            word_ids = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        selected = self._select(maskable, word_ids, g)
        batch["labels"] = torch.where(selected, input_ids, -100)
        u = torch.rand(input_ids.shape, generator=g)
        to_mask = selected & (u < self.mask_prob)
        to_random = selected & (u >= self.mask_prob) & (u < self.mask_prob + self.random_prob)
        random_ids = self.random_ids[torch.randint(len(self.random_ids), input_ids.shape, generator=g)]
        input_ids = torch.where(to_mask, self.mask_token_id, input_ids)
        batch["input_ids"] = torch.where(to_random, random_ids, input_ids)
        return batch


class PackingCollator:
    """MLM batches of packed rows (from pack_features): the wrapped MaskingCollator's batch plus
    sequence_ids (B, T) long, 0 at padding, to pass to the model with the rest.

    The masking is the wrapped collator's own: the [CLS]/[SEP] inside a row are special tokens, so they
    are never masked, and pack_features' word ids keep every whole word inside one sequence. Its budget
    (mlm_probability of the maskable tokens) applies per row instead of per sequence; the expected
    number of masked tokens is the same.
    """

    def __init__(self, collator: MaskingCollator) -> None:
        self.collator = collator

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        if any("sequence_ids" not in f for f in features):
            raise ValueError("PackingCollator needs packed features with 'sequence_ids'; pack them with "
                             "pack_features(features, max_length) first")
        batch = self.collator(features)
        sequence_ids = torch.zeros_like(batch["input_ids"])  # (B, T), 0 = padding
        for i, f in enumerate(features):
            sequence_ids[i, : len(f["sequence_ids"])] = torch.as_tensor(f["sequence_ids"])
        batch["sequence_ids"] = sequence_ids
        return batch

    # The trainer seeds, saves and restores the masking stream through these.
    def set_epoch(self, epoch: int) -> None:
        self.collator.set_epoch(epoch)

    def state_dict(self) -> dict:
        return self.collator.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.collator.load_state_dict(state)


class ClassificationCollator:
    """Pad features to the batch's longest; "label" becomes labels: int64 classes (B,), float32 if any
    label is a float (regression), float32 (B, num_labels) for multi-hot rows (multi-label). Features
    without "label" (prediction) give no labels tensor."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = pad_batch(features, self.pad_token_id, self.pad_to_multiple_of)
        if "label" in features[0]:
            labels = [f["label"] for f in features]
            if isinstance(labels[0], (list, np.ndarray)):
                batch["labels"] = torch.tensor(np.asarray(labels, dtype=np.float32))  # (B, num_labels)
                return batch
            regression = any(isinstance(x, (float, np.floating)) for x in labels)
            batch["labels"] = torch.tensor(labels, dtype=torch.float32 if regression else torch.long)
        return batch


class TaggingCollator:
    """Pad token-classification windows (data.tag_features): labels (B, T) padded with -100, which the loss
    ignores. With `words`, for evaluation, also each token's word in its sentence, the sentence of each row
    and where each word is read (meta_word_ids, meta_sentence, meta_prediction_mask: -1 / 0 on padding),
    from which the metrics put windows back together into sentences; the model never sees meta_ keys."""

    def __init__(self, pad_token_id: int, words: bool = False, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.words = words
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        keys = ("labels", "word_ids", "prediction_mask") if "labels" in features[0] else ("word_ids", "prediction_mask")
        batch = pad_batch(features, self.pad_token_id, self.pad_to_multiple_of, keys=keys)
        if "labels" in batch:
            batch["labels"] = batch["labels"].masked_fill(batch["attention_mask"] == 0, -100)
        word_ids, first = batch.pop("word_ids"), batch.pop("prediction_mask")
        if self.words:
            batch[META_PREFIX + "word_ids"] = word_ids
            batch[META_PREFIX + "prediction_mask"] = first.clamp(min=0)
            batch[META_PREFIX + "sentence"] = torch.tensor([int(f["sentence"]) for f in features])
        return batch
