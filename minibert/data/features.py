"""Features: texts and examples -> token ids, one dict of small numpy arrays per sequence.

A feature holds "input_ids" (int32), "token_type_ids" (int8), "word_ids" (int32, -1 at [CLS]/[SEP])
and, for classification, "label"; packed rows (pack_features) add "sequence_ids". A list of
features is a dataset.

Whole-word masking
    With whole_word_mask=True each line is split on whitespace and every piece of one
    whitespace-separated word shares a word id, so MaskingCollator masks the word or none of it.
    English needs nothing special. Chinese has no spaces, so segment it first and write the words
    separated by spaces, as in the People's Daily 1998 corpus:
        诸葛 亮 是 丞相
    BERT still splits every CJK character into its own token (诸 葛 亮 ...), but "诸葛" is masked as
    one unit. Any segmenter works (jieba, pkuseg, LAC); unsegmented lines would be one "word" each,
    which load_mlm_features rejects.

Progress
    tokenize_texts (and load_mlm_features) show a bar on stderr with progress=True when there are
    more than PROGRESS_MIN_TEXTS texts; fewer take well under a second.

Imports no torch; the tokenizer is passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from .readers import DataError, Example, read_texts

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer


def _feature(enc) -> dict[str, np.ndarray]:
    # Numpy arrays, not lists: a 300k-line corpus as Python int lists would take gigabytes.
    # np.array turns None into nan for a float dtype, which avoids a Python loop per token.
    words = np.array(enc.word_ids, dtype=np.float64)
    return {
        "input_ids": np.array(enc.ids, dtype=np.int32),
        "token_type_ids": np.array(enc.token_type_ids, dtype=np.int8),
        "word_ids": np.nan_to_num(words, nan=-1).astype(np.int32),
    }


PROGRESS_MIN_TEXTS = 10_000  # tokenize_texts shows a progress bar above this many texts


def tokenize_texts(tokenizer: Tokenizer, texts: Sequence[str], max_length: int | None = None,
                   whole_word_mask: bool = False, chunk_size: int = 4096,
                   progress: bool = False) -> list[dict[str, np.ndarray]]:
    """One feature per text, truncated to max_length. whole_word_mask: words are the whitespace-split
    words of the text (see the module docstring), not the tokenizer's own word boundaries.
    progress: a bar on stderr when there are more than PROGRESS_MIN_TEXTS texts."""
    features = []
    bar = tqdm(total=len(texts), desc="tokenizing", unit="texts", leave=False, dynamic_ncols=True,
               disable=not progress or len(texts) <= PROGRESS_MIN_TEXTS)
    # encode_batch runs on all cores; chunks keep only a few thousand Encoding objects alive at once.
    for start in range(0, len(texts), chunk_size):
        chunk = texts[start : start + chunk_size]
        if whole_word_mask:
            chunk = [t.split() for t in chunk]
        features += map(_feature, tokenizer.encode_batch(chunk, max_length=max_length,
                                                         is_pretokenized=whole_word_mask))
        bar.update(len(chunk))
    bar.close()
    return features


def group_texts(features: Sequence[dict], max_length: int, cls_token_id: int,
                sep_token_id: int) -> list[dict[str, np.ndarray]]:
    """Concatenate the features' tokens (their [CLS]/[SEP] dropped) and cut [CLS] block [SEP] pieces of
    max_length tokens, for pre-training on a plain corpus without wasting the padding of short lines.
    Every block is full except perhaps the last. Word ids are renumbered so words of different lines
    stay distinct; a word cut by a block boundary becomes two words."""
    if max_length < 3:
        raise ValueError(f"max_length={max_length} leaves no room for text next to [CLS]/[SEP]; use at least 3")
    ids, words, offset = [], [], 0
    for f in features:
        w = np.asarray(f["word_ids"])
        content = w >= 0
        ids.append(np.asarray(f["input_ids"])[content])
        words.append(w[content] + offset)
        if content.any():
            offset = int(words[-1][-1]) + 1
    all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int32)
    all_words = np.concatenate(words) if words else np.zeros(0, np.int32)
    n = max_length - 2
    blocks = []
    for s in range(0, len(all_ids), n):
        block_words = all_words[s : s + n] - all_words[s]
        blocks.append({
            "input_ids": np.concatenate([[cls_token_id], all_ids[s : s + n], [sep_token_id]]).astype(np.int32),
            "token_type_ids": np.zeros(len(block_words) + 2, dtype=np.int8),
            "word_ids": np.concatenate([[-1], block_words, [-1]]).astype(np.int32),
        })
    return blocks


def pack_features(features: Sequence[dict], max_length: int) -> list[dict[str, np.ndarray]]:
    """Pack several short sequences into each row of at most max_length tokens, for training with
    BertForMaskedLM(..., sequence_ids=...) and PackingCollator: less of every batch is padding.

    Each row concatenates its sequences, each keeping its own [CLS] ... [SEP], and adds "sequence_ids"
    (1, 2, ... for the row's first, second, ... sequence). Word ids are offset so words of different
    sequences stay distinct for whole-word masking. Best-fit decreasing over the whole dataset: the
    longest sequence first, each into the fullest row that still has room, or a new row. Packing the
    dataset once fills rows better than packing within a batch, and the batch size stays a row count.
    """
    lengths = [len(f["input_ids"]) for f in features]
    if lengths and max(lengths) > max_length:
        i = lengths.index(max(lengths))
        raise ValueError(f"feature {i} has {lengths[i]} tokens, more than max_length={max_length}; "
                         "tokenize with the same max_length")
    rows: list[list[int]] = []  # feature indices per row
    # Rows by the room they have left, so the best fit is found in O(max_length), not O(rows).
    by_room: list[list[int]] = [[] for _ in range(max_length + 1)]
    for i in sorted(range(len(features)), key=lambda i: -lengths[i]):
        room = next((r for r in range(lengths[i], max_length + 1) if by_room[r]), None)
        if room is None:
            row, room = len(rows), max_length
            rows.append([])
        else:
            row = by_room[room].pop()
        rows[row].append(i)
        by_room[room - lengths[i]].append(row)

    has_types = all("token_type_ids" in f for f in features)
    has_words = all("word_ids" in f for f in features)
    packed = []
    for row in rows:
        parts = [features[i] for i in row]
        sizes = [lengths[i] for i in row]
        out = {
            "input_ids": np.concatenate([f["input_ids"] for f in parts]).astype(np.int32),
            "sequence_ids": np.repeat(np.arange(1, len(parts) + 1), sizes).astype(np.int32),
        }
        if has_types:
            out["token_type_ids"] = np.concatenate([f["token_type_ids"] for f in parts]).astype(np.int8)
        if has_words:
            words, offset = [], 0
            for f in parts:
                w = np.asarray(f["word_ids"])
                words.append(np.where(w >= 0, w + offset, -1))  # -1 ([CLS]/[SEP]) stays -1
                offset += int(w.max()) + 1 if len(w) else 0
            out["word_ids"] = np.concatenate(words).astype(np.int32)
        packed.append(out)
    return packed


def load_mlm_features(path: str | Path, tokenizer: Tokenizer, max_length: int, whole_word_mask: bool = False,
                      group: bool = False, text_column: str = "text",
                      progress: bool = False) -> list[dict[str, np.ndarray]]:
    """read_texts + tokenize_texts (+ group_texts when group=True): the MLM dataset of a file.
    progress: a bar while tokenizing a file of many texts (see tokenize_texts)."""
    texts = read_texts(path, text_column)
    if whole_word_mask and not any(len(t.split()) > 1 for t in texts):
        raise DataError(f"{path}: whole-word masking takes words from spaces, but no line has two words; "
                        "segment the text first (e.g. '诸葛 亮 是 丞相') or turn whole-word masking off")
    if group:
        features = tokenize_texts(tokenizer, texts, None, whole_word_mask, progress=progress)
        return group_texts(features, max_length, tokenizer.cls_token_id, tokenizer.sep_token_id)
    return tokenize_texts(tokenizer, texts, max_length, whole_word_mask, progress=progress)


TRUNCATIONS = ("head", "head+tail")
TRUNCATION_KEY = "minibert_truncation"  # in config.json when a classifier was trained with head+tail


def head_tail(feature: dict[str, np.ndarray], max_length: int) -> dict[str, np.ndarray]:
    """A single-text feature longer than max_length cut to [CLS], its first quarter of text tokens,
    its last three quarters, [SEP]: for reviews and articles the end often says the most (Sun et al.
    2019, "How to Fine-Tune BERT for Text Classification?", found head+tail best on long texts)."""
    n = len(feature["input_ids"])
    if n <= max_length:
        return feature
    head = (max_length - 2) // 4
    tail = max_length - 2 - head
    keep = np.r_[0:1 + head, n - 1 - tail:n]
    return {k: v[keep] for k, v in feature.items()}


def encode_examples(tokenizer: Tokenizer, texts: Sequence[str], pairs: Sequence[str | None] | None,
                    max_length: int | None, truncation: str = "head") -> list[dict[str, np.ndarray]]:
    """Classification inputs: each text (and its pair) as a feature of at most max_length tokens.
    truncation "head" keeps the start (pairs: the longer side loses tokens first); "head+tail" keeps
    the start and the end of single texts (see head_tail)."""
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation {truncation!r}: use one of {', '.join(TRUNCATIONS)}")
    has_pairs = pairs is not None and any(p is not None for p in pairs)
    if truncation == "head" or has_pairs or max_length is None:
        return [_feature(enc) for enc in tokenizer.encode_batch(texts, pairs if has_pairs else None, max_length)]
    return [head_tail(_feature(enc), max_length) for enc in tokenizer.encode_batch(texts)]


def tokenize_examples(tokenizer: Tokenizer, examples: Sequence[Example],
                      labels: Sequence[int | float | list[float]] | None, max_length: int | None,
                      truncation: str = "head") -> list[dict]:
    """Classification features (see encode_examples), plus "label" if labels are given: a class id, a
    regression value, or a multi-hot float32 array (num_labels,)."""
    features = encode_examples(tokenizer, [e.text for e in examples], [e.text_pair for e in examples], max_length,
                               truncation)
    if labels is not None:
        for f, label in zip(features, labels, strict=True):
            f["label"] = np.asarray(label, dtype=np.float32) if isinstance(label, list) else label
    return features
