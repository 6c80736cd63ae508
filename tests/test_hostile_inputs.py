"""Hostile input files: every reader, and predict.py --file, gives the right parse or one error line
naming file:line and the fix, never a traceback, and reads a huge line in bounded memory.

Readers: read_texts (.txt/.json/.jsonl), read_labelled (.json/.jsonl/.csv/.tsv), files.read_json
(config.json). The CLI cases call predict in this process with the shipped models/zh-small; two run
predict.py as a process of its own (a NUL byte in --file; stdout closed by `| head -1`).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from conftest import PREDICT, ROOT, TINY_ARGS, TRAIN, call, write_jsonl

from minibert.config import BertConfig
from minibert.data.readers import MAX_TEXT_CHARS, DataError, check_labels, read_labelled, read_texts

ZH_SMALL = str(ROOT / "models" / "zh-small")
FORMATS = ["txt", "json", "jsonl", "csv", "tsv"]
BIG = 100 * 2**20  # the huge line: 100 MiB


def read(path: Path) -> list:
    """What the reader for the file's format returns: texts of a .txt, labelled examples of the rest."""
    return read_texts(path) if path.suffix == ".txt" else read_labelled(path)


def one_line(error: Exception | str, path: Path) -> str:
    """The message, after checking it is one line, names the file, and is at most 200 characters
    besides the file's name."""
    message = str(error)
    assert "\n" not in message and str(path) in message, message
    assert len(message.replace(str(path), "").replace(path.name, "")) <= 200, message
    return message


def fails(path: Path, pattern: str, reader=read) -> str:
    with pytest.raises(DataError, match=pattern) as e:
        reader(path)
    return one_line(e.value, path)


def dataset(fmt: str, rows: list[tuple[str, str]], newline: str = "\n") -> str:
    """(text, label) rows in a format: a .txt has the texts alone."""
    if fmt == "txt":
        lines = [t for t, _ in rows]
    elif fmt == "json":
        lines = ["["] + [json.dumps({"text": t, "label": lab}, ensure_ascii=False) + ("," if i else "]")
                         for i, (t, lab) in zip(range(len(rows) - 1, -1, -1), rows)]
    elif fmt == "jsonl":
        lines = [json.dumps({"text": t, "label": lab}, ensure_ascii=False) for t, lab in rows]
    else:
        sep = "," if fmt == "csv" else "\t"
        lines = [f"text{sep}label"] + [f"{t}{sep}{lab}" for t, lab in rows]
    return newline.join(lines) + newline


ROWS = [("好酒店", "good"), ("坏酒店", "bad")]


def parsed(path: Path) -> list[tuple[str, str | None]]:
    return [(x, None) if isinstance(x, str) else (x.text, x.label) for x in read(path)]


# ------------------------------------------------------------------------------------- 1: random bytes


@pytest.mark.parametrize("fmt", FORMATS)
def test_random_bytes_are_the_utf8_error_with_the_line(tmp_path, fmt):
    path = tmp_path / f"random.{fmt}"
    head = b'{"text": "ok", "label": "a"}\n\n' if fmt == "jsonl" else b"ok\nfine\n"  # what reads fine alone
    path.write_bytes(head + random.Random(0).randbytes(4096))  # seeded: the first bad byte is on line 3
    fails(path, rf"random.{fmt}:3: byte 0x[0-9a-f]{{2}} is not valid UTF-8; convert the file to UTF-8")


# ------------------------------------------------------------------------------------- 2: NUL bytes, UTF-16


@pytest.mark.parametrize("fmt", FORMATS)
def test_nul_byte_says_the_file_looks_binary(tmp_path, fmt):
    path = tmp_path / f"nul.{fmt}"
    # Written raw: json.dumps would escape the NUL as \u0000, which is fine JSON.
    path.write_text(dataset(fmt, [("好酒店", "good"), ("坏@酒店", "bad")]).replace("@", "\x00"), encoding="utf-8")
    line = 2 if fmt in ("txt", "jsonl") else 3
    fails(path, rf"nul.{fmt}:{line}: NUL byte \(0x00\) in the text; the file looks binary")


@pytest.mark.parametrize("fmt", FORMATS)
def test_utf16_files(tmp_path, fmt):
    text = dataset(fmt, ROWS)
    with_bom = tmp_path / f"bom16.{fmt}"
    with_bom.write_bytes(text.encode("utf-16"))  # starts with the byte-order mark FF FE
    fails(with_bom, rf"bom16.{fmt}:1: the file is UTF-16; convert it to UTF-8")
    without = tmp_path / f"le16.{fmt}"
    # No mark: ASCII in UTF-16 is valid UTF-8, with a NUL after every character.
    without.write_bytes(dataset(fmt, [("good hotel", "good"), ("bad hotel", "bad")]).encode("utf-16-le"))
    fails(without, rf"le16.{fmt}:1: NUL byte \(0x00\) in the text; the file looks binary \(or UTF-16\)")


