"""Tagged sentences -> windows of token ids with one label per word, and predictions back to words.

The words of a sentence are tokenized into pieces; the label goes on a word's first piece and -100 on the
rest, or on every piece with label_all_tokens (a B-X becoming I-X after the first piece), as transformers'
run_ner.py does. A sentence longer than max_length is read as overlapping windows (`plan_windows`) rather
than cut, and every piece is labelled in exactly one window, so nothing is lost or counted twice. Chinese:
with one character per token, a character is one piece of a Chinese WordPiece vocabulary, or [UNK], which
keeps the character's label.

Imports no torch; the tokenizer is passed in.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer


def plan_windows(piece_words: Sequence[int], size: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Windows over a sentence's pieces: (start, end, own_start, own_end) per window, piece offsets.

    piece_words: the word index of each piece. A window holds at most `size` pieces and shares about
    `stride` with the next; it ends at a word boundary when one lies in its second half, so a word is
    rarely cut. The own ranges partition 0..len(piece_words), each inside its window: a window labels
    and predicts only its own pieces, so an overlap is counted once. An overlap is shared at a word start
    near its middle, where both windows see the most context around the pieces they own."""
    n = len(piece_words)
    if not 0 <= stride < size:
        raise ValueError(f"stride={stride} with windows of {size} pieces: use 0 <= stride < {size}")
    if n <= size:
        return [(0, n, 0, n)]
    starts = [i for i in range(n) if i == 0 or piece_words[i] != piece_words[i - 1]]

    def word_start(at: int) -> int:  # the last word start at or before `at`
        return starts[bisect.bisect_right(starts, at) - 1]

    bounds: list[tuple[int, int]] = []
    s = 0
    while True:
        e = s + size
        if e >= n:
            bounds.append((s, n))
            break
        # End before the word the edge would cut, unless that wastes half the window; never before the
        # previous window's end, which keeps every own range (below) inside its window.
        cut = word_start(e)
        if cut > s + size // 2 and (not bounds or cut >= bounds[-1][1]):
            e = cut
        bounds.append((s, e))
        # The next window starts `stride` pieces back, at the start of that word: a word is whole in it.
        target = max(e - stride, s + 1)
        at_word = word_start(target)
        s = at_word if at_word > s else target
    windows = []
    own_start = 0
    for k, (s, e) in enumerate(bounds):
        if k + 1 == len(bounds):
            own_end = n
        else:
            next_start = bounds[k + 1][0]
            middle = (next_start + e) // 2
            at_word = word_start(middle)
            own_end = max(at_word if at_word >= next_start else middle, own_start)
        windows.append((s, e, own_start, own_end))
        own_start = own_end
    return windows


def continuation_ids(label2id: Mapping[str, int]) -> dict[int, int]:
    """label id -> the label of a word's later pieces under label_all_tokens: B-X -> I-X (BMES: B -> M),
    as run_ner.py's b_to_i_label; any other label stays itself."""
    out = {}
    for tag, i in label2id.items():
        later = "M" if tag == "B" else "I-" + tag[2:] if tag.startswith("B-") else tag
        out[i] = label2id.get(later, i)
    return out


