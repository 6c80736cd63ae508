"""Train the Chinese WordPiece vocabulary shipped as `vocab/zh.txt`.

Chinese BERT style: the normalizer puts spaces around every CJK ideograph, so each Chinese
character is one token and WordPiece merges only ever build ASCII words and numbers (`xp`,
`1997`, `##pad`). The character set is chosen explicitly rather than left to merge counts:

- every hanzi of GB2312 (6,763, the national standard simplified set), so that text a user
  fine-tunes on (names such as 诸葛涛) rarely hits [UNK] even when a character never occurs in the
  1998 news + reviews corpus;
- every other character seen at least `--min-char-freq` times in the corpus (mostly traditional
  forms and punctuation from the reviews); rarer ones are typos and noise whose embeddings one
  example could not train;
- 诸 葛 涛 亮 and every character of `examples/three_kingdoms.json`, which the demo needs.

Input: `data/zh/pretrain.txt` from `scripts/prepare_zh.py` (it already contains the sentiment
training split). `pretrain_valid.txt` is held out to measure the [UNK] rate.

Size: the characters take ~7,150 entries; the default cap of 8,192 leaves ~1,000 for ASCII words,
numbers and `##` pieces, which is where the corpus runs out (the last merges are used ~4 times in
2.9M characters; uncapped, the trainer stops at ~9,300 with merges seen twice). More entries would
be rows the model rarely trains, and the MLM output projection, the largest cost of pre-training
a small BERT, grows with every one (bert-base-chinese's 21,128 would make it 2.6x larger).

Usage: `python scripts/train_vocab.py [--data data/zh] [--out vocab] [--vocab-size 8192]`.
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from collections import Counter
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from tokenizers.trainers import WordPieceTrainer

from minibert.files import read_json, read_text

# The order bert-base-chinese uses for the ids that matter: [PAD] must be 0 (the collator pads
# with 0 and HF configs assume pad_token_id=0); the others follow directly, without [unusedN].
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
REQUIRED_CHARS = "诸葛涛亮"
TOKENIZER_CONFIG = {
    "do_lower_case": True,
    "tokenize_chinese_chars": True,
    "strip_accents": None,
    "tokenizer_class": "BertTokenizer",
    "model_max_length": 512,
}


def bert_normalizer() -> BertNormalizer:
    # strip_accents=None follows lowercase, as in HF's BertTokenizer with the config above.
    return BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)


def bert_tokenizer(model: WordPiece) -> Tokenizer:
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = bert_normalizer()
    tokenizer.pre_tokenizer = BertPreTokenizer()
    return tokenizer


def is_cjk(ch: str) -> bool:
    """The ranges BERT's `_is_chinese_char` treats as one-character words."""
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def gb2312_hanzi() -> list[str]:
    """The 6,763 hanzi of GB2312 (rows 0xB0-0xF7), decoded from the codec Python ships."""
    chars = []
    for hi in range(0xB0, 0xF8):
        for lo in range(0xA1, 0xFF):
            try:
                chars.append(bytes([hi, lo]).decode("gb2312"))
            except UnicodeDecodeError:  # the few unassigned cells at the end of row 0xD7
                pass
    assert len(chars) == 6763, len(chars)
    return chars


def example_chars(path: Path) -> set[str]:
    """Characters of the `text` fields of a JSON list such as examples/three_kingdoms.json."""
    items = read_json(path)
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of {{'text': ...}} objects, got {type(items).__name__}")
    chars: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise ValueError(f"{path}: item {i}: expected an object with a 'text' string, got {item!r}")
        chars.update(ch for ch in item["text"] if not ch.isspace())
    return chars


def read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run `make data` (scripts/prepare_zh.py) first")
    return [line for line in read_text(path, newlines=True).split("\n") if line.strip()]


def corpus_chars(lines: list[str]) -> tuple[Counter[str], set[str]]:
    """Character counts over BERT-normalized, pre-tokenized text, and the characters that occur
    after the first position of a word (those the trainer turns into `##c` pieces)."""
    normalizer, pre_tokenizer = bert_normalizer(), BertPreTokenizer()
    counts: Counter[str] = Counter()
    continuing: set[str] = set()
    for line in lines:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)):
            counts.update(word)
            continuing.update(word[1:])
    return counts, continuing


