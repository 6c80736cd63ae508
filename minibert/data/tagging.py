"""Token classification data: tagged files -> sentences, and the tag schemes they are written in.

Readers (each returns a list of TaggedSentence; malformed input raises DataError "file:line: ...; fix"):
    read_conll(path)    one token and its tag per line, tab- or space-separated (token first, tag in the
                        last column: CoNLL-2003's four columns read too), a blank line between sentences,
                        -DOCSTART- lines skipped; as MSRA / People's Daily NER and CoNLL-2003 ship.
    read_json_tagged(path, label_names=...)   .json/.jsonl records, each either
                        {"tokens": [...], "tags": [...]} (or "ner_tags"), the Hugging Face datasets
                        shape: tags as strings, or as integer ids with their names given in label_names;
                        or {"text": ..., "entities": [[start, end, "PER"], ...]} (or {"start", "end",
                        "label"} objects), character offsets as annotation tools export them, end
                        exclusive, turned into tokens (split_text) tagged in the chosen scheme.
    read_tagged(path)   either, by the file's extension.

Tag schemes (SCHEMES): IOB2 (B-X starts an entity, I-X continues it, O is outside), BIOES (also E-X
ends one, S-X is a one-token entity) and BMES, word segmentation's tags: BIOES without types or O (B, M,
E, S). Entities are decoded as seqeval's strict mode decodes them (`spans`): an entity is B-X I-X*
(IOB2) or B-X I-X* E-X | S-X (BIOES); a tag that fits no entity, such as an I-X after O, is dropped and
counted (`ill_formed`), not read as the start of an entity as conlleval's lenient rule would.

Features (windows of token ids, sub-word alignment) are data/tag_features.py's.

Imports no torch.
"""

from __future__ import annotations

import bisect
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import read_lines
from .readers import DataError, _json_records, _json_type, _text

SCHEMES = ("IOB2", "BIOES", "BMES")
OUTSIDE = "O"
DOCSTART = "-DOCSTART-"  # CoNLL-2003's document separator, a line (or a one-token record) of its own
JSON_SUFFIXES = (".json", ".jsonl")
MAX_LINE_CHARS = 100_000  # one token and its columns: anything longer is not a CoNLL line
# The prefixes a scheme's tags may carry; IOB2 and BIOES tags are PREFIX-TYPE (or O), BMES tags the bare prefix.
_PREFIXES = {"IOB2": ("B", "I"), "BIOES": ("B", "I", "E", "S"), "BMES": ("B", "M", "E", "S")}
_FORMS = {"IOB2": "O, B-TYPE, I-TYPE", "BIOES": "O, B-TYPE, I-TYPE, E-TYPE, S-TYPE", "BMES": "B, M, E, S"}


@dataclass
class TaggedSentence:
    tokens: list[str]
    tags: list[str]
    line: int  # where the sentence starts in its file, for error messages
    one_token_per_line: bool = False  # True for CoNLL files: token i sits on line + i

    def token_line(self, i: int) -> int:
        return self.line + i if self.one_token_per_line else self.line


# ----------------------------------------------------------------------------- tag schemes


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"tag scheme {scheme!r}: use one of {', '.join(SCHEMES)}")
    return scheme


def tag_error(tag: str, scheme: str) -> str | None:
    """Why `tag` is not a tag of `scheme`, or None when it is."""
    if scheme == "BMES":
        return None if tag in _PREFIXES["BMES"] else f"tag {tag!r} is not a tag of the BMES scheme ({_FORMS['BMES']})"
    if tag == OUTSIDE:
        return None
    prefix, dash, kind = tag.partition("-")
    if not dash or prefix not in _PREFIXES[scheme] or not kind or kind != kind.strip():
        return f"tag {tag!r} is not a tag of the {scheme} scheme ({_FORMS[scheme]})"
    return None


def split_tag(tag: str) -> tuple[str, str]:
    """"B-PER" -> ("B", "PER"); "O" -> ("O", ""); a BMES tag "M" -> ("M", "")."""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def check_tags(tags: Sequence[str], scheme: str) -> None:
    """A ValueError naming the first tag that is not a tag of `scheme`."""
    for tag in tags:
        if (error := tag_error(tag, scheme)) is not None:
            raise ValueError(error)