def word_pieces(tokenizer: Tokenizer, sentences: Sequence[Sequence[str]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each sentence's piece ids (int32, without [CLS]/[SEP]) and the word index of each piece (int32).

    The same pieces as encoding each sentence with is_pretokenized, for a fraction of the work: the
    tokenizer normalizes and splits every given word on its own, so a word's pieces do not depend on its
    neighbours, and each distinct word is encoded once. Corpora repeat their words, one-character Chinese
    words above all: People's Daily's 1.7M characters are about 5,000 distinct ones."""
    distinct = list(dict.fromkeys(w for sentence in sentences for w in sentence))
    encodings = tokenizer.encode_batch([[w] for w in distinct], is_pretokenized=True)
    pieces = {w: enc.ids[1:-1] for w, enc in zip(distinct, encodings)}
    out = []
    for sentence in sentences:
        ids = [p for w in sentence for p in pieces[w]]
        words = [i for i, w in enumerate(sentence) for _ in pieces[w]]
        out.append((np.array(ids, dtype=np.int32), np.array(words, dtype=np.int32)))
    return out


@dataclass
class TaggedFeatures:
    features: list[dict[str, Any]]  # one per window, see tokenize_tagged
    split_sentences: int  # sentences longer than max_length, read as several overlapping windows
    unknown_pieces: int  # [UNK] pieces: characters or words missing from the vocabulary (they keep their label)
    empty_words: int  # words the tokenizer makes no piece of (control characters, lone accents): no label


def tokenize_tagged(tokenizer: Tokenizer, words: Sequence[Sequence[str]], labels: Sequence[Sequence[int]] | None = None,
                    *, max_length: int, stride: int | None = None, label_all_tokens: bool = False,
                    label2id: Mapping[str, int] | None = None) -> TaggedFeatures:
    """Windows of at most max_length tokens ([CLS] pieces [SEP]) over each sentence's words.

    Each feature holds numpy arrays (T,): "input_ids" (int32), "token_type_ids" (int8, zeros), "word_ids"
    (int32, the word of each piece in its sentence, -1 at [CLS]/[SEP]), "prediction_mask" (int8, 1 at the
    first piece of each word this window owns: where word_predictions reads a word's prediction), with
    labels "labels" (int32: the word's label id on its first piece, -100 on later pieces or, with
    label_all_tokens, continuation_ids' label; -100 on [CLS]/[SEP] and on pieces another window owns);
    and "sentence", the index of its sentence in `words`.

    labels: label ids per word (encode_tags). stride: pieces shared by consecutive windows of a long
    sentence (default: a quarter of the window). label2id: needed with label_all_tokens."""
    size = max_length - 2
    if size < 1:
        raise ValueError(f"max_length={max_length} leaves no room for text next to [CLS]/[SEP]; use at least 3")
    stride = size // 4 if stride is None else stride
    if not 0 <= stride < size:
        raise ValueError(f"stride={stride}: use 0 <= stride < max_length - 2 = {size}")
    if labels is not None and len(labels) != len(words):
        raise ValueError(f"{len(words)} sentences but {len(labels)} label lists; give one per sentence")
    later = None
    if label_all_tokens:
        if label2id is None:
            raise ValueError("label_all_tokens needs label2id, to label later pieces B-X as I-X")
        later = continuation_ids(label2id)
    cls, sep, unk = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id
    out = TaggedFeatures([], 0, 0, 0)
    for index, (sentence_words, (ids, piece_words)) in enumerate(zip(words, word_pieces(tokenizer, words))):
        n = len(ids)
        first = np.ones(n, dtype=bool)
        first[1:] = piece_words[1:] != piece_words[:-1]
        word_labels = None
        if labels is not None:
            word_labels = np.asarray(labels[index], dtype=np.int32)
            if len(word_labels) != len(sentence_words):
                raise ValueError(f"sentence {index}: {len(sentence_words)} words but {len(word_labels)} labels")
            piece_labels = word_labels[piece_words]
            if later is not None:
                rest = np.array([later[int(x)] for x in piece_labels], dtype=np.int32)
                piece_labels = np.where(first, piece_labels, rest)
            else:
                piece_labels = np.where(first, piece_labels, -100).astype(np.int32)
        out.unknown_pieces += int((ids == unk).sum())
        out.empty_words += len(sentence_words) - len(set(piece_words.tolist()))
        windows = plan_windows(piece_words.tolist(), size, stride)
        out.split_sentences += len(windows) > 1
        for s, e, own_s, own_e in windows:
            owned = np.zeros(e - s, dtype=bool)
            owned[own_s - s:own_e - s] = True
            edge = np.array([-1], dtype=np.int32)
            feature = {
                "input_ids": np.concatenate([[cls], ids[s:e], [sep]]).astype(np.int32),
                "token_type_ids": np.zeros(e - s + 2, dtype=np.int8),
                "word_ids": np.concatenate([edge, piece_words[s:e], edge]),
                "prediction_mask": np.concatenate([[0], owned & first[s:e], [0]]).astype(np.int8),
                "sentence": index,
            }
            if word_labels is not None:
                inner = np.where(owned, piece_labels[s:e], -100)
                feature["labels"] = np.concatenate([[-100], inner, [-100]]).astype(np.int32)
            out.features.append(feature)
    return out


def word_predictions(features: Sequence[Mapping[str, Any]], values: Sequence[Sequence[Any]],
                     n_words: Sequence[int]) -> list[list[Any]]:
    """Per sentence, the value at each word's first piece in the window that owns it: values[i] holds
    one entry per token of features[i] (a predicted label id, a score vector; a padded batch row is fine).
    A word the tokenizer made no piece of gets None, which a caller scores as O (or S for BMES).

    n_words: the number of words of each sentence, in the order of tokenize_tagged's `words`."""
    out: list[list[Any]] = [[None] * n for n in n_words]
    for feature, row in zip(features, values, strict=True):
        sentence = out[int(feature["sentence"])]
        word_ids = feature["word_ids"]
        for p in feature["prediction_mask"].nonzero()[0]:
            sentence[int(word_ids[p])] = row[p]
    return out