def train(
    lines: list[str],
    required: set[str],
    counts: Counter[str],
    continuing: set[str],
    min_char_freq: int,
    vocab_size: int,
    min_pair_freq: int,
) -> Tokenizer:
    """WordPiece with the alphabet fixed to `required` plus corpus characters seen >= min_char_freq.

    `counts` and `continuing` are `corpus_chars(lines)`.
    """
    normalizer = bert_normalizer()
    required = {normalizer.normalize_str(ch).strip() for ch in required} - {""}
    # The trainer forces `initial_alphabet` in and then keeps the `limit_alphabet` most frequent of
    # the rest, so this limit drops exactly the corpus characters rarer than min_char_freq.
    alphabet = required | {ch for ch, n in counts.items() if n >= min_char_freq}
    # The trainer creates `##c` pieces while iterating a hash map, so their ids, and with them the
    # tie-breaks between equally frequent merges, change from run to run (huggingface/tokenizers
    # #1794). Handing it every `##c` up front, sorted, as special tokens fixes their ids and makes
    # the vocabulary reproducible. ##a-z and ##0-9 are always included so that any ASCII word can
    # be spelled without [UNK].
    ascii_alnum = set(string.ascii_lowercase + string.digits)
    pieces = sorted("##" + ch for ch in (continuing & alphabet) | ascii_alnum)
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_pair_freq,
        special_tokens=SPECIAL_TOKENS + pieces,
        initial_alphabet=sorted(required),
        limit_alphabet=len(alphabet),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer = bert_tokenizer(WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    tokenizer.train_from_iterator(lines, trainer=trainer, length=len(lines))
    return tokenizer


def unk_rate(tokenizer: Tokenizer, lines: list[str]) -> tuple[int, int]:
    """(characters inside [UNK] tokens, all non-space characters) over `lines`.

    Counted in characters, not tokens: WordPiece turns a whole word into one [UNK] when any of
    its characters is unknown, so a token rate would understate what is lost.
    """
    unk_id = tokenizer.token_to_id("[UNK]")
    unk = total = 0
    for enc, line in zip(tokenizer.encode_batch(lines, add_special_tokens=False), lines):
        total += sum(1 for ch in line if not ch.isspace())
        unk += sum(
            sum(1 for ch in line[start:end] if not ch.isspace())
            for tok, (start, end) in zip(enc.ids, enc.offsets)
            if tok == unk_id
        )
    return unk, total


def ordered_tokens(tokenizer: Tokenizer) -> list[str]:
    """Special tokens, characters (by code point), `##c` pieces, then merged words and pieces in
    the order the trainer made them (most frequent first)."""
    by_id = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    assert [i for _, i in by_id] == list(range(len(by_id))), "vocabulary ids are not contiguous"

    def group(token: str) -> int:
        if token in SPECIAL_TOKENS:
            return 0
        if len(token) == 1:
            return 1
        return 2 if token.startswith("##") and len(token) == 3 else 3

    # sorted() is stable, so each group keeps the trainer's order.
    tokens = sorted((tok for tok, _ in by_id), key=group)
    assert tokens[: len(SPECIAL_TOKENS)] == SPECIAL_TOKENS, tokens[:10]
    return tokens


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/zh"), help="prepare_zh.py output folder")
    parser.add_argument("--out", type=Path, default=Path("vocab"), help="writes zh.txt and tokenizer_config.json")
    parser.add_argument(
        "--examples", type=Path, default=Path("examples/three_kingdoms.json"), help="characters to force in"
    )
    parser.add_argument("--vocab-size", type=int, default=8192, help="upper bound on the vocabulary size")
    parser.add_argument("--min-char-freq", type=int, default=2, help="corpus count for a non-GB2312 character")
    parser.add_argument("--min-pair-freq", type=int, default=2, help="count a WordPiece merge needs")
    args = parser.parse_args(argv)
    try:
        lines = read_lines(args.data / "pretrain.txt")
        valid = read_lines(args.data / "pretrain_valid.txt")
        if not args.examples.is_file():
            raise FileNotFoundError(f"{args.examples}: not found; pass --examples with the demo's train.json")
        gb2312 = set(gb2312_hanzi())
        required = gb2312 | set(REQUIRED_CHARS) | example_chars(args.examples)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"train_vocab.py: error: {e}")

    counts, continuing = corpus_chars(lines)
    tokenizer = train(
        lines, required, counts, continuing, args.min_char_freq, args.vocab_size, args.min_pair_freq
    )
    tokens = ordered_tokens(tokenizer)
    vocab = set(tokens)
    normalizer = bert_normalizer()
    missing = sorted(ch for ch in required if normalizer.normalize_str(ch).strip() not in vocab | {""})
    if missing:
        sys.exit(
            f"train_vocab.py: error: the trained vocabulary lacks required characters {''.join(missing)}; "
            f"raise --vocab-size (now {args.vocab_size}) so the alphabet fits"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "zh.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    (args.out / "tokenizer_config.json").write_text(
        json.dumps(TOKENIZER_CONFIG, indent=2) + "\n", encoding="utf-8"
    )

    # Measure with a tokenizer rebuilt from the file just written, so the numbers describe it.
    written = bert_tokenizer(WordPiece.from_file(str(args.out / "zh.txt"), unk_token="[UNK]"))
    train_unk, train_total = unk_rate(written, lines)
    valid_unk, valid_total = unk_rate(written, valid)
    corpus_cjk = {ch for ch in counts if is_cjk(ch)}
    n_cjk = sum(1 for t in tokens if len(t) == 1 and is_cjk(t))
    n_other = sum(1 for t in tokens if len(t) == 1) - n_cjk
    n_pieces = sum(1 for t in tokens if t.startswith("##"))
    n_words = len(tokens) - len(SPECIAL_TOKENS) - n_cjk - n_other - n_pieces
    dropped = sorted((ch for ch in counts if ch not in vocab), key=lambda ch: -counts[ch])
    print(f"corpus: {len(lines)} lines, {train_total:,} characters, {len(corpus_cjk)} distinct CJK characters")
    print(
        f"wrote {args.out / 'zh.txt'}: {len(tokens)} tokens = {len(SPECIAL_TOKENS)} special + "
        f"{n_cjk} CJK characters + {n_other} other characters + {n_words} ASCII words/numbers "
        f"+ {n_pieces} ## pieces"
    )
    print(
        f"  CJK: all {len(gb2312)} GB2312 hanzi ({len(gb2312 - set(counts))} never seen in the corpus) "
        f"+ {n_cjk - len(gb2312)} others seen >= {args.min_char_freq} times or required; "
        f"corpus CJK characters covered: {len(corpus_cjk & vocab)}/{len(corpus_cjk)}"
    )
    print(
        f"  {len(dropped)} characters seen < {args.min_char_freq} times left out "
        f"(most frequent first: {''.join(dropped[:20])})"
    )
    print(f"  [UNK] characters: train {100 * train_unk / train_total:.3f}%, valid {100 * valid_unk / valid_total:.3f}%")
    print(f"wrote {args.out / 'tokenizer_config.json'}")


if __name__ == "__main__":
    main()
