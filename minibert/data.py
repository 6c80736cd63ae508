"""From a file on disk to a batch of tensors: readers, tokenization, masking, padding, batching.

Readers
    read_texts(path)      MLM corpora: .txt (one text per line), .json (a list of strings, or of objects
                          with a "text" field), .jsonl (one object with "text" per line).
    read_labelled(path)   classification: .json/.jsonl objects with "text", "label" (and optional
                          "text_pair"), or .csv/.tsv with a header naming those columns.
    Malformed input raises DataError, whose message starts with "file:line:" and says what to fix.
    Blank lines (and empty texts) are skipped; nothing else is dropped.

Features are dicts of small numpy arrays, one per example: "input_ids" (int32), "token_type_ids" (int8),
"word_ids" (int32, -1 at [CLS]/[SEP]) and, for classification, "label". A list of them is a Dataset.

Whole-word masking
    With whole_word_mask=True each line is split on whitespace and every piece of one
    whitespace-separated word shares a word id, so MaskingCollator masks the word or none of it.
    English needs nothing special. Chinese has no spaces, so segment it first and write the words
    separated by spaces, as in the People's Daily 1998 corpus:
        诸葛 亮 是 丞相
    BERT still splits every CJK character into its own token (诸 葛 亮 ...), but "诸葛" is masked as
    one unit. Any segmenter works (jieba, pkuseg, LAC); unsegmented lines would be one "word" each,
    which load_mlm_features rejects.

Determinism
    MaskingCollator owns a torch.Generator seeded from (seed, epoch, rank, DataLoader worker), created
    lazily inside the process that calls it, so every worker and every rank draws its own reproducible
    stream. Call set_epoch(epoch) each epoch (it reaches workers because the DataLoader re-creates them
    each epoch unless persistent_workers=True, in which case each worker's stream just continues).
    state_dict()/load_state_dict() carry the generator of the calling process for exact resumption
    (exact mid-epoch only with num_workers=0; at epoch boundaries always).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler, get_worker_info

from minibert.tokenizer import Tokenizer

TEXT_SUFFIXES = (".txt", ".json", ".jsonl")
LABELLED_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv")


class DataError(ValueError):
    """A malformed input file; the message is one line, "file:line: what is wrong; what to do"."""


# ---------------------------------------------------------------------------------------------- readers


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
             int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _read_file(path: Path, suffixes: tuple[str, ...]) -> str:
    """The file's text, checked for existence, extension, UTF-8 and emptiness."""
    if not path.exists():
        raise DataError(f"{path}: file not found; check the path")
    if not path.is_file():
        raise DataError(f"{path}: is not a file; pass the path of a data file")
    if path.suffix.lower() not in suffixes:
        raise DataError(f"{path}: unknown extension {path.suffix!r}; use one of {', '.join(suffixes)}")
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark, as Windows editors write
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: byte 0x{raw[e.start]:02x} is not valid UTF-8; convert the file to "
                        f"UTF-8 (e.g. iconv -f GBK -t UTF-8 {path.name} > fixed{path.suffix})") from None
    if not text.strip():
        raise DataError(f"{path}: file is empty; expected at least one example")
    return text


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) pairs. Splits on "\\n" only: str.splitlines() would also break inside a text
    at \\x1c, \\u2028 etc. and throw off the line numbers of every error after it."""
    for n, line in enumerate(text.split("\n"), start=1):
        yield n, line.rstrip("\r")


def _json_records(path: Path, text: str) -> Iterator[tuple[int, object]]:
    """(line, value) for each item of a .json list or each line of a .jsonl file; blank lines skipped."""
    if path.suffix.lower() == ".jsonl":
        for n, line in _lines(text):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: invalid JSON ({e.msg} at column {e.colno}); each line must be "
                                "one JSON object") from None
        return
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(parsed, list):
        raise DataError(f"{path}:1: expected a JSON list of examples, got {_json_type(parsed)}; "
                        "wrap the examples in [ ... ] (or use .jsonl, one object per line)")
    # json.loads keeps no positions, so walk the (now known valid) list again with raw_decode to learn
    # the line each item starts on: errors and Example.line then point at the right place.
    decoder, space = json.JSONDecoder(), re.compile(r"[ \t\n\r]*")
    pos, line, counted = space.match(text).end() + 1, 1, 0
    for _ in parsed:
        pos = space.match(text, pos).end()
        line += text.count("\n", counted, pos)
        counted = pos
        value, pos = decoder.raw_decode(text, pos)
        yield line, value
        pos = space.match(text, pos).end() + 1  # past the "," (or the closing "]")


def _field(record: dict, key: str, path: Path, line: int) -> str:
    if key not in record:
        have = ", ".join(map(repr, record)) or "none"
        raise DataError(f"{path}:{line}: object has no {key!r} field (fields: {have}); rename the field "
                        f"to {key!r} or choose the field name in the options")
    value = record[key]
    if not isinstance(value, str):
        raise DataError(f"{path}:{line}: field {key!r} is {_json_type(value)}, expected a string")
    return value


def read_texts(path: str | Path, text_column: str = "text") -> list[str]:
    """Texts of an MLM corpus (.txt, .json, .jsonl), stripped; blank lines and empty texts skipped."""
    path = Path(path)
    text = _read_file(path, TEXT_SUFFIXES)
    if path.suffix.lower() == ".txt":
        texts = [line.strip() for _, line in _lines(text)]
    else:
        texts = []
        for line, record in _json_records(path, text):
            if isinstance(record, dict):
                texts.append(_field(record, text_column, path, line).strip())
            elif isinstance(record, str):
                texts.append(record.strip())
            else:
                raise DataError(f"{path}:{line}: expected a string or an object with a {text_column!r} "
                                f"field, got {_json_type(record)}")
    texts = [t for t in texts if t]
    if not texts:
        raise DataError(f"{path}: no texts found (an empty list, or only empty texts); expected at least one")
    return texts


@dataclass
class Example:
    text: str
    label: str | int | float
    text_pair: str | None
    line: int  # where the example starts in its file, for error messages


def _csv_label(value: str) -> str | int | float:
    """A CSV cell is always a string; read numbers as numbers so labels 2 and 10 sort numerically."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _check_label(value: object, key: str, path: Path, line: int) -> str | int | float:
    # bool is an int subclass; true/false labels are almost surely a mistake in a classification file.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{path}:{line}: field {key!r} is {_json_type(value)}; a label must be a string "
                        "or a number")
    if isinstance(value, str) and not value.strip():
        raise DataError(f"{path}:{line}: label is empty; give every example a label")
    return value