def test_nul_byte_in_config_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "hidden_size": 64,\n  "x": "\x00"\n}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"config.json:3: NUL byte") as e:
        BertConfig.from_json(path)
    one_line(e.value, path)


# ------------------------------------------------------------------------------------- 3, 4: BOM and CRLF


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bom, newline", [(True, "\n"), (False, "\r\n"), (True, "\r\n")], ids=["bom", "crlf", "both"])
def test_bom_and_crlf_parse(tmp_path, fmt, bom, newline):
    path = tmp_path / f"data.{fmt}"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + dataset(fmt, ROWS, newline).encode())
    expected = [(t, None) for t, _ in ROWS] if fmt == "txt" else ROWS
    assert parsed(path) == expected
    if fmt != "txt":
        assert [e.line for e in read(path)] == ([1, 2] if fmt == "jsonl" else [2, 3])


def test_crlf_csv_with_a_quoted_newline_has_no_carriage_return(tmp_path):
    path = tmp_path / "crlf.csv"
    path.write_bytes(b'text,label\r\n"two\r\nlines",a\r\nok,b \r\n')
    examples = read_labelled(path)
    assert [(e.text, e.label, e.line) for e in examples] == [("two\nlines", "a", 2), ("ok", "b", 4)]


# ------------------------------------------------------------------------------------- 5: one huge line


