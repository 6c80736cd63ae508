"""BERT WordPiece tokenizer: the `tokenizers` package does the work, this file wires it up.

The pipeline is the one every BERT checkpoint expects:
    BertNormalizer (clean, space around CJK chars, lowercase, strip accents)
    -> BertPreTokenizer (split on whitespace and punctuation)
    -> WordPiece (greedy longest-match, "##" continuation pieces, [UNK] for the rest)
    -> "[CLS] A [SEP]" / "[CLS] A [SEP] B [SEP]" with token_type_ids 0 / 1.

A folder's `tokenizer.json` is preferred over `vocab.txt` (as Hugging Face does); either way
`tokenizer_config.json`, when present, decides lowercasing and accent stripping.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from .data.padding import pad_batch
from .files import find_model, read_json, read_text

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)


@dataclass
class Encoding:
    """One encoded sequence (or pair); every list has one entry per token."""

    ids: list[int]
    token_type_ids: list[int]  # 0 for [CLS] A [SEP], 1 for B [SEP]
    special_tokens_mask: list[int]  # 1 at [CLS]/[SEP]
    word_ids: list[int | None]  # None at [CLS]/[SEP]; the second segment's words are offset past the first's

    def __len__(self) -> int:
        return len(self.ids)


class Tokenizer:
    pad_token: str = PAD
    unk_token: str = UNK
    cls_token: str = CLS
    sep_token: str = SEP
    mask_token: str = MASK

    def __init__(self, vocab: dict[str, int], do_lower_case: bool = True, strip_accents: bool | None = None,
                 tokenize_chinese_chars: bool = True, model_max_length: int | None = None,
                 source: str = "vocab") -> None:
        """Build the BERT pipeline around `vocab` (token -> id); `source` names its file in errors.

        Use `from_pretrained` or `from_vocab`. Like transformers 5, the pipeline is always built here
        from the vocabulary and options, so a folder's tokenizer.json contributes only its vocabulary.
        """
        if not vocab:
            raise ValueError(f"{source}: the vocabulary is empty")
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise ValueError(f"{source}: vocabulary lacks BERT special token(s) {', '.join(missing)}; "
                             "add them (vocab.txt conventionally starts with [PAD])")
        tk = HFTokenizer(WordPiece(vocab, unk_token=UNK, max_input_chars_per_word=100))
        tk.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=tokenize_chinese_chars,
            # Original BERT strips accents exactly when it lowercases, unless told otherwise.
            strip_accents=do_lower_case if strip_accents is None else strip_accents,
            lowercase=do_lower_case,
        )
        tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tk.post_processor = processors.TemplateProcessing(
            single=f"{CLS}:0 $A:0 {SEP}:0",
            pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
            special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
        )
        tk.decoder = decoders.WordPiece(prefix="##")
        # Registered specials stay whole when they appear in text ("a [MASK] b") and decode() can skip them.
        tk.add_special_tokens(list(SPECIAL_TOKENS))
        self._tk = tk
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.model_max_length = model_max_length
        self._special_ids = {t: vocab[t] for t in SPECIAL_TOKENS}

    # ------------------------------------------------------------------ files in and out

    @classmethod
    def from_vocab(cls, vocab_file: str | Path, do_lower_case: bool = True, strip_accents: bool | None = None,
                   tokenize_chinese_chars: bool = True, model_max_length: int | None = None) -> Tokenizer:
        """Build from a vocab.txt: one token per line, the line number (from 0) is the id."""
        vocab_file = Path(vocab_file)
        if not vocab_file.is_file():
            raise FileNotFoundError(f"{vocab_file}: vocabulary file not found")
        # Line breaks are \n, \r\n or \r, as transformers reads the file; not str.splitlines(), which
        # would also split on exotic separators that are tokens.
        lines = read_text(vocab_file, newlines=True).split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        vocab: dict[str, int] = {}
        for i, token in enumerate(lines):
            if token in vocab:
                raise ValueError(f"{vocab_file}:{i + 1}: token {token!r} already appears on line "
                                 f"{vocab[token] + 1}; each token must appear once")
            vocab[token] = i
        return cls(vocab, do_lower_case, strip_accents, tokenize_chinese_chars, model_max_length, str(vocab_file))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> Tokenizer:
        """Load a Hugging Face style folder: tokenizer.json or vocab.txt, plus tokenizer_config.json if any.
        A Hugging Face name instead of a folder means its snapshot in the local cache (files.find_model)."""
        folder = find_model(folder)
        config_file = folder / "tokenizer_config.json"
        config: dict = {}
        if config_file.is_file():
            config = read_json(config_file)
        for key, expected in zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"),
                                 SPECIAL_TOKENS):
            value = config.get(key, expected)
            value = value.get("content") if isinstance(value, dict) else value
            if value != expected:
                raise ValueError(f"{config_file}: {key} is {value!r}; minibert supports BERT's {expected} only")
        max_len = config.get("model_max_length")
        options = dict(
            do_lower_case=config.get("do_lower_case", True),
            strip_accents=config.get("strip_accents"),
            tokenize_chinese_chars=config.get("tokenize_chinese_chars", True),
            # transformers writes a huge sentinel (1e30) when the length is unknown.
            model_max_length=int(max_len) if isinstance(max_len, (int, float)) and max_len < 1e9 else None,
        )
        tokenizer_json, vocab_txt = folder / "tokenizer.json", folder / "vocab.txt"
        if tokenizer_json.is_file():
            tk = HFTokenizer.from_file(str(tokenizer_json))
            if type(tk.model).__name__ != "WordPiece":
                raise ValueError(f"{tokenizer_json}: holds a {type(tk.model).__name__} model; minibert "
                                 "supports BERT WordPiece tokenizers only")
            return cls(tk.get_vocab(with_added_tokens=True), **options, source=str(tokenizer_json))
        if vocab_txt.is_file():
            return cls.from_vocab(vocab_txt, **options)
        raise FileNotFoundError(f"{folder}: no tokenizer.json or vocab.txt; a BERT tokenizer folder needs "
                                "at least vocab.txt (one token per line)")

    def save_pretrained(self, folder: str | Path) -> None:
        """Write vocab.txt, tokenizer.json and tokenizer_config.json, loadable by transformers too."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        vocab = sorted(self._tk.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
        assert [i for _, i in vocab] == list(range(len(vocab))), "WordPiece ids must be contiguous"
        (folder / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
        self._tk.save(str(folder / "tokenizer.json"))
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.do_lower_case,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
            "pad_token": PAD, "unk_token": UNK, "cls_token": CLS, "sep_token": SEP, "mask_token": MASK,
        }
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                      encoding="utf-8")

    # ------------------------------------------------------------------ vocabulary

    @property
    def vocab_size(self) -> int:
        return self._tk.get_vocab_size(with_added_tokens=True)

    @property
    def pad_token_id(self) -> int:
        return self._special_ids[PAD]

    @property
    def unk_token_id(self) -> int:
        return self._special_ids[UNK]

    @property
    def cls_token_id(self) -> int:
        return self._special_ids[CLS]

    @property
    def sep_token_id(self) -> int:
        return self._special_ids[SEP]

    @property
    def mask_token_id(self) -> int:
        return self._special_ids[MASK]

    @property
    def all_special_ids(self) -> set[int]:
        return set(self._special_ids.values())

    def get_vocab(self) -> dict[str, int]:
        return self._tk.get_vocab(with_added_tokens=True)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Unknown tokens map to [UNK]'s id, as in transformers."""
        if isinstance(tokens, str):
            i = self._tk.token_to_id(tokens)
            return self.unk_token_id if i is None else i
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int] | torch.Tensor) -> str | list[str]:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        if isinstance(ids, int):
            token = self._tk.id_to_token(ids)
            if token is None:
                raise IndexError(f"token id {ids} is outside the vocabulary (size {self.vocab_size})")
            return token
        return [self.convert_ids_to_tokens(int(i)) for i in ids]

    # ------------------------------------------------------------------ encoding

    def _set_truncation(self, max_length: int | None, pair: bool) -> None:
        if max_length is None:
            self._tk.no_truncation()
            return
        need = 4 if pair else 3
        if max_length < need:
            raise ValueError(f"max_length={max_length} leaves no room for text next to [CLS]/[SEP]; "
                             f"use at least {need}")
        # Truncation counts the special tokens and keeps them; pairs lose tokens from the longer side first.
        self._tk.enable_truncation(max_length, strategy="longest_first")

    @staticmethod
    def _wrap(enc) -> Encoding:
        word_ids = enc.word_ids
        if enc.n_sequences > 1:
            # Word ids restart at 0 in the second segment; offset them so no "word" spans both segments.
            seq_ids = enc.sequence_ids
            offset = 1 + max((w for w, s in zip(word_ids, seq_ids) if s == 0 and w is not None), default=-1)
            word_ids = [w + offset if s == 1 and w is not None else w for w, s in zip(word_ids, seq_ids)]
        return Encoding(enc.ids, enc.type_ids, enc.special_tokens_mask, word_ids)

    def encode(self, text: str | list[str], text_pair: str | list[str] | None = None,
               max_length: int | None = None, is_pretokenized: bool = False) -> Encoding:
        """Encode one text (or pair). With is_pretokenized, `text` is a list of words and word_ids index it."""
        self._set_truncation(max_length, text_pair is not None)
        return self._wrap(self._tk.encode(text, text_pair, is_pretokenized=is_pretokenized))

    def encode_batch(self, texts: Sequence[str] | Sequence[list[str]],
                     text_pairs: Sequence[str | list[str] | None] | None = None,
                     max_length: int | None = None, is_pretokenized: bool = False) -> list[Encoding]:
        """Like `encode` over many texts; the `tokenizers` package runs it on all cores."""
        if text_pairs is None:
            inputs = list(texts)
        elif len(text_pairs) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(text_pairs)} text_pairs; they must match")
        else:  # a None pair encodes that text alone
            inputs = [t if p is None else (t, p) for t, p in zip(texts, text_pairs)]
        self._set_truncation(max_length, text_pairs is not None and any(p is not None for p in text_pairs))
        return [self._wrap(e) for e in self._tk.encode_batch(inputs, is_pretokenized=is_pretokenized)]

    def encode_content(self, texts: Sequence[str] | Sequence[list[str]], is_pretokenized: bool = False) -> list:
        """The `tokenizers` encodings of many texts without [CLS]/[SEP] or truncation, for the token cache:
        .ids is what encode() gives between the special tokens, and with is_pretokenized so is .word_ids
        (without it .word_ids is not filled in: the faster encoder skips it). Runs on all cores."""
        self._tk.no_truncation()
        encode = self._tk.encode_batch if is_pretokenized else self._tk.encode_batch_fast
        return encode(list(texts), is_pretokenized=is_pretokenized, add_special_tokens=False)

    def fingerprint(self) -> str:
        """SHA-256 of the whole pipeline (vocabulary, normalizer options, specials): equal fingerprints
        tokenize every text alike."""
        return hashlib.sha256(self._tk.to_str().encode("utf-8")).hexdigest()

    def __call__(self, texts: str | list[str], text_pairs: str | list[str] | None = None,
                 max_length: int | None = None, padding: bool = True,
                 pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
        """Encode a batch into padded int64 tensors (B, T): input_ids, attention_mask, token_type_ids."""
        if isinstance(texts, str):
            texts = [texts]
            text_pairs = [text_pairs] if isinstance(text_pairs, str) else text_pairs
        encodings = self.encode_batch(texts, text_pairs, max_length)
        lengths = [len(e) for e in encodings]
        if not padding and len(set(lengths)) > 1:
            raise ValueError(f"texts encode to different lengths ({min(lengths)}..{max(lengths)}); "
                             f"pass padding=True")
        return self.pad(encodings, pad_to_multiple_of)

    def pad(self, encodings: Sequence[Encoding], pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
        """Encodings -> padded int64 tensors (B, T): input_ids, attention_mask, token_type_ids."""
        features = [{"input_ids": e.ids, "token_type_ids": e.token_type_ids} for e in encodings]
        return pad_batch(features, self.pad_token_id, pad_to_multiple_of)

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self._tk.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case}, "
                f"strip_accents={self.strip_accents}, model_max_length={self.model_max_length})")