def read_labelled(path: str | Path, text_column: str = "text", label_column: str = "label",
                  pair_column: str = "text_pair") -> list[Example]:
    """Labelled examples from .json/.jsonl (objects) or .csv/.tsv (header row names the columns)."""
    path = Path(path)
    text = _read_file(path, LABELLED_SUFFIXES)
    examples = []
    if path.suffix.lower() in (".json", ".jsonl"):
        for line, record in _json_records(path, text):
            if not isinstance(record, dict):
                raise DataError(f"{path}:{line}: expected an object with {text_column!r} and "
                                f"{label_column!r} fields, got {_json_type(record)}")
            if label_column not in record:
                have = ", ".join(map(repr, record)) or "none"
                raise DataError(f"{path}:{line}: object has no {label_column!r} field (fields: {have}); "
                                "every training and evaluation example needs a label")
            pair = record.get(pair_column)
            if pair is not None and not isinstance(pair, str):
                raise DataError(f"{path}:{line}: field {pair_column!r} is {_json_type(pair)}, expected a string")
            examples.append(Example(_field(record, text_column, path, line),
                                    _check_label(record[label_column], label_column, path, line), pair, line))
        if not examples:
            raise DataError(f"{path}: the list of examples is empty; expected at least one")
        return examples

    tsv = path.suffix.lower() == ".tsv"
    # TSV files (GLUE's among them) use quote characters as plain text, so quoting is off for them.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if tsv else ",",
                        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    header: list[str] | None = None
    end = 0
    try:
        for row in reader:
            # line_num counts the lines read so far: a quoted field may span several, so a row
            # starts one line after where the previous one ended.
            line, end = end + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                missing = [c for c in (text_column, label_column) if c not in header]
                if missing:
                    hint = "; the file looks tab-separated, name it .tsv" if not tsv and "\t" in row[0] else ""
                    raise DataError(f"{path}:{line}: header has no column {missing[0]!r} (columns: "
                                    f"{', '.join(map(repr, header))}); rename the header or choose the "
                                    f"column names in the options{hint}")
                t, lab = header.index(text_column), header.index(label_column)
                p = header.index(pair_column) if pair_column in header else None
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{line}: row has {len(row)} fields but the header has {len(header)}; "
                                "quote fields that contain the delimiter")
            label = _check_label(row[lab].strip(), label_column, path, line)
            pair = row[p] if p is not None else ""
            examples.append(Example(row[t], _csv_label(label), pair or None, line))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed {'TSV' if tsv else 'CSV'} ({e})") from None
    if not examples:
        raise DataError(f"{path}: has a header but no rows; expected at least one example")
    return examples


