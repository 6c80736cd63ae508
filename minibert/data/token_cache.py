"""The token cache: a masked-LM corpus tokenized once into memory-mapped arrays, so that pre-training
reads corpora larger than memory, starts in seconds, and resumes or starts a new phase without
tokenizing again.

Which data takes this path is decided here and nowhere else (`uses_token_cache`): masked-LM training
data given as .txt files or folders of them. JSON/JSONL files (fine-tuning sets of a few thousand
examples) and evaluation files are read into memory (features.load_mlm_features).

Layout, one folder per cache: <cache dir>/<key>/
    part-00000.ids     the token ids of the part's lines, [CLS]/[SEP] left out: uint16 while the
                       vocabulary's ids fit (at most 65,536 of them), else uint32; checked, never cast
    part-00000.lens    uint32, tokens per line (a line of no tokens counts: it is [CLS] [SEP])
    part-00000.starts  uint8, whole-word caches only: 1 where a whitespace-separated word begins
    part-00000.json    the part's record, written after its arrays: where in the corpus it starts and
                       ends (file, byte, line), its counts, and the CRC-32 of each array
    cache.json         written last: the cache is complete
The key is a SHA-256 over the cache format, the tokenizer's fingerprint (vocabulary and normalizer),
whole-word or not, and the bytes of every file in order; not their names or dates. A changed corpus or
vocabulary gets a new folder, an unchanged one is found again by every run, phase, resume and rank.
The cache does not depend on --max-length: lines are cut and blocks made when they are read.

Preparation streams: a part holds about PART_BYTES of text, tokenized PART_BATCH lines at a time and
written as it goes, so memory does not grow with the corpus. Each array goes to a temporary name and
is renamed, the part's record after them: a killed preparation keeps its finished parts and goes on
after the last good one, and a part whose record is missing, or whose arrays differ from their
recorded size or CRC-32, is written again, never read. A lock in the folder makes a second process
(another run, another rank) wait for the first to finish.

Reading (no torch): `BlockDataset` gives the --group-texts blocks ([CLS] + max_length - 2 tokens of
the running text + [SEP]) and `LineDataset` one example per line, cut to max_length; both are
sequences of the same feature dicts as features.py makes, with `lengths` for the sampler, so the
collators, the sampler and the trainer work on them unchanged and draw the same batches.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from collections.abc import Callable, Sequence
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from ..files import read_lines_from, replace_atomically
from ..lock import LockError, OutputLock
from .readers import MAX_TEXT_CHARS, DataError

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

FORMAT = 1  # bump when the layout or what goes into the arrays changes: old caches are then not found
PART_BYTES = 64 << 20  # text bytes per part: what a killed preparation loses at most
PART_BATCH = 4096  # lines tokenized at a time: the memory a preparation holds
CACHE_ENV = "MINIBERT_CACHE"  # overrides the default cache folder
COMPLETE = "cache.json"
CACHED_SUFFIXES = (".txt",)
ARRAYS = {"ids": None, "lens": np.uint32, "starts": np.uint8}  # None: the cache's id dtype


def default_cache_dir() -> Path:
    """$MINIBERT_CACHE, else $XDG_CACHE_HOME/minibert/tokens, else ~/.cache/minibert/tokens."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "minibert" / "tokens"


def uses_token_cache(paths: Sequence[Path]) -> bool:
    """Whether masked-LM training data goes through the token cache: every path a folder or a .txt file."""
    return all(p.is_dir() or p.suffix.lower() in CACHED_SUFFIXES for p in paths)


