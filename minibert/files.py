"""Reading text and JSON files, with errors that fit on one line: the file, the line, the fix; and
writing a file so that a reader never finds half of it (replace_atomically).

Text is UTF-8; a leading UTF-8 byte-order mark is dropped. A NUL byte is an error, not a character:
text files hold none (BERT tokenizers would drop it silently), while binary and UTF-16 files are full
of them; a file that starts with a UTF-16 byte-order mark is named as such. read_lines streams a file
one line at a time with a cap on a line's characters, so a huge line costs memory up to the cap, not
its size. find_model turns a Hugging Face name into its snapshot in the local Hugging Face cache
(never the network), for the model and tokenizer loaders alike. Imports no torch: config.py and the
data readers use it before torch is needed.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark that Windows editors write
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # little- and big-endian (also the start of UTF-32's)
CHUNK = 1 << 20  # bytes read at a time; a line longer than this is read in pieces
NESTING = 100  # JSON deeper than this is reported from where it passes this depth


def _not_utf8(path: Path, line: int, byte: int) -> str:
    return (f"{path}:{line}: byte 0x{byte:02x} is not valid UTF-8; convert the file to UTF-8 "
            f"(e.g. iconv -f GBK -t UTF-8 {path.name} > fixed{path.suffix})")


def _nul(path: Path, line: int) -> str:
    return f"{path}:{line}: NUL byte (0x00) in the text; the file looks binary (or UTF-16); give a UTF-8 text file"


def _check_start(path: Path, head: bytes, error: type[Exception]) -> None:
    if head.startswith(UTF16_BOMS):
        raise error(f"{path}:1: the file is UTF-16; convert it to UTF-8 "
                    f"(e.g. iconv -f UTF-16 -t UTF-8 {path.name} > fixed{path.suffix})")


def read_text(path: str | Path, error: type[Exception] = ValueError, newlines: bool = False) -> str:
    """The file's UTF-8 text, without a leading byte-order mark.

    Line endings stay as they are, or with newlines=True become "\n" from "\r\n" and "\r" (as
    Python's text mode reads them). Bytes that are not UTF-8 raise
    `error("file:line: byte 0xNN is not valid UTF-8; convert ...")`; so do a NUL byte and UTF-16.
    """
    path = Path(path)
    raw = path.read_bytes()
    _check_start(path, raw, error)
    if raw.startswith(BOM):
        raw = raw[len(BOM):]
    nul = raw.find(b"\x00")  # in UTF-8, a 0x00 byte is only ever the NUL character
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if nul < 0 or e.start < nul:  # the first problem in the file is the one to report
            raise error(_not_utf8(path, raw.count(b"\n", 0, e.start) + 1, raw[e.start])) from None
    if nul >= 0:
        raise error(_nul(path, raw.count(b"\n", 0, nul) + 1))
    return text.replace("\r\n", "\n").replace("\r", "\n") if newlines else text


def _too_long(path: Path, line: int, what: str, length: int, max_chars: int) -> str:
    return (f"{path}:{line}: {what} of {length:,} characters is longer than the {max_chars:,} the readers accept; "
            "split it into lines or paragraphs")


def _long_line(f, piece: bytes, path: Path, n: int, error: type[Exception], max_chars: int | None,
               what: str) -> str:
    """Line n, of which one read gave `piece`, decoded a piece at a time; a line of more than max_chars
    characters is counted to its end and raised, never held whole."""
    decoder = codecs.getincrementaldecoder("utf-8")()  # a character may be split between two pieces
    parts, count, tail = [], 0, ""
    while True:
        end = not piece or piece.endswith(b"\n")
        try:
            part = decoder.decode(piece, final=end)
        except UnicodeDecodeError as e:
            raise error(_not_utf8(path, n, e.object[e.start])) from None
        count, tail = count + len(part), (tail + part)[-2:]
        over = max_chars is not None and count > max_chars + 2  # too long whatever its line ending
        if over:
            parts.clear()  # keep counting, hold nothing
        else:
            parts.append(part)
        if end:
            break
        piece = f.readline(CHUNK)
    if over:
        raise error(_too_long(path, n, what, count - len(tail) + len(tail.rstrip("\r\n")), max_chars))
    return "".join(parts)


def read_lines(path: str | Path, error: type[Exception] = ValueError, max_chars: int | None = None,
               what: str = "a line") -> Iterator[tuple[int, str]]:
    """(line number, line) for each line of a UTF-8 file, read one line at a time.

    Lines end at "\n" only (str.splitlines() would also break at \x1c, \u2028 etc. and throw off the
    line numbers); the "\r" of a CRLF ending is dropped. Errors are read_text's, and a line of more
    than max_chars characters raises `error("file:line: {what} of N characters is longer than ...")`
    after it is counted in pieces, never held whole.
    """
    for n, line, _ in read_lines_from(path, error, max_chars, what):
        yield n, line


def read_lines_from(path: str | Path, error: type[Exception] = ValueError, max_chars: int | None = None,
                    what: str = "a line", offset: int = 0, lines_before: int = 0) -> Iterator[tuple[int, str, int]]:
    """read_lines from byte `offset` (the start of a line, after `lines_before` lines), yielding (line
    number, line, byte offset just past it): a reader that stopped can continue where it was."""
    path = Path(path)
    with path.open("rb") as f:
        f.seek(offset)
        n = lines_before
        while piece := f.readline(CHUNK):
            n += 1
            if n == 1:
                _check_start(path, piece, error)
                piece = piece.removeprefix(BOM)
            if piece.endswith(b"\n"):  # the whole line in one read, as for all but huge lines
                try:
                    line = piece.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise error(_not_utf8(path, n, piece[e.start])) from None
            else:
                line = _long_line(f, piece, path, n, error, max_chars, what)
            line = line.removesuffix("\n").removesuffix("\r")
            if max_chars is not None and len(line) > max_chars:
                raise error(_too_long(path, n, what, len(line), max_chars))
            if "\x00" in line:
                raise error(_nul(path, n))
            yield n, line, f.tell()


_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[{]|[\]}]|\d+')


def _json_line(text: str, deep: bool) -> int:
    """The line where `text` first nests deeper than NESTING (deep) or first has a number too long for
    int(), outside strings; json reports neither position."""
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        c = m.group()[0]
        depth += 1 if c in "[{" else -1 if c in "]}" else 0
        if (depth > NESTING if deep else c.isdigit() and len(m.group()) > sys.get_int_max_str_digits()):
            return text.count("\n", 0, m.start()) + 1
    return 1


def parse_json(text: str, path: Path, error: type[Exception] = ValueError, line: int | None = None) -> object:
    """json.loads(text); it raises JSONDecodeError as json does, and the rest as one-line errors: nesting
    deeper than the interpreter's stack (json's RecursionError) and integers too long for int().

    line: where text starts in the file (a .jsonl line); None for a whole file, where it is found.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise error(f"{path}:{line or _json_line(text, True)}: JSON nested too deeply (over {NESTING} levels of "
                    "[ or {); check that this is the file you meant") from None
    except ValueError:
        raise error(f"{path}:{line or _json_line(text, False)}: a JSON number of more than "
                    f"{sys.get_int_max_str_digits():,} digits; write it as a string") from None