def _label_sort_key(name: str) -> tuple:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def build_label_map(examples: Sequence[Example]) -> dict[str, int]:
    """label name -> class id over the training examples: numbers in numeric order, then strings sorted.

    Keys are strings because config.json's label2id has string keys; the sort makes ids stable
    whatever the file order."""
    return {name: i for i, name in enumerate(sorted({str(e.label) for e in examples}, key=_label_sort_key))}


def encode_labels(examples: Sequence[Example], label2id: dict[str, int], path: str | Path) -> list[int]:
    """Class ids of `examples` (read from `path`); a label absent from label2id is an error."""
    ids = []
    for e in examples:
        if str(e.label) not in label2id:
            known = ", ".join(map(repr, label2id))
            raise DataError(f"{path}:{e.line}: label {e.label!r} does not occur in the training data (labels: "
                            f"{known}); fix the label or add training examples with it")
        ids.append(label2id[str(e.label)])
    return ids


def is_regression(examples: Sequence[Example]) -> bool:
    """True when labels are numbers and at least one is fractional: a regression target, not classes."""
    labels = [e.label for e in examples]
    return all(isinstance(x, (int, float)) for x in labels) and any(isinstance(x, float) for x in labels)


# ---------------------------------------------------------------------------------------------- features


def _feature(enc) -> dict[str, np.ndarray]:
    # Numpy arrays, not lists: a 300k-line corpus as Python int lists would take gigabytes.
    # np.array turns None into nan for a float dtype, which avoids a Python loop per token.
    words = np.array(enc.word_ids, dtype=np.float64)
    return {
        "input_ids": np.array(enc.ids, dtype=np.int32),
        "token_type_ids": np.array(enc.token_type_ids, dtype=np.int8),
        "word_ids": np.nan_to_num(words, nan=-1).astype(np.int32),
    }


