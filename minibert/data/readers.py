"""Readers: data files on disk -> texts (masked LM) or labelled examples (classification).

    read_texts(path)      MLM corpora: .txt (one text per line), .json (a list of strings, or of objects
                          with a "text" field), .jsonl (one object with "text" per line).
    read_labelled(path)   classification: .json/.jsonl objects with "text", "label" (and optional
                          "text_pair"), or .csv/.tsv with a header naming those columns. A label that is
                          a JSON list (or, with label_sep, a CSV/TSV cell split on it) is a set of
                          labels: a multi-label example, [] for none. A file is all lists or none.
                          With label_required=False (texts to predict) the label may be absent, and a
                          .json/.jsonl record may be a plain string.

Malformed input raises DataError, whose message starts with "file:line:" and says what to fix.
Blank lines (and empty texts) are skipped; nothing else is dropped. Files are UTF-8, with or without
a byte-order mark, with LF or CRLF line endings (CSV/TSV fields get "\n" for either); NUL bytes are
an error (files.py says why). .txt and .jsonl files are read a line at a time and .json/.csv/.tsv
whole; a text may hold MAX_TEXT_CHARS characters, so one huge line cannot fill the memory.
Imports no torch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..files import parse_json, read_json, read_lines, read_text

TEXT_SUFFIXES = (".txt", ".json", ".jsonl")
LABELLED_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv")
MAX_TEXT_CHARS = 1_000_000  # characters in one text: a whole book on one line is a mistake, or not text
# A .jsonl line holds a text, maybe a pair, and JSON's escapes (\uXXXX is 6 characters for 1).
MAX_JSONL_LINE_CHARS = 12 * MAX_TEXT_CHARS
MAX_LABELS = 1_000  # more distinct labels than this, most seen once, is a wrong label column


class DataError(ValueError):
    """A malformed input file; the message is one line, "file:line: what is wrong; what to do"."""


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
             int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _check_path(path: Path, suffixes: tuple[str, ...]) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found; check the path")
    if not path.is_file():
        raise DataError(f"{path}: is not a file; pass the path of a data file")
    if path.suffix.lower() not in suffixes:
        raise DataError(f"{path}: unknown extension {path.suffix!r}; use one of {', '.join(suffixes)}")


def _read_file(path: Path, suffixes: tuple[str, ...], newlines: bool = False) -> str:
    """The whole file's text, checked for existence, extension, UTF-8 and emptiness."""
    _check_path(path, suffixes)
    text = read_text(path, DataError, newlines)
    if not text.strip():
        raise DataError(f"{path}: file is empty; expected at least one example")
    return text


def _read_lines(path: Path, suffixes: tuple[str, ...], max_chars: int, what: str) -> Iterator[tuple[int, str]]:
    """(line number, line) for the non-blank lines, read one at a time; checked as _read_file checks."""
    _check_path(path, suffixes)
    empty = True
    for n, line in read_lines(path, DataError, max_chars, what):
        if line.strip():
            empty = False
            yield n, line
    if empty:
        raise DataError(f"{path}: file is empty; expected at least one example")


def _text(value: str, path: Path, line: int) -> str:
    """`value`, checked against MAX_TEXT_CHARS."""
    if len(value) > MAX_TEXT_CHARS:
        raise DataError(f"{path}:{line}: a text of {len(value):,} characters is longer than the "
                        f"{MAX_TEXT_CHARS:,} the readers accept; split it into lines or paragraphs")
    return value


def _json_records(path: Path, suffixes: tuple[str, ...]) -> Iterator[tuple[int, object]]:
    """(line, value) for each item of a .json list or each line of a .jsonl file; blank lines skipped."""
    if path.suffix.lower() == ".jsonl":
        for n, line in _read_lines(path, suffixes, MAX_JSONL_LINE_CHARS, "a line"):
            try:
                value = parse_json(line, path, DataError, n)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: invalid JSON ({e.msg} at column {e.colno}); each line must be "
                                "one JSON object") from None
            yield n, value
        return
    text = _read_file(path, suffixes)
    try:
        parsed = parse_json(text, path, DataError)
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
    return _text(value, path, line)