def read_json(path: str | Path, what: str = "", error: type[Exception] = ValueError) -> object:
    """The parsed contents of a JSON file; invalid JSON raises `error("file:line: {what}not valid JSON (...)")`.

    what: words put before "not valid JSON" (e.g. "config is ").
    """
    text = read_text(path, error)
    try:
        return parse_json(text, Path(path), error)
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}: {what}not valid JSON ({e.msg})") from None


def replace_atomically(path: str | Path, write: Callable[[Path], object]) -> None:
    """write(tmp) into `path`.tmp next to `path`, then rename it over `path`: a full disk or a signal
    mid-write leaves the previous file as it was and no half-written one behind."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def hf_cache_dir() -> Path:
    """Where huggingface_hub keeps downloaded models: $HF_HUB_CACHE, else $HF_HOME/hub, else
    ~/.cache/huggingface/hub (the rules of huggingface_hub.constants)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = Path(os.environ["HF_HOME"]).expanduser() if os.environ.get("HF_HOME") else \
        Path("~/.cache/huggingface").expanduser()
    return home / "hub"


def find_model(name: str | Path) -> Path:
    """A model folder: `name` itself when it is a folder, else the snapshot of Hub model `name`
    (ORG/NAME) in the local Hugging Face cache, the one refs/main names, else the newest. Nothing is
    downloaded. Raises FileNotFoundError saying where it looked and how to get the model."""
    path = Path(name)
    if path.is_dir() or not HUB_NAME.fullmatch(str(name)):
        if not path.is_dir():
            raise FileNotFoundError(f"{name}: model folder not found")
        return path
    repo = hf_cache_dir() / ("models--" + str(name).replace("/", "--"))
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    if ref.is_file():
        main = snapshots / ref.read_text(encoding="utf-8").strip()
        if main.is_dir():
            return main
    found = [d for d in snapshots.iterdir() if d.is_dir()] if snapshots.is_dir() else []
    if found:
        return max(found, key=lambda d: d.stat().st_mtime)
    raise FileNotFoundError(
        f"{name}: model folder not found, and no Hugging Face model of that name in the cache ({repo}); pass a "
        f"model folder, or for a Hub model run `huggingface-cli download {name}` on a machine with network and "
        f"copy its cache here (HF_HUB_CACHE or HF_HOME say where it is)")