def tokenize_texts(tokenizer: Tokenizer, texts: Sequence[str], max_length: int | None = None,
                   whole_word_mask: bool = False, chunk_size: int = 4096) -> list[dict[str, np.ndarray]]:
    """One feature per text, truncated to max_length. whole_word_mask: words are the whitespace-split
    words of the text (see the module docstring), not the tokenizer's own word boundaries."""
    features = []
    # encode_batch runs on all cores; chunks keep only a few thousand Encoding objects alive at once.
    for start in range(0, len(texts), chunk_size):
        chunk = texts[start : start + chunk_size]
        if whole_word_mask:
            chunk = [t.split() for t in chunk]
        features += map(_feature, tokenizer.encode_batch(chunk, max_length=max_length,
                                                         is_pretokenized=whole_word_mask))
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
    BertForMaskedLM(..., segment_ids=...) and PackingCollator: less of every batch is padding.

    Each row concatenates its sequences, each keeping its own [CLS] ... [SEP], and adds "segment_ids"
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
            "segment_ids": np.repeat(np.arange(1, len(parts) + 1), sizes).astype(np.int32),
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
                      group: bool = False, text_column: str = "text") -> list[dict[str, np.ndarray]]:
    """read_texts + tokenize_texts (+ group_texts when group=True): the MLM dataset of a file."""
    texts = read_texts(path, text_column)
    if whole_word_mask and not any(len(t.split()) > 1 for t in texts):
        raise DataError(f"{path}: whole-word masking takes words from spaces, but no line has two words; "
                        "segment the text first (e.g. '诸葛 亮 是 丞相') or turn whole-word masking off")
    if group:
        features = tokenize_texts(tokenizer, texts, None, whole_word_mask)
        return group_texts(features, max_length, tokenizer.cls_token_id, tokenizer.sep_token_id)
    return tokenize_texts(tokenizer, texts, max_length, whole_word_mask)


def tokenize_examples(tokenizer: Tokenizer, examples: Sequence[Example], labels: Sequence[int | float] | None,
                      max_length: int | None) -> list[dict]:
    """Classification features: a text (and its pair) truncated longest-first, plus "label" if given."""
    pairs = [e.text_pair for e in examples]
    encodings = tokenizer.encode_batch([e.text for e in examples],
                                       pairs if any(p is not None for p in pairs) else None, max_length)
    features = [_feature(enc) for enc in encodings]
    if labels is not None:
        for f, label in zip(features, labels, strict=True):
            f["label"] = label
    return features


def feature_lengths(features: Sequence[dict]) -> list[int]:
    return [len(f["input_ids"]) for f in features]


# ---------------------------------------------------------------------------------------------- collators


def _pad_batch(features: Sequence[dict], pad_token_id: int, pad_to_multiple_of: int | None,
               keys: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Pad to the batch's longest sequence (rounded up to pad_to_multiple_of: tensor cores like 8)."""
    if not features:
        raise ValueError("cannot collate an empty batch")
    T = max(len(f["input_ids"]) for f in features)
    if pad_to_multiple_of:
        T = -(-T // pad_to_multiple_of) * pad_to_multiple_of
    B = len(features)
    batch = {
        "input_ids": torch.full((B, T), pad_token_id, dtype=torch.long),
        "attention_mask": torch.zeros(B, T, dtype=torch.long),
        "token_type_ids": torch.zeros(B, T, dtype=torch.long),
    }
    batch.update({k: torch.full((B, T), -1, dtype=torch.long) for k in keys})
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        batch["input_ids"][i, :n] = torch.as_tensor(f["input_ids"])
        batch["attention_mask"][i, :n] = 1
        if "token_type_ids" in f:
            batch["token_type_ids"][i, :n] = torch.as_tensor(f["token_type_ids"])
        for k in keys:
            batch[k][i, :n] = torch.as_tensor(f[k])
    return batch


def _mix_seed(*numbers: int) -> int:
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
            self._generator = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, self.rank, slot))
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
        batch = _pad_batch(features, self.pad_token_id, self.pad_to_multiple_of, keys)
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
    segment_ids (B, T) long, 0 at padding, to pass to the model with the rest.

    The masking is the wrapped collator's own: the [CLS]/[SEP] inside a row are special tokens, so they
    are never masked, and pack_features' word ids keep every whole word inside one sequence. Its budget
    (mlm_probability of the maskable tokens) applies per row instead of per sequence; the expected
    number of masked tokens is the same.
    """

    def __init__(self, collator: MaskingCollator) -> None:
        self.collator = collator

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        if any("segment_ids" not in f for f in features):
            raise ValueError("PackingCollator needs packed features with 'segment_ids'; pack them with "
                             "pack_features(features, max_length) first")
        batch = self.collator(features)
        segment_ids = torch.zeros_like(batch["input_ids"])  # (B, T), 0 = padding
        for i, f in enumerate(features):
            segment_ids[i, : len(f["segment_ids"])] = torch.as_tensor(f["segment_ids"])
        batch["segment_ids"] = segment_ids
        return batch

    # The trainer seeds, saves and restores the masking stream through these.
    def set_epoch(self, epoch: int) -> None:
        self.collator.set_epoch(epoch)

    def state_dict(self) -> dict:
        return self.collator.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.collator.load_state_dict(state)


class ClassificationCollator:
    """Pad features to the batch's longest; "label" becomes labels: int64 classes, float32 if any label is
    a float (regression). Features without "label" (prediction) give no labels tensor."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = _pad_batch(features, self.pad_token_id, self.pad_to_multiple_of)
        if "label" in features[0]:
            labels = [f["label"] for f in features]
            regression = any(isinstance(x, (float, np.floating)) for x in labels)
            batch["labels"] = torch.tensor(labels, dtype=torch.float32 if regression else torch.long)
        return batch


