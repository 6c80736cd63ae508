"""Readers: data files on disk -> texts (masked LM) or labelled examples (classification).

    read_texts(path)      MLM corpora: .txt (one text per line), .json (a list of strings, or of objects
                          with a "text" field), .jsonl (one object with "text" per line).
    read_labelled(path)   classification: .json/.jsonl objects with "text", "label" (and optional
                          "text_pair"), or .csv/.tsv with a header naming those columns.

Malformed input raises DataError, whose message starts with "file:line:" and says what to fix.
Blank lines (and empty texts) are skipped; nothing else is dropped. Imports no torch.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..files import read_text

TEXT_SUFFIXES = (".txt", ".json", ".jsonl")
LABELLED_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv")


class DataError(ValueError):
    """A malformed input file; the message is one line, "file:line: what is wrong; what to do"."""


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
    text = read_text(path, DataError)
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