def write_big(path: Path, head: bytes, fill: bytes, tail: bytes) -> None:
    """head, then fill repeated to BIG bytes, then tail; written a MiB at a time."""
    with path.open("wb") as f:
        f.write(head)
        for _ in range(BIG // 2**20):
            f.write(fill * (2**20 // len(fill)))
        f.write(tail)


def peak_memory(fn) -> tuple[int, str]:
    """(peak bytes Python allocated while fn ran, the DataError message it raised)."""
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as e:
            fn()
        return tracemalloc.get_traced_memory()[1], str(e.value)
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fmt", ["txt", "jsonl"])
def test_a_100mb_line_is_refused_in_bounded_memory(tmp_path, fmt):
    path = tmp_path / f"big.{fmt}"
    if fmt == "txt":
        write_big(path, b"ok\n\nfine\n", b"x", b"\nafter\n")
        length = BIG
    else:
        write_big(path, b'{"text": "ok"}\n\n{"text": "fine"}\n{"text": "', b"x", b'"}\n{"text": "after"}\n')
        length = BIG + len('{"text": ""}')
    peak, message = peak_memory(lambda: read_texts(path))
    what = "a text" if fmt == "txt" else "a line"
    assert message.startswith(f"{path}:4: {what} of {length:,} characters is longer than the "), message
    one_line(message, path)
    assert peak < BIG / 5, f"peak {peak / 2**20:.1f} MiB reading a {BIG / 2**20:.0f} MiB line"


def test_text_cap_is_exact_and_lines_longer_than_a_read_are_whole(tmp_path):
    path = tmp_path / "cap.txt"
    wide = "好" * 400_000  # 1.2 MB: read in two pieces, a character split between them
    path.write_text(f"a\n{'x' * MAX_TEXT_CHARS}\n{wide}\n", encoding="utf-8")
    assert read_texts(path) == ["a", "x" * MAX_TEXT_CHARS, wide]
    path.write_text(f"a\n\n{'x' * (MAX_TEXT_CHARS + 1)}\n", encoding="utf-8")
    fails(path, r"cap.txt:3: a text of 1,000,001 characters is longer than the 1,000,000 the readers accept; "
                r"split it into lines or paragraphs")


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "tsv"])
def test_text_cap_in_whole_file_formats(tmp_path, fmt):
    path = tmp_path / f"long.{fmt}"
    path.write_text(dataset(fmt, [("ok", "a"), ("x" * (MAX_TEXT_CHARS + 1), "b")]), encoding="utf-8")
    line = 2 if fmt == "jsonl" else 3
    what = "a text of 1,000,001 characters is" if fmt in ("json", "jsonl") else "a field"
    fails(path, rf"long.{fmt}:{line}: {what} longer than the 1,000,000")


def test_text_pair_cap(tmp_path):
    path = write_jsonl(tmp_path / "pair.jsonl", [{"text": "a", "label": "x", "text_pair": "y" * (MAX_TEXT_CHARS + 1)}])
    fails(path, r"pair.jsonl:1: a text of 1,000,001 characters")


# ------------------------------------------------------------------------------------- 6: deep JSON


@pytest.mark.parametrize("reader", [read_texts, read_labelled])
def test_deeply_nested_json(tmp_path, reader):
    deep = "[" * 100_000
    path = tmp_path / "deep.json"
    path.write_text('[\n  "a",\n  ' + deep + "\n", encoding="utf-8")
    fails(path, r"deep.json:3: JSON nested too deeply", reader)
    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n' + deep + "\n", encoding="utf-8")
    fails(path, r"deep.jsonl:2: JSON nested too deeply", reader)


def test_deeply_nested_config_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "hidden_size": ' + "[" * 100_000 + "\n}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"config.json:2: JSON nested too deeply") as e:
        BertConfig.from_json(path)
    one_line(e.value, path)


def test_json_number_too_long_for_int(tmp_path):
    path = tmp_path / "digits.json"
    path.write_text('[\n  {"text": "a", "label": "12345"},\n  {"text": "b", "label": ' + "9" * 5000 + "}\n]",
                    encoding="utf-8")
    fails(path, r"digits.json:3: a JSON number of more than 4,300 digits")


# ------------------------------------------------------------------------------------- 7: numbers for texts


def test_numbers_where_text_is_expected(tmp_path):
    path = write_jsonl(tmp_path / "num.jsonl", [{"text": "a", "label": "x"}, {"text": 5, "label": "a"}])
    fails(path, r"num.jsonl:2: field 'text' is a number, expected a string")
    path = write_jsonl(tmp_path / "pair.jsonl", [{"text": "a", "label": "x", "text_pair": 3}])
    fails(path, r"pair.jsonl:1: field 'text_pair' is a number, expected a string")
    path = tmp_path / "numbers.json"
    path.write_text("[\n  1,\n  2\n]\n", encoding="utf-8")
    fails(path, r"numbers.json:2: expected a string or an object with a 'text' field, got a number", read_texts)


# ------------------------------------------------------------------------------------- 8: CSV quoting


def test_csv_quoted_newline_then_a_missing_column(tmp_path):
    path = tmp_path / "quoted.csv"
    path.write_text('text,label,text_pair\n"two\nlines",a,p\nok,b,q\n', encoding="utf-8")
    examples = read_labelled(path)
    assert [(e.text, e.label, e.text_pair, e.line) for e in examples] == [("two\nlines", "a", "p", 2),
                                                                          ("ok", "b", "q", 4)]
    path.write_text('text,label,text_pair\n"two\nlines",a,p\nok,b,q\nshort,c\n', encoding="utf-8")
    fails(path, r"quoted.csv:5: row has 2 fields but the header has 3")


# ------------------------------------------------------------------------------------- 9: empty labels


@pytest.mark.parametrize("name, content, pattern", [
    ("empty.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": ""}\n', r"empty.jsonl:2: label is empty"),
    ("blank.json", '[{"text": "a", "label": "x"},\n {"text": "b", "label": "  "}]', r"blank.json:2: label is empty"),
    ("null.jsonl", '{"text": "a", "label": null}\n', r"null.jsonl:1: field 'label' is null"),
    ("nan.jsonl", '{"text": "a", "label": 1.5}\n{"text": "b", "label": NaN}\n', r"nan.jsonl:2: label is nan"),
    ("empty.csv", "text,label\na,x\nb,\n", r"empty.csv:3: label is empty"),
    ("empty.tsv", "text\tlabel\na\tx\nb\t \n", r"empty.tsv:3: label is empty"),
])
def test_empty_labels(tmp_path, name, content, pattern):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    fails(path, pattern)


def test_nan_in_a_csv_is_a_class_name_not_a_number(tmp_path):
    path = tmp_path / "nan.csv"
    path.write_text("text,label\na,nan\nb,1.5\n", encoding="utf-8")
    assert [e.label for e in read_labelled(path)] == ["nan", 1.5]


# ------------------------------------------------------------------------------------- 10: too many labels


def test_a_label_per_example_is_refused(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("text,label\n" + "".join(f"t{i},id{i}\n" for i in range(50_000)), encoding="utf-8")
    with pytest.raises(DataError, match=r"ids.csv: 50,000 distinct labels in 50,000 examples, 50,000 of them "
                                        r"seen once; is the label column right\?") as e:
        check_labels(read_labelled(path), path)
    one_line(e.value, path)
    # Many classes are fine while most examples share their label with another.
    check_labels(read_labelled(write_jsonl(tmp_path / "many.jsonl", [
        {"text": f"t{i}", "label": f"c{i // 2}"} for i in range(4_000)])), "many.jsonl")


def test_train_refuses_a_label_per_example(tmp_path):
    write_jsonl(tmp_path / "scores.jsonl", [{"text": "好" * (1 + i % 5), "label": i} for i in range(2_000)])
    proc = call(TRAIN, "--task", "classify", *TINY_ARGS, "--train", "scores.jsonl", "--output", "out", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines() == ["minibert-train: error: scores.jsonl: 2,000 distinct labels in 2,000 "
                                        "examples, 2,000 of them seen once; is the label column right? (regression "
                                        "targets need a decimal point: 3.0)"]


# ------------------------------------------------------------------------------------- 11: predict --file


def predict_error(tmp_path: Path, name: str) -> str:
    proc = call(PREDICT, "--model", ZH_SMALL, "--file", name, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"minibert-predict: error: {name}:"), proc.stderr
    return lines[0]


def test_predict_file_random_bytes_and_nul(tmp_path):
    (tmp_path / "random.txt").write_bytes(b"[MASK]\n" + random.Random(0).randbytes(4096))
    assert "random.txt:2: byte 0x" in predict_error(tmp_path, "random.txt")
    (tmp_path / "nul.txt").write_bytes("好[MASK]\n坏\x00[MASK]\n".encode())
    assert "nul.txt:2: NUL byte (0x00) in the text; the file looks binary" in predict_error(tmp_path, "nul.txt")
    (tmp_path / "utf16.txt").write_bytes("好[MASK]\n".encode("utf-16"))
    assert "utf16.txt:1: the file is UTF-16; convert it to UTF-8" in predict_error(tmp_path, "utf16.txt")


def test_predict_file_with_bom_and_crlf(tmp_path):
    (tmp_path / "q.txt").write_bytes(b"\xef\xbb\xbf" + "诸葛[MASK]\r\n\r\n关[MASK]\r\n".encode())
    proc = call(PREDICT, "--model", ZH_SMALL, "--json", "--file", "q.txt", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["text"] for line in proc.stdout.splitlines()] == ["诸葛[MASK]", "关[MASK]"]


def test_predict_file_with_a_100mb_line(tmp_path):
    write_big(tmp_path / "big.txt", "诸葛[MASK]\n".encode(), b"x", b"\n")
    (tmp_path / "nul.txt").write_bytes(b"\x00\n")
    predict_error(tmp_path, "nul.txt")  # the command's imports, before memory is traced
    tracemalloc.start()
    try:
        message = predict_error(tmp_path, "big.txt")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message.endswith(f"big.txt:2: a text of {BIG:,} characters is longer than the 1,000,000 the readers "
                            "accept; split it into lines or paragraphs"), message
    assert peak < BIG / 5, f"peak {peak / 2**20:.1f} MiB reading a {BIG / 2**20:.0f} MiB line"


@pytest.mark.slow
def test_predict_script_exits_2_on_a_nul_byte(tmp_path):
    (tmp_path / "nul.txt").write_bytes("好[MASK]\n坏\x00[MASK]\n".encode())
    proc = subprocess.run([sys.executable, str(ROOT / "predict.py"), "--model", ZH_SMALL, "--file", "nul.txt"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines() == ["minibert-predict: error: nul.txt:2: NUL byte (0x00) in the text; the "
                                        "file looks binary (or UTF-16); give a UTF-8 text file"]


# ------------------------------------------------------------------------------------- 12: a closed stdout


@pytest.mark.slow
def test_predict_into_a_closed_pipe_exits_quietly(tmp_path):
    # 40 results of 200 candidates each, 400 kB: far more than a pipe holds (64 kB on Linux), so
    # predict.py is still writing when the reader goes away.
    (tmp_path / "q.txt").write_text("三国人物诸葛[MASK]\n" * 40, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(ROOT / "predict.py"), "--model", ZH_SMALL, "--json", "--top-k", "200",
                             "--file", "q.txt"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does after its line
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, stderr
    assert json.loads(first)["text"] == "三国人物诸葛[MASK]"
    assert "Traceback" not in stderr and "Exception ignored" not in stderr and "BrokenPipe" not in stderr, stderr


def test_csv_quote_left_open_is_an_error_not_the_rest_of_the_file(tmp_path):
    # The open quote sits in the last column, so the row would otherwise have the right field count
    # and silently swallow the three lines after it as one label.
    path = tmp_path / "open.csv"
    path.write_text('text,label\ngood,pos\nbad,"neg\nx,pos\ny,neg\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_labelled(path)
    assert str(e.value) == (f"{path}:3: a quote opened in this row is never closed; close it, or write a quote "
                            'inside a field as ""')