# ---------------------------------------------------------------------------------------------- batching


class LengthGroupedSampler(Sampler[list[int]]):
    """Batches of similar length, so little of each batch is padding, in a fresh random order each epoch.

    Shuffle all indices, sort each chunk of batch_size * mega_batch_mult by length (longest first), cut
    into batches and shuffle the batches. Pass it as DataLoader(batch_sampler=...). With num_replicas > 1
    every rank draws the same order (same seed and epoch) and takes every num_replicas-th batch; the
    last len % num_replicas batches are left out so ranks get equal, disjoint shares (a different few
    each epoch, as the order changes).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, mega_batch_mult: int = 50,
                 drop_last: bool = False, num_replicas: int = 1, rank: int = 0) -> None:
        if batch_size < 1 or mega_batch_mult < 1:
            raise ValueError(f"batch_size and mega_batch_mult must be >= 1, got {batch_size}, {mega_batch_mult}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        self.lengths = torch.as_tensor(lengths)
        self.batch_size, self.seed, self.mega_batch_mult = batch_size, seed, mega_batch_mult
        self.drop_last, self.num_replicas, self.rank = drop_last, num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch))
        perm = torch.randperm(len(self.lengths), generator=g)
        chunk, bs = self.batch_size * self.mega_batch_mult, self.batch_size
        batches = []
        for s in range(0, len(perm), chunk):
            idx = perm[s : s + chunk]
            idx = idx[torch.argsort(self.lengths[idx], descending=True, stable=True)]
            batches += [idx[i : i + bs].tolist() for i in range(0, len(idx), bs)]
        if self.drop_last and batches and len(batches[-1]) < bs:
            batches.pop()
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        if batches:
            # The longest batch goes first, so an out-of-memory error shows at step 1, not hours in.
            longest = max(range(len(batches)), key=lambda b: int(self.lengths[batches[b][0]]))
            batches[0], batches[longest] = batches[longest], batches[0]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        usable = len(batches) // self.num_replicas * self.num_replicas
        yield from batches[self.rank : usable : self.num_replicas]

    def __len__(self) -> int:
        n = len(self.lengths)
        n_batches = n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return n_batches // self.num_replicas


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Fraction of the padded (B, T) slots that are padding, over all batches."""
    real = padded = 0
    for b in batches:
        sizes = [lengths[i] for i in b]
        real += sum(sizes)
        padded += len(sizes) * max(sizes)
    return 1 - real / padded if padded else 0.0