def spans(tags: Sequence[str], scheme: str = "IOB2") -> list[tuple[str, int, int]]:
    """(type, start, end) of the entities of one sentence's tags, end exclusive, decoded as seqeval's
    strict mode does: IOB2 B-X I-X*; BIOES B-X I-X* E-X or S-X; BMES likewise with M for I and type "".
    Tags that fit no entity (an I-X after O or after another type, a B-X never closed by E-X) are
    skipped; `ill_formed` counts them. The tags must be valid for the scheme (check_tags)."""
    inside = "M" if scheme == "BMES" else "I"
    closed = scheme != "IOB2"  # BIOES and BMES entities end with E, or are one S
    out = []
    i, n = 0, len(tags)
    while i < n:
        prefix, kind = split_tag(tags[i])
        if closed and prefix == "S":
            out.append((kind, i, i + 1))
            i += 1
            continue
        if prefix != "B":
            i += 1
            continue
        j = i + 1
        while j < n and split_tag(tags[j]) == (inside, kind):
            j += 1
        if not closed:
            out.append((kind, i, j))
            i = j
        elif j < n and split_tag(tags[j]) == ("E", kind):
            out.append((kind, i, j + 1))
            i = j + 1
        else:  # a chain that never reaches its E: strict mode drops it and reads on from where it broke
            i = j
    return out


def ill_formed(tags: Sequence[str], scheme: str = "IOB2") -> int:
    """How many tags other than O no entity of `spans` covers: an I-X after O is the common case."""
    covered = sum(end - start for _, start, end in spans(tags, scheme))
    return sum(tag != OUTSIDE for tag in tags) - covered


def count_ill_formed(sentences: Iterable[TaggedSentence], scheme: str = "IOB2") -> int:
    """ill_formed over a file's sentences: worth printing, since a file of I-X after O (IOB1, or tags cut
    by a converter) loses those entities from training and scoring without any other sign."""
    return sum(ill_formed(s.tags, scheme) for s in sentences)


def tags_from_spans(n: int, entities: Iterable[tuple[str, int, int]], scheme: str = "IOB2") -> list[str]:
    """n tags of `scheme` (IOB2 or BIOES) marking `entities`, (type, start, end) that do not overlap; O elsewhere."""
    if check_scheme(scheme) == "BMES":
        raise ValueError("BMES tags words, which have no type and cover every token; use IOB2 or BIOES")
    tags = [OUTSIDE] * n
    for kind, start, end in entities:
        if scheme == "BIOES" and end - start == 1:
            tags[start] = f"S-{kind}"
            continue
        tags[start] = f"B-{kind}"
        for i in range(start + 1, end):
            tags[i] = f"I-{kind}"
        if scheme == "BIOES":
            tags[end - 1] = f"E-{kind}"
    return tags


def convert_tags(tags: Sequence[str], source: str, target: str) -> list[str]:
    """One sentence's tags from scheme `source` to `target` (IOB2 <-> BIOES) through their strict entities;
    ill-formed tags, which belong to no entity, become O (count them first with ill_formed)."""
    check_tags(tags, check_scheme(source))
    return tags_from_spans(len(tags), spans(tags, source), target)


def scheme_tags(types: Iterable[str], scheme: str) -> list[str]:
    """Every tag of `scheme` for entity `types`: O first, then each type's tags in prefix order."""
    if check_scheme(scheme) == "BMES":
        return list(_PREFIXES["BMES"])
    return [OUTSIDE] + [f"{p}-{kind}" for kind in sorted(set(types)) for p in _PREFIXES[scheme]]


def build_tag_map(sentences: Iterable[TaggedSentence], scheme: str = "IOB2") -> dict[str, int]:
    """tag -> label id: every tag of the scheme for each entity type in `sentences` (scheme_tags), so a
    model can emit an E-X or I-X that the training data happens to lack, and ids do not depend on order."""
    types = {split_tag(tag)[1] for s in sentences for tag in s.tags if tag != OUTSIDE}
    return {tag: i for i, tag in enumerate(scheme_tags(types, scheme))}