def corpus_files(paths: Sequence[Path]) -> list[Path]:
    """The .txt files of `paths` in order: a file as given, a folder's .txt files (searched recursively)
    sorted by path."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in CACHED_SUFFIXES and f.is_file())
            if not found:
                raise DataError(f"{p}: the folder holds no .txt file; give a folder of .txt files (one text per "
                                "line) or the files themselves")
            files += found
        elif not p.is_file():
            raise DataError(f"{p}: training file not found")
        else:
            files.append(p)
    return files


def id_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (vocab_size <= 65,536), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def cache_key(files: Sequence[Path], tokenizer: Tokenizer, whole_word_mask: bool, progress: bool = False) -> str:
    """SHA-256 (hex) of the format, the tokenizer, the whole-word setting and the files' bytes in order."""
    h = hashlib.sha256(json.dumps({"format": FORMAT, "tokenizer": tokenizer.fingerprint(),
                                   "whole_word_mask": whole_word_mask, "files": len(files)}).encode())
    total = sum(f.stat().st_size for f in files)
    bar = tqdm(total=total, desc="hashing the corpus", unit="B", unit_scale=True, leave=False, dynamic_ncols=True,
               disable=not progress or total < 256 << 20)
    for f in files:
        h.update(f"{f.stat().st_size}:".encode())  # file boundaries are part of the content
        with f.open("rb") as fh:
            while chunk := fh.read(8 << 20):
                h.update(chunk)
                bar.update(len(chunk))
    bar.close()
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- writing


def _part_name(folder: Path, k: int, what: str) -> Path:
    return folder / f"part-{k:05d}.{what}"