def read_texts(path: str | Path, text_column: str = "text") -> list[str]:
    """Texts of an MLM corpus (.txt, .json, .jsonl), stripped; blank lines and empty texts skipped."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        texts = [line.strip() for _, line in _read_lines(path, TEXT_SUFFIXES, MAX_TEXT_CHARS, "a text")]
    else:
        texts = []
        for line, record in _json_records(path, TEXT_SUFFIXES):
            if isinstance(record, dict):
                texts.append(_field(record, text_column, path, line).strip())
            elif isinstance(record, str):
                texts.append(_text(record, path, line).strip())
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
    # a tuple: the labels of a multi-label example; None: no label (texts to predict, read with
    # label_required=False)
    label: str | int | float | tuple[str, ...] | None
    text_pair: str | None
    line: int  # where the example starts in its file, for error messages


def _csv_label(value: str) -> str | int | float:
    """A CSV cell is always a string; read numbers as numbers so labels 2 and 10 sort numerically.
    "nan" and "inf" stay strings: as numbers they would make a regression target of no value."""
    for kind in (int, float):
        try:
            number = kind(value)
        except ValueError:
            continue
        return number if math.isfinite(number) else value
    return value


def _check_label(value: object, key: str, path: Path, line: int) -> str | int | float:
    # bool is an int subclass; true/false labels are almost surely a mistake in a classification file.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{path}:{line}: field {key!r} is {_json_type(value)}; a label must be a string "
                        "or a number")
    if isinstance(value, str) and not value.strip():
        raise DataError(f"{path}:{line}: label is empty; give every example a label")
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"{path}:{line}: label is {value}; give a finite number, or a class name")
    return value


def _label_set(values: Sequence, key: str, path: Path, line: int) -> tuple[str, ...]:
    """The labels of a multi-label example, as names (numbers too), each once, in the file's order."""
    names = [str(_check_label(v, key, path, line)).strip() for v in values]
    return tuple(dict.fromkeys(names))


def _check_not_mixed(examples: Sequence[Example], path: Path) -> None:
    """A DataError when some labels are lists and others not: which task the file is would be a guess."""
    labelled = [e for e in examples if e.label is not None]  # None: no gold label (texts to predict)
    if not labelled:
        return
    first = isinstance(labelled[0].label, tuple)
    for e in labelled[1:]:
        if isinstance(e.label, tuple) != first:
            this, that = ("a single label", "a list") if first else ("a list", "a single label")
            raise DataError(f"{path}:{e.line}: label is {this}, but the label on line {labelled[0].line} is {that}; "
                            "give every label as a list (multi-label, [] for none) or none as lists")