def scheme_of(labels: Iterable[str]) -> str:
    """The scheme a model's tags are in: BMES when they are B/M/E/S alone, BIOES when any carries E- or S-,
    else IOB2."""
    labels = set(labels)
    if labels and labels <= {"B", "M", "E", "S"}:
        return "BMES"
    return "BIOES" if any(t[:2] in ("E-", "S-") for t in labels) else "IOB2"


def allowed_transitions(labels: list[str], scheme: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(allowed (L, L) from -> to, may start (L,), may end (L,)): the tag pairs a well-formed sequence of
    `scheme` can hold. IOB2: I-X only after B-X or I-X. BIOES: I-X / E-X only inside an X entity, which
    must end with E-X. BMES: M / E only after B or M, and B / M never last."""
    n = len(labels)
    parts = [split_tag(t) if scheme != "BMES" else (t, "") for t in labels]
    allowed = np.zeros((n, n), dtype=bool)
    start, end = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    inside = {"IOB2": ("B", "I"), "BIOES": ("B", "I"), "BMES": ("B", "M")}[scheme]  # tags that open or go on
    for j, (pj, tj) in enumerate(parts):
        continues = pj in ("I", "E") if scheme != "BMES" else pj in ("M", "E")
        start[j] = not continues
        end[j] = scheme == "IOB2" or pj not in inside
        for i, (pi, ti) in enumerate(parts):
            if continues:
                allowed[i, j] = pi in inside and ti == tj
            else:  # O, B, S start fresh: allowed after anything a sequence may end on
                allowed[i, j] = scheme == "IOB2" or pi not in inside
    return allowed, start, end


def viterbi(log_probs: np.ndarray, allowed: np.ndarray, start: np.ndarray, end: np.ndarray,
            scores: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> list[int]:
    """The highest-scoring tag sequence (sum of log-probabilities) among those the constraints allow.
    log_probs: (T, L). scores: a CRF's learned (transitions (L, L), start (L,), end (L,)) scores, added to
    the path's (model.CRF)."""
    T = log_probs.shape[0]
    if T == 0:
        return []
    blocked = np.float32(-1e9)
    learned = scores or (0.0, 0.0, 0.0)
    trans = np.where(allowed, learned[0], blocked).astype(np.float32)  # (L, L)
    score = np.where(start, log_probs[0] + learned[1], blocked)  # (L,)
    back = np.zeros((T, log_probs.shape[1]), dtype=np.int64)
    for t in range(1, T):
        total = score[:, None] + trans  # (L from, L to)
        back[t] = total.argmax(0)
        score = total.max(0) + log_probs[t]
    best = [int(np.where(end, score + learned[2], blocked).argmax())]
    for t in range(T - 1, 0, -1):
        best.append(int(back[t, best[-1]]))
    return best[::-1]


def marginals(log_probs: np.ndarray, allowed: np.ndarray, start: np.ndarray, end: np.ndarray,
              scores: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """(T, L): the probability of each tag at each token under a CRF (model.CRF) restricted to the sequences
    the constraints allow, summed over every such sequence by the forward-backward algorithm in log space.
    The score a CRF tagger reports for a tag: how sure the whole-sentence model is, not one token's softmax."""
    T, L = log_probs.shape
    if T == 0:
        return np.zeros((0, L), dtype=np.float32)
    lp = log_probs.astype(np.float64)
    trans = np.where(allowed, scores[0], -np.inf)
    fwd = np.empty((T, L))
    bwd = np.zeros((T, L))
    fwd[0] = np.where(start, scores[1] + lp[0], -np.inf)
    for t in range(1, T):
        fwd[t] = _logsumexp(fwd[t - 1][:, None] + trans, axis=0) + lp[t]
    bwd[-1] = np.where(end, scores[2], -np.inf)
    for t in range(T - 2, -1, -1):
        bwd[t] = _logsumexp(trans + (lp[t + 1] + bwd[t + 1])[None, :], axis=1)
    log_z = _logsumexp(fwd[-1] + bwd[-1], axis=0)
    return np.exp(fwd + bwd - log_z).astype(np.float32)


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - top).sum(axis=axis)) + np.squeeze(top, axis)