def _crc(path: Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def _read_record(folder: Path, k: int) -> dict | None:
    try:
        record = json.loads(_part_name(folder, k, "json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _part_ok(folder: Path, k: int, record: dict | None, start: list, dtype: np.dtype) -> bool:
    """Whether part k exists whole: its record starts at `start` and every array has its size and CRC-32."""
    if record is None or record.get("format") != FORMAT or record.get("start") != start:
        return False
    for what, crc in record.get("crc", {}).items():
        path = _part_name(folder, k, what)
        itemsize = (dtype if ARRAYS[what] is None else np.dtype(ARRAYS[what])).itemsize
        count = record["lines"] if what == "lens" else record["tokens"]
        try:
            if path.stat().st_size != count * itemsize or _crc(path) != crc:
                return False
        except OSError:
            return False
    return True


class _PartWriter:
    """One part's arrays, each written to a temporary file as batches come and renamed at the end."""

    def __init__(self, folder: Path, k: int, whole_word_mask: bool, dtype: np.dtype) -> None:
        self.folder, self.k, self.dtype = folder, k, dtype
        self.names = ["ids", "lens"] + (["starts"] if whole_word_mask else [])
        self.files = {w: _part_name(folder, k, w + ".tmp").open("wb") for w in self.names}
        self.crc = dict.fromkeys(self.names, 0)
        self.tokens = self.lines = self.multi_word_lines = 0

    def write(self, what: str, array: np.ndarray) -> None:
        data = array.tobytes()
        self.files[what].write(data)
        self.crc[what] = zlib.crc32(data, self.crc[what])

    def add(self, encodings: list, texts: list[str], whole_word_mask: bool) -> None:
        lens = np.fromiter((len(e.ids) for e in encodings), np.uint32, len(encodings))
        n = int(lens.sum())
        ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), np.int64, n)
        if n and int(ids.max()) > np.iinfo(self.dtype).max:  # never cast an id into a wrong one
            raise DataError(f"token id {int(ids.max())} does not fit the cache's {self.dtype.name}; the tokenizer "
                            "has more ids than its vocabulary size says")
        self.write("ids", ids.astype(self.dtype))
        self.write("lens", lens)
        if whole_word_mask:
            words = np.fromiter(chain.from_iterable(e.word_ids for e in encodings), np.int64, n)
            starts = np.ones(n, np.uint8)
            starts[1:] = words[1:] != words[:-1]
            starts[(np.cumsum(lens) - lens)[lens > 0]] = 1  # every line starts a word
            self.write("starts", starts)
            self.multi_word_lines += sum(len(t) > 1 for t in texts)
        self.tokens += n
        self.lines += len(encodings)

    def finish(self, start: list, end: list, text_bytes: int) -> dict:
        for what, f in self.files.items():
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(_part_name(self.folder, self.k, what + ".tmp"), _part_name(self.folder, self.k, what))
        record = {"format": FORMAT, "start": start, "end": end, "tokens": self.tokens, "lines": self.lines,
                  "bytes": text_bytes, "multi_word_lines": self.multi_word_lines, "crc": self.crc}
        _write_json(_part_name(self.folder, self.k, "json"), record)
        return record

    def abandon(self) -> None:
        for what, f in self.files.items():
            f.close()
            _part_name(self.folder, self.k, what + ".tmp").unlink(missing_ok=True)


def _write_json(path: Path, value: dict) -> None:
    replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8"))


def _build_part(folder: Path, k: int, files: Sequence[Path], start: list, tokenizer: Tokenizer,
                whole_word_mask: bool, dtype: np.dtype, bar) -> dict:
    """Tokenize the lines from `start` ([file index, byte offset, lines before]) until PART_BYTES of text
    are read or the corpus ends, into part k; its record."""
    writer = _PartWriter(folder, k, whole_word_mask, dtype)
    fi, offset, line_no = start
    batch: list[str] = []
    done = pending = 0  # bytes of text read in this part, and not yet shown on the bar

    def flush() -> None:
        nonlocal pending
        inputs = [t.split() for t in batch] if whole_word_mask else batch
        writer.add(tokenizer.encode_content(inputs, is_pretokenized=whole_word_mask), inputs, whole_word_mask)
        batch.clear()
        bar.update(pending)
        pending = 0

    try:
        while fi < len(files) and done < PART_BYTES:
            for n, line, end in read_lines_from(files[fi], DataError, MAX_TEXT_CHARS, "a text", offset, line_no):
                done, pending, offset, line_no = done + end - offset, pending + end - offset, end, n
                text = line.strip()  # as read_texts: stripped, blank lines skipped
                if text:
                    batch.append(text)
                    if len(batch) == PART_BATCH:
                        flush()
                if done >= PART_BYTES:
                    break
            else:
                fi, offset, line_no = fi + 1, 0, 0
        if batch:
            flush()
        bar.update(pending)
        end_at = [fi, offset, line_no] if fi < len(files) else [len(files), 0, 0]
        return writer.finish(start, end_at, done)
    except BaseException:
        writer.abandon()
        raise


def _wait_for_lock(folder: Path, log: Callable[[str], None]) -> OutputLock:
    """The folder's lock, waiting while another live process holds it."""
    said = False
    while True:
        lock = OutputLock(folder)
        try:
            lock.__enter__()
            return lock
        except LockError as e:
            if not said:
                log(f"waiting for another process preparing the token cache {folder} ({e})")
                said = True
            time.sleep(1.0)


def prepare_cache(paths: Sequence[Path], tokenizer: Tokenizer, whole_word_mask: bool = False,
                  cache_dir: str | Path | None = None, progress: bool = False,
                  log: Callable[[str], None] = lambda _: None) -> Path:
    """The folder of the complete token cache of `paths` (.txt files or folders), prepared first if there
    is none, or finished if a preparation was cut short; see the module docstring."""
    files = corpus_files(paths)
    key = cache_key(files, tokenizer, whole_word_mask, progress)
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / key[:32]
    if _complete(folder):
        return folder
    try:
        return _prepare(folder, key, paths, files, tokenizer, whole_word_mask, progress, log)
    except OSError as e:
        if isinstance(e, FileNotFoundError) and e.filename and not str(e.filename).startswith(str(folder)):
            raise  # a corpus file removed while it was read
        raise DataError(f"{folder}: cannot write the token cache ({e.strerror or e}); free some space or give "
                        "another --cache-dir") from None


def _prepare(folder: Path, key: str, paths: Sequence[Path], files: list[Path], tokenizer: Tokenizer,
             whole_word_mask: bool, progress: bool, log: Callable[[str], None]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lock = _wait_for_lock(folder, log)
    try:
        if _complete(folder):  # another process finished it while this one waited
            return folder
        dtype = id_dtype(tokenizer.vocab_size)
        total = sum(f.stat().st_size for f in files)
        bar = tqdm(total=total, desc="tokenizing into the cache", unit="B", unit_scale=True, dynamic_ncols=True,
                   disable=not progress)
        parts, start, k = [], [0, 0, 0], 0
        while start[0] < len(files):
            record = _read_record(folder, k)
            if _part_ok(folder, k, record, start, dtype):
                bar.update(record["bytes"])
            else:
                record = _build_part(folder, k, files, start, tokenizer, whole_word_mask, dtype, bar)
            parts.append({"tokens": record["tokens"], "lines": record["lines"],
                          "multi_word_lines": record["multi_word_lines"]})
            start, k = record["end"], k + 1
        bar.close()
        for stale in folder.glob("part-*"):  # parts of an earlier, longer layout
            if int(stale.name[5:10]) >= k:
                stale.unlink()
        lines = sum(p["lines"] for p in parts)
        if not lines:
            raise DataError(f"{', '.join(map(str, paths))}: no texts found (only empty lines); expected at least one")
        _write_json(folder / COMPLETE, {
            "format": FORMAT, "key": key, "dtype": dtype.name, "vocab_size": tokenizer.vocab_size,
            "whole_word_mask": whole_word_mask, "files": [{"path": str(f), "bytes": f.stat().st_size} for f in files],
            "bytes": total, "tokens": sum(p["tokens"] for p in parts), "lines": lines,
            "multi_word_lines": sum(p["multi_word_lines"] for p in parts), "parts": parts})
        return folder
    finally:
        lock.__exit__(None, None, None)


def _complete(folder: Path) -> bool:
    """Whether `folder` holds a complete cache whose every part is whole; a damaged one loses its
    completion marker, so that the next preparation rebuilds what is damaged."""
    try:
        meta = json.loads((folder / COMPLETE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    dtype, start = np.dtype(meta["dtype"]), [0, 0, 0]
    for k in range(len(meta["parts"])):
        record = _read_record(folder, k)
        if not _part_ok(folder, k, record, start, dtype):
            (folder / COMPLETE).unlink(missing_ok=True)
            return False
        start = record["end"]
    return True


# ---------------------------------------------------------------------------------------------- reading


def _map(path: Path, dtype, count: int) -> np.ndarray:
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,)) if count else np.zeros(0, dtype)


class TokenCache:
    """A complete cache, its arrays memory-mapped: nothing is read until it is used."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / COMPLETE).read_text(encoding="utf-8"))
        dtype = np.dtype(self.meta["dtype"])
        parts = self.meta["parts"]
        self.whole_word_mask = bool(self.meta["whole_word_mask"])
        self.ids = [_map(_part_name(self.folder, k, "ids"), dtype, p["tokens"]) for k, p in enumerate(parts)]
        self.lens = [_map(_part_name(self.folder, k, "lens"), np.uint32, p["lines"]) for k, p in enumerate(parts)]
        self.starts = [_map(_part_name(self.folder, k, "starts"), np.uint8, p["tokens"]) if self.whole_word_mask
                       else None for k, p in enumerate(parts)]
        self.part_tokens = np.cumsum([0] + [p["tokens"] for p in parts])  # where each part starts in the stream
        self.part_lines = np.cumsum([0] + [p["lines"] for p in parts])
        self._line_offsets: list[np.ndarray] | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.part_tokens[-1])

    def span(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Tokens start..stop of the whole corpus (and their word starts), across parts."""
        ids, starts = [], []
        k = int(np.searchsorted(self.part_tokens, start, side="right")) - 1
        while start < stop:
            a, b = start - int(self.part_tokens[k]), min(stop, int(self.part_tokens[k + 1])) - int(self.part_tokens[k])
            ids.append(self.ids[k][a:b])
            if self.whole_word_mask:
                starts.append(self.starts[k][a:b])
            start, k = start + b - a, k + 1
        if len(ids) == 1:
            return ids[0], starts[0] if starts else None
        return np.concatenate(ids), np.concatenate(starts) if starts else None

    def line_lengths(self) -> np.ndarray:
        """Tokens per line, all lines (uint32)."""
        return np.concatenate(self.lens) if self.lens else np.zeros(0, np.uint32)

    def line(self, i: int, limit: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The first `limit` tokens of line i (and their word starts)."""
        if self._line_offsets is None:
            self._line_offsets = [np.concatenate([[0], np.cumsum(lens, dtype=np.int64)]) for lens in self.lens]
        k = int(np.searchsorted(self.part_lines, i, side="right")) - 1
        j = i - int(self.part_lines[k])
        a = int(self._line_offsets[k][j])
        b = min(int(self._line_offsets[k][j + 1]), a + limit)
        return self.ids[k][a:b], self.starts[k][a:b] if self.whole_word_mask else None


class _CachedDataset:
    """A sequence of features read from a TokenCache; `lengths` (tokens per feature) for the sampler."""

    lengths: np.ndarray

    def __init__(self, cache: TokenCache, max_length: int, cls_token_id: int, sep_token_id: int) -> None:
        if max_length < 3:
            raise ValueError(f"max_length={max_length} leaves no room for text next to [CLS]/[SEP]; use at least 3")
        self.cache, self.max_length = cache, max_length
        self.cls, self.sep = cls_token_id, sep_token_id

    def __len__(self) -> int:
        return len(self.lengths)

    def _tokens(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def _words(self, starts: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"feature {i} of {len(self)}")
        ids, starts = self._tokens(i % len(self))
        n = len(ids)
        out = np.empty(n + 2, np.int32)
        out[0], out[1:-1], out[-1] = self.cls, ids, self.sep
        feature = {"input_ids": out, "token_type_ids": np.zeros(n + 2, np.int8)}
        if starts is not None:
            words = np.full(n + 2, -1, np.int32)
            if n:
                words[1:-1] = self._words(starts)
            feature["word_ids"] = words
        return feature

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def take(self, indices: Sequence[int]) -> _Subset:
        return _Subset(self, np.asarray(indices, dtype=np.int64))


class BlockDataset(_CachedDataset):
    """The --group-texts blocks: the corpus's tokens end to end, cut every max_length - 2 tokens, each
    block [CLS] ... [SEP], as features.group_texts makes them (a word cut by a block boundary becomes
    two words)."""

    def __init__(self, cache: TokenCache, max_length: int, cls_token_id: int, sep_token_id: int) -> None:
        super().__init__(cache, max_length, cls_token_id, sep_token_id)
        self.block = max_length - 2
        n = -(-cache.num_tokens // self.block)
        self.lengths = np.full(n, max_length, np.int32)
        if n:
            self.lengths[-1] = cache.num_tokens - (n - 1) * self.block + 2

    def _tokens(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        start = i * self.block
        return self.cache.span(start, min(start + self.block, self.cache.num_tokens))

    def _words(self, starts: np.ndarray) -> np.ndarray:
        return np.cumsum(starts, dtype=np.int32) - np.int32(starts[0])


class LineDataset(_CachedDataset):
    """One feature per line: [CLS] + its first max_length - 2 tokens + [SEP], as tokenize_texts makes them."""

    def __init__(self, cache: TokenCache, max_length: int, cls_token_id: int, sep_token_id: int) -> None:
        super().__init__(cache, max_length, cls_token_id, sep_token_id)
        self.lengths = np.minimum(cache.line_lengths(), max_length - 2).astype(np.int32) + 2

    def _tokens(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self.cache.line(i, self.max_length - 2)

    def _words(self, starts: np.ndarray) -> np.ndarray:
        return np.cumsum(starts, dtype=np.int32) - 1


class _Subset:
    """Some features of a cached dataset, by index (what --eval-split keeps for training)."""

    def __init__(self, dataset: _CachedDataset, indices: np.ndarray) -> None:
        self.dataset, self.indices = dataset, indices
        self.lengths = dataset.lengths[indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.dataset[int(self.indices[i])]

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def cached_features(cache: TokenCache, max_length: int, group: bool, cls_token_id: int,
                    sep_token_id: int) -> _CachedDataset:
    """The training features of a cache: --group-texts blocks, or one per line."""
    kind = BlockDataset if group else LineDataset
    return kind(cache, max_length, cls_token_id, sep_token_id)
