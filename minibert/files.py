"""Reading text and JSON files, with errors that fit on one line: the file, the line, the fix.

Imports no torch: config.py and the data readers use it before torch is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark that Windows editors write


def read_text(path: str | Path, error: type[Exception] = ValueError, newlines: bool = False) -> str:
    """The file's UTF-8 text, without a leading byte-order mark.

    Line endings stay as they are, or with newlines=True become "\n" from "\r\n" and "\r" (as
    Python's text mode reads them). Bytes that are not UTF-8 raise
    `error("file:line: byte 0xNN is not valid UTF-8; convert ...")`.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw.startswith(BOM):
        raw = raw[len(BOM):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise error(f"{path}:{line}: byte 0x{raw[e.start]:02x} is not valid UTF-8; convert the file to UTF-8 "
                    f"(e.g. iconv -f GBK -t UTF-8 {path.name} > fixed{path.suffix})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n") if newlines else text


def read_json(path: str | Path, what: str = "", error: type[Exception] = ValueError) -> object:
    """The parsed contents of a JSON file; invalid JSON raises `error("file:line: {what}not valid JSON (...)")`.

    what: words put before "not valid JSON" (e.g. "config is ").
    """
    text = read_text(path, error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}: {what}not valid JSON ({e.msg})") from None