def bmes_to_words(tokens: Sequence[str], tags: Sequence[str]) -> list[str]:
    """Segmentation tags -> words. A word starts at B or S and ends after E or S; every token lands in a
    word, so the words joined give the text back even from ill-formed predictions (an M after S starts a
    word). Well-formed tags give the words of `spans`."""
    if len(tokens) != len(tags):
        raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags; give one tag per token")
    words: list[str] = []
    for i, (token, tag) in enumerate(zip(tokens, tags)):
        if i == 0 or tag in ("B", "S") or tags[i - 1] in ("E", "S"):
            words.append(token)
        else:
            words[-1] += token
    return words


# ----------------------------------------------------------------------------- splitting text


def _is_cjk(cp: int) -> bool:
    """The CJK ideograph blocks BERT puts a space around (its _is_chinese_char)."""
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _is_punctuation(ch: str) -> bool:
    """BERT's rule: ASCII symbols count as punctuation too ($, +, ^), and any Unicode P* category."""
    cp = ord(ch)
    return (33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
            or unicodedata.category(ch).startswith("P"))


def split_text(text: str, per_character: bool = True, cuts: Iterable[int] = ()) -> list[tuple[int, int]]:
    """(start, end) character offsets of the tokens of `text`; text[start:end] is the token.

    per_character: every character but whitespace is a token, the Chinese way (People's Daily NER tags
    one character per token). Otherwise the words BERT's pre-tokenizer would make: whitespace-separated,
    each CJK character and each punctuation mark a token of its own. `cuts`: offsets where a token must
    end, such as entity boundaries inside a word. Whitespace is never a token: it has no piece to tag."""
    cut = set(cuts)
    out: list[tuple[int, int]] = []
    start: int | None = None
    for i, ch in enumerate(text):
        if start is not None and (i in cut or ch.isspace()):
            out.append((start, i))
            start = None
        if ch.isspace():
            continue
        if per_character or _is_cjk(ord(ch)) or _is_punctuation(ch):
            if start is not None:
                out.append((start, i))
                start = None
            out.append((i, i + 1))
        elif start is None:
            start = i
    if start is not None:
        out.append((start, len(text)))
    return out


# ----------------------------------------------------------------------------- readers


def _checked_tag(tag: str, scheme: str, where: str, token: str) -> str:
    if not tag.strip():
        raise DataError(f"{where}: the tag of token {token!r} is empty; give every token a tag "
                        f"({'O outside entities' if scheme != 'BMES' else 'B, M, E or S'})")
    if (error := tag_error(tag, scheme)) is not None:
        raise DataError(f"{where}: {error}; fix the tag, or read the file with the scheme it uses "
                        f"({', '.join(SCHEMES)})")
    return tag