def read_labelled(path: str | Path, text_column: str = "text", label_column: str = "label",
                  pair_column: str = "text_pair", label_sep: str | None = None,
                  label_required: bool = True) -> list[Example]:
    """Labelled examples from .json/.jsonl (objects) or .csv/.tsv (header row names the columns).

    label_sep (CSV/TSV only): every label cell holds the labels of a multi-label example separated by
    it; an empty cell is an example with no label. label_required=False: a missing label is None."""
    path = Path(path)
    if label_sep is not None and not label_sep:
        raise DataError("--label-sep: give a separator, e.g. '|'")
    examples = []
    if path.suffix.lower() in (".json", ".jsonl"):
        for line, record in _json_records(path, LABELLED_SUFFIXES):
            if isinstance(record, str) and not label_required:
                examples.append(Example(_text(record, path, line), None, None, line))
                continue
            if not isinstance(record, dict):
                raise DataError(f"{path}:{line}: expected an object with {text_column!r} and "
                                f"{label_column!r} fields, got {_json_type(record)}")
            if label_column not in record and label_required:
                have = ", ".join(map(repr, record)) or "none"
                raise DataError(f"{path}:{line}: object has no {label_column!r} field (fields: {have}); "
                                "every training and evaluation example needs a label")
            pair = record.get(pair_column)
            if pair is not None and not isinstance(pair, str):
                raise DataError(f"{path}:{line}: field {pair_column!r} is {_json_type(pair)}, expected a string")
            pair = _text(pair, path, line) if pair is not None else None
            label = record.get(label_column)
            if isinstance(label, list):
                label = _label_set(label, label_column, path, line)
            elif label is not None or label_required:
                label = _check_label(label, label_column, path, line)
            examples.append(Example(_field(record, text_column, path, line), label, pair, line))
        if not examples:
            raise DataError(f"{path}: the list of examples is empty; expected at least one")
        _check_not_mixed(examples, path)
        return examples

    # newlines=True: a quoted field spanning lines of a CRLF file gets "\n" like any other.
    text = _read_file(path, LABELLED_SUFFIXES, newlines=True)
    tsv = path.suffix.lower() == ".tsv"
    # TSV files (GLUE's among them) use quote characters as plain text, so quoting is off for them.
    # strict: a quote left open is an error at the end of the file, not the rest of the file read
    # silently into one field.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if tsv else ",",
                        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL, strict=not tsv)
    header: list[str] | None = None
    end = 0
    # csv's cap on a field is global to the process: raised to the readers' own for this file only.
    limit = csv.field_size_limit(MAX_TEXT_CHARS)
    try:
        for row in reader:
            # line_num counts the lines read so far: a quoted field may span several, so a row
            # starts one line after where the previous one ended.
            line, end = end + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                missing = [c for c in (text_column, label_column) if c not in header
                           and (c == text_column or label_required)]
                if missing:
                    hint = "; the file looks tab-separated, name it .tsv" if not tsv and "\t" in row[0] else ""
                    raise DataError(f"{path}:{line}: header has no column {missing[0]!r} (columns: "
                                    f"{', '.join(map(repr, header))}); rename the header or choose the "
                                    f"column names in the options{hint}")
                t = header.index(text_column)
                lab = header.index(label_column) if label_column in header else None
                p = header.index(pair_column) if pair_column in header else None
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{line}: row has {len(row)} fields but the header has {len(header)}; "
                                "quote fields that contain the delimiter")
            if lab is None or (not label_required and not row[lab].strip() and label_sep is None):
                label = None
            elif label_sep is not None:
                label = _label_set([x for x in row[lab].split(label_sep) if x.strip()], label_column, path, line)
            else:
                label = _csv_label(_check_label(row[lab].strip(), label_column, path, line))
            pair = row[p] if p is not None else ""
            examples.append(Example(row[t], label, pair or None, line))
    except csv.Error as e:
        if "field limit" in str(e):
            raise DataError(f"{path}:{end + 1}: a field longer than the {MAX_TEXT_CHARS:,} characters the readers "
                            "accept; split the text, or close a quote left open") from None
        if "unexpected end of data" in str(e):
            raise DataError(f"{path}:{end + 1}: a quote opened in this row is never closed; close it, or write a "
                            'quote inside a field as ""') from None
        raise DataError(f"{path}:{reader.line_num}: malformed {'TSV' if tsv else 'CSV'} ({e})") from None
    finally:
        csv.field_size_limit(limit)
    if not examples:
        raise DataError(f"{path}: has a header but no rows; expected at least one example")
    return examples


def _label_sort_key(name: str) -> tuple:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def label_names(example: Example) -> tuple[str, ...]:
    """The label names of an example: one, or a multi-label example's set."""
    return example.label if isinstance(example.label, tuple) else (str(example.label),)


def build_label_map(examples: Sequence[Example]) -> dict[str, int]:
    """label name -> class id over the training examples (every label of a multi-label example):
    numbers in numeric order, then strings sorted.

    Keys are strings because config.json's label2id has string keys; the sort makes ids stable
    whatever the file order."""
    names = {name for e in examples for name in label_names(e)}
    return {name: i for i, name in enumerate(sorted(names, key=_label_sort_key))}


def check_labels(examples: Sequence[Example], path: str | Path) -> None:
    """A DataError when the training labels look like the wrong column (ids, texts, integer scores):
    more than MAX_LABELS distinct labels, and more than half of the examples with a label no other has.

    No option turns it off: a class seen once can neither be learned nor evaluated."""
    counts = Counter(name for e in examples for name in label_names(e))
    once = sum(1 for c in counts.values() if c == 1)
    if len(counts) > MAX_LABELS and 2 * once > len(examples):
        raise DataError(f"{path}: {len(counts):,} distinct labels in {len(examples):,} examples, {once:,} of them "
                        "seen once; is the label column right? (regression targets need a decimal point: 3.0)")


def encode_labels(examples: Sequence[Example], label2id: dict[str, int], path: str | Path) -> list[int]:
    """Class ids of `examples` (read from `path`); a label absent from label2id is an error."""
    ids = []
    for e in examples:
        _check_known(str(e.label), label2id, path, e.line)
        ids.append(label2id[str(e.label)])
    return ids


def encode_label_sets(examples: Sequence[Example], label2id: dict[str, int], path: str | Path) -> list[list[float]]:
    """Multi-hot rows (num_labels,) of `examples`, 1.0 for each of its labels; a single label counts
    as a set of one. A label absent from label2id is an error."""
    rows = []
    for e in examples:
        row = [0.0] * len(label2id)
        for name in label_names(e):
            _check_known(name, label2id, path, e.line)
            row[label2id[name]] = 1.0
        rows.append(row)
    return rows


def _check_known(name: str, label2id: dict[str, int], path: str | Path, line: int) -> None:
    if name not in label2id:
        known = ", ".join(map(repr, label2id))
        raise DataError(f"{path}:{line}: label {name!r} does not occur in the training data (labels: "
                        f"{known}); fix the label or add training examples with it")


def is_multi_label(examples: Sequence[Example]) -> bool:
    """True when the labels are lists (read_labelled makes a file all lists or none)."""
    return isinstance(examples[0].label, tuple)


def is_regression(examples: Sequence[Example]) -> bool:
    """True when labels are numbers and at least one is fractional: a regression target, not classes."""
    labels = [e.label for e in examples]
    return all(isinstance(x, (int, float)) for x in labels) and any(isinstance(x, float) for x in labels)


def class_weights(spec: str, labels: Sequence[int] | Sequence[Sequence[float]],
                  label2id: dict[str, int]) -> list[float]:
    """Per-class weights (num_labels,) from --class-weights `spec`, for training labels `labels`: class
    ids (single label: weights of the cross-entropy) or multi-hot rows (multi-label: the weight of
    each label's positive term in the binary cross-entropy, BCEWithLogitsLoss's pos_weight).

    "auto", single label: inverse frequency, w_c = N / (K * n_c) for N examples, K classes and n_c
    examples of class c, so the mean weight over the examples is 1. "auto", multi-label: w_c =
    (N - n_c) / n_c, the negatives per positive of label c, so that its positives weigh as much as its
    negatives in all (1.0 for a label that every example has). Otherwise the path of a JSON object
    {label: weight}; a label the file leaves out weighs 1.0."""
    if spec == "auto":
        if labels and not isinstance(labels[0], int):  # multi-hot rows
            n = len(labels)
            positives = [sum(row[i] for row in labels) for i in range(len(label2id))]
            return [(n - p) / p if p < n else 1.0 for p in positives]
        counts = Counter(labels)
        return [len(labels) / (len(label2id) * counts[i]) for i in range(len(label2id))]
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"{path}: class-weights file not found; give a JSON file {{label: weight}}, or auto")
    given = read_json(path, error=DataError)
    if not isinstance(given, dict):
        raise DataError(f"{path}: expected a JSON object {{label: weight}}, got {_json_type(given)}")
    weights = [1.0] * len(label2id)
    for name, w in given.items():
        if name not in label2id:
            raise DataError(f"{path}: label {name!r} does not occur in the training labels ({', '.join(label2id)}); "
                            "fix the name or remove it")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise DataError(f"{path}: the weight of {name!r} is {json.dumps(w)}; give a positive number")
        weights[label2id[name]] = float(w)
    return weights