def read_conll(path: str | Path, scheme: str = "IOB2") -> list[TaggedSentence]:
    """Sentences of a CoNLL-style file: `token<TAB or spaces>...<TAB or spaces>tag` per line, blank lines
    between sentences. A line with a tab is split on tabs only, so a token may hold spaces."""
    path, scheme = Path(path), check_scheme(scheme)
    if not path.exists():
        raise DataError(f"{path}: file not found; check the path")
    if not path.is_file():
        raise DataError(f"{path}: is not a file; pass the path of a tagged data file")
    sentences: list[TaggedSentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0

    def end_sentence() -> None:
        if tokens:
            sentences.append(TaggedSentence(tokens.copy(), tags.copy(), start, one_token_per_line=True))
            tokens.clear()
            tags.clear()

    for n, line in read_lines(path, DataError, MAX_LINE_CHARS, "a line"):
        columns = [c.strip() for c in line.split("\t")] if "\t" in line else line.split()
        if not line.strip() or columns[0] == DOCSTART:  # a blank line, or a document break: a sentence ends
            end_sentence()
            continue
        if not columns[0]:
            raise DataError(f"{path}:{n}: the token (first column) is empty; give the token before its tag")
        if len(columns) < 2:
            raise DataError(f"{path}:{n}: {columns[0]!r} has no tag; write the token and its tag separated by a "
                            "tab or a space")
        if not tokens:
            start = n
        tokens.append(columns[0])
        tags.append(_checked_tag(columns[-1], scheme, f"{path}:{n}", columns[0]))
    end_sentence()
    if not sentences:
        raise DataError(f"{path}: no tagged tokens found; expected lines of a token and its tag")
    return sentences


def _token_record(record: dict, scheme: str, label_names: Sequence[str] | None, path: Path,
                  n: int) -> TaggedSentence | None:
    tokens = record["tokens"]
    key = "tags" if "tags" in record else "ner_tags" if "ner_tags" in record else None
    if key is None:
        have = ", ".join(map(repr, record))
        raise DataError(f"{path}:{n}: object has 'tokens' but no 'tags' or 'ner_tags' field (fields: {have}); "
                        "give the tags, one per token")
    tags = record[key]
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise DataError(f"{path}:{n}: 'tokens' must be a list of strings, got {_json_type(tokens)}"
                        + (" holding other values" if isinstance(tokens, list) else ""))
    if not isinstance(tags, list):
        raise DataError(f"{path}:{n}: {key!r} must be a list of tags, got {_json_type(tags)}")
    if len(tokens) != len(tags):
        raise DataError(f"{path}:{n}: {len(tokens)} tokens but {len(tags)} tags; give every token exactly one tag")
    if not tokens or tokens == [DOCSTART]:
        return None
    names = []
    for token, tag in zip(tokens, tags):
        if isinstance(tag, int) and not isinstance(tag, bool):
            if label_names is None:
                raise DataError(f"{path}:{n}: tags are integer ids; pass the label names in id order (label_names, "
                                "e.g. the dataset's features[...].feature.names) to read them")
            if not 0 <= tag < len(label_names):
                raise DataError(f"{path}:{n}: tag id {tag} is outside the {len(label_names)} label names given "
                                f"(0..{len(label_names) - 1}); fix the id or the label names")
            tag = label_names[tag]
        elif not isinstance(tag, str):
            raise DataError(f"{path}:{n}: the tag of token {token!r} is {_json_type(tag)}; give a tag name or an "
                            "integer id")
        names.append(_checked_tag(tag, scheme, f"{path}:{n}", token))
    return TaggedSentence(list(tokens), names, n)


def _span_record(record: dict, scheme: str, per_character: bool, path: Path, n: int) -> TaggedSentence | None:
    text = record["text"]
    if not isinstance(text, str):
        raise DataError(f"{path}:{n}: field 'text' is {_json_type(text)}, expected a string")
    _text(text, path, n)
    if "entities" not in record:
        have = ", ".join(map(repr, record))
        raise DataError(f"{path}:{n}: object has 'text' but no 'entities' field (fields: {have}); give "
                        "[[start, end, label], ...], or [] for a text without entities")
    entities = record["entities"]
    if not isinstance(entities, list):
        raise DataError(f"{path}:{n}: 'entities' must be a list, got {_json_type(entities)}")
    found = []
    for e in entities:
        if isinstance(e, dict) and {"start", "end", "label"} <= set(e):
            start, end, label = e["start"], e["end"], e["label"]
        elif isinstance(e, list) and len(e) == 3:
            start, end, label = e
        else:
            raise DataError(f"{path}:{n}: entity {_short_repr(e)} is not [start, end, label] or an object with "
                            "'start', 'end' and 'label'; write it as one of those")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, end)):
            raise DataError(f"{path}:{n}: entity {_short_repr(e)}: start and end must be integer character offsets")
        if not isinstance(label, str) or not label.strip():
            raise DataError(f"{path}:{n}: entity {_short_repr(e)}: the label must be an entity type such as "
                            "'PER' (the scheme's prefixes are added when tagging)")
        if not 0 <= start < end <= len(text):
            raise DataError(f"{path}:{n}: entity {_short_repr(e)} is outside the text of {len(text)} characters; "
                            "offsets count characters from 0 and end is exclusive (start < end <= length)")
        if not text[start:end].strip():
            raise DataError(f"{path}:{n}: entity {_short_repr(e)} covers only whitespace; fix its offsets")
        found.append((start, end, label.strip()))
    found.sort()
    for (s1, e1, l1), (s2, e2, l2) in zip(found, found[1:]):
        if s2 < e1:
            raise DataError(f"{path}:{n}: entities [{s1}, {e1}) {l1} and [{s2}, {e2}) {l2} overlap; each token "
                            "takes one tag, so keep one of them")
    offsets = split_text(text, per_character, cuts=[x for s, e, _ in found for x in (s, e)])
    if not offsets:
        return None
    starts = [s for s, _ in offsets]
    entity_tokens = []
    for start, end, label in found:
        # the tokens inside [start, end): every token starts and ends on a cut, so none straddles an edge
        first = bisect.bisect_left(starts, start)
        last = bisect.bisect_left(starts, end)
        entity_tokens.append((label, first, last))
    tags = tags_from_spans(len(offsets), entity_tokens, scheme)
    return TaggedSentence([text[s:e] for s, e in offsets], tags, n)


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def read_json_tagged(path: str | Path, scheme: str = "IOB2", label_names: Sequence[str] | None = None,
                     per_character: bool = True) -> list[TaggedSentence]:
    """Sentences of a .json list or .jsonl file of token records or span records (see the module
    docstring). Records without tokens (an empty list, a lone -DOCSTART-, a text of whitespace) are skipped.
    label_names: the tag names of integer tags, in id order. per_character: how span records' texts are
    split into tokens (split_text)."""
    path, scheme = Path(path), check_scheme(scheme)
    sentences = []
    for n, record in _json_records(path, JSON_SUFFIXES):
        if isinstance(record, dict) and "tokens" in record:
            sentence = _token_record(record, scheme, label_names, path, n)
        elif isinstance(record, dict) and "text" in record:
            if scheme == "BMES":
                raise DataError(f"{path}:{n}: a record of text and entity spans needs a typed scheme (IOB2 or "
                                "BIOES); segmentation data gives tokens and BMES tags")
            sentence = _span_record(record, scheme, per_character, path, n)
        else:
            got = f"fields {', '.join(map(repr, record))}" if isinstance(record, dict) else _json_type(record)
            raise DataError(f"{path}:{n}: expected an object with 'tokens' and 'tags', or with 'text' and "
                            f"'entities', got {got}")
        if sentence is not None:
            sentences.append(sentence)
    if not sentences:
        raise DataError(f"{path}: no tagged tokens found; expected at least one record with tokens")
    return sentences


def read_tagged(path: str | Path, scheme: str = "IOB2", label_names: Sequence[str] | None = None,
                per_character: bool = True) -> list[TaggedSentence]:
    """read_json_tagged for .json/.jsonl files, read_conll for any other extension (.txt, .conll, .bio,
    .bmes, .tsv ...)."""
    path = Path(path)
    if path.suffix.lower() in JSON_SUFFIXES:
        return read_json_tagged(path, scheme, label_names, per_character)
    return read_conll(path, scheme)


def encode_tags(sentences: Sequence[TaggedSentence], label2id: Mapping[str, int], path: str | Path) -> list[list[int]]:
    """Label ids of every sentence's tags; a tag the model does not know is a DataError naming its line."""
    out = []
    for s in sentences:
        ids = []
        for i, tag in enumerate(s.tags):
            if tag not in label2id:
                raise DataError(f"{path}:{s.token_line(i)}: tag {tag!r} of token {s.tokens[i]!r} is not one of the "
                                f"model's tags ({', '.join(label2id)}); fix the tag, or train with data that has it")
            ids.append(label2id[tag])
        out.append(ids)
    return out
