"""Tokenizer parity with transformers on a real checkpoint's vocabulary, plus files in and out."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import minilm_dir

from minibert.tokenizer import Encoding, Tokenizer

TEXTS = [
    "Hello, world! It's a test.",
    "The quick brown fox jumps over the lazy dog; unaffordable antidisestablishmentarianism.",
    "中国人民在北京大学学习",  # CJK: each character its own token
    "mixed 中文 and English, 北京 2024年!",
    "café naïve Ünïcödé résumé Ελληνικά",  # accents are stripped with lowercasing
    "punctuation... (brackets) [square] {curly} «quotes» — dashes – ¿qué? 100% $5.00 a/b\\c",
    "emoji 🤗🚀 and runes ᚠᛇᚻ and Javanese ꦲꦤꦕ�République",  # unknown characters -> [UNK]
    "a" * 150 + " short",  # words over 100 characters become [UNK]
    "  tabs\tand\nnewlines\r\n and zero\u200bwidth and control\x00\x07 chars  ",
    "special tokens in text: [MASK] [CLS] [SEP] [PAD] [UNK] [mask]",
    "",
]
PAIRS = [
    ("How old are you?", "I am six years old, thank you very much for asking."),
    ("一个很长的中文句子，用来测试截断是否正确。", "short"),
    ("same length here", "same length there"),
]


@pytest.fixture(scope="module")
def folder():
    return minilm_dir()


@pytest.fixture(scope="module")
def hf(folder):
    return pytest.importorskip("transformers").AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def tok(minilm_tokenizer):
    return minilm_tokenizer


def assert_same(ours: Encoding, ref: dict) -> None:
    assert ours.ids == ref["input_ids"]
    assert ours.token_type_ids == ref["token_type_ids"]
    assert ours.special_tokens_mask == ref["special_tokens_mask"]
    assert len(ours.word_ids) == len(ours.ids)


@pytest.mark.parametrize("text", TEXTS)
def test_single_matches_transformers(tok, hf, text):
    assert_same(tok.encode(text), hf(text, return_special_tokens_mask=True))


@pytest.mark.parametrize("a, b", PAIRS)
@pytest.mark.parametrize("max_length", [None, 24, 12, 7, 4])
def test_pairs_and_truncation_match_transformers(tok, hf, a, b, max_length):
    kwargs = {} if max_length is None else dict(truncation="longest_first", max_length=max_length)
    ours = tok.encode(a, b, max_length=max_length)
    assert_same(ours, hf(a, b, return_special_tokens_mask=True, **kwargs))
    if max_length is not None:
        assert len(ours) <= max_length
        assert ours.ids[0] == tok.cls_token_id and ours.ids[-1] == tok.sep_token_id


@pytest.mark.parametrize("max_length", [3, 5, 16])
def test_single_truncation_keeps_special_tokens(tok, hf, max_length):
    text = TEXTS[1]
    ours = tok.encode(text, max_length=max_length)
    assert_same(ours, hf(text, truncation=True, max_length=max_length, return_special_tokens_mask=True))
    assert len(ours) == max_length and ours.ids[-1] == tok.sep_token_id


def test_batch_matches_single(tok):
    batch = tok.encode_batch([a for a, _ in PAIRS], [b for _, b in PAIRS], max_length=12)
    assert batch == [tok.encode(a, b, max_length=12) for a, b in PAIRS]
    # A None pair encodes its text alone.
    mixed = tok.encode_batch(["one", "two"], [None, "pair"])
    assert mixed == [tok.encode("one"), tok.encode("two", "pair")]


def test_from_vocab_matches_transformers(folder, hf):
    tok = Tokenizer.from_vocab(folder / "vocab.txt")  # no tokenizer.json: the pipeline is built here
    for text in TEXTS:
        assert_same(tok.encode(text), hf(text, return_special_tokens_mask=True))
    for a, b in PAIRS:
        assert_same(tok.encode(a, b, max_length=9),
                    hf(a, b, truncation=True, max_length=9, return_special_tokens_mask=True))


def test_special_tokens_and_vocab(tok, hf):
    assert tok.vocab_size == len(hf) == 30522
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (
        hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id)
    assert tok.all_special_ids == {0, 100, 101, 102, 103}
    assert tok.mask_token == "[MASK]" and tok.model_max_length == 512
    assert tok.convert_tokens_to_ids("[MASK]") == 103
    assert tok.convert_tokens_to_ids(["hello", "no-such-token"]) == [7592, tok.unk_token_id]
    assert tok.convert_ids_to_tokens(torch.tensor([101, 7592])) == ["[CLS]", "hello"]
    assert tok.convert_ids_to_tokens(103) == "[MASK]"
    with pytest.raises(IndexError, match="outside the vocabulary"):
        tok.convert_ids_to_tokens(10**6)


def test_decode_matches_transformers(tok, hf):
    for text in TEXTS[:6]:
        ids = tok.encode(text).ids
        assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=True)
        assert tok.decode(torch.tensor(ids), skip_special_tokens=False).startswith("[CLS]")


def test_call_pads_a_batch(tok, hf):
    texts = ["short", "a somewhat longer sentence here", "mid length one"]
    out = tok(texts, pad_to_multiple_of=8)
    ref = hf(texts, padding=True, pad_to_multiple_of=8, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert out[key].dtype == torch.int64
        assert torch.equal(out[key], ref[key]), key
    assert out["input_ids"].shape[1] % 8 == 0
    pairs = tok("question?", "answer.", max_length=5)
    assert pairs["input_ids"].shape == (1, 5) and pairs["token_type_ids"][0].tolist() == [0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="padding=True"):
        tok(texts, padding=False)


def test_word_ids_pretokenized_chinese(tok, hf):
    # Pre-segmented Chinese (People's Daily style): every character is its own token, but the
    # characters of one segmented word share a word id.
    words = "北京 天安 中国人民 日 大学生".split()
    enc = tok.encode(words, is_pretokenized=True)
    assert tok.convert_ids_to_tokens(enc.ids) == ["[CLS]", *"北京天安中国人民日大学生", "[SEP]"]
    assert enc.word_ids == [None, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4, 4, None]
    ref = hf(words, is_split_into_words=True)
    assert enc.ids == ref["input_ids"] and enc.word_ids == ref.word_ids()


def test_word_ids_small_chinese_vocab(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "诸", "葛", "亮", "是", "丞", "相", "hello", "##s"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = Tokenizer.from_vocab(tmp_path / "vocab.txt")
    enc = tok.encode("诸葛 亮 是 丞相 hellos".split(), is_pretokenized=True)
    assert tok.convert_ids_to_tokens(enc.ids) == ["[CLS]", "诸", "葛", "亮", "是", "丞", "相", "hello", "##s", "[SEP]"]
    assert enc.word_ids == [None, 0, 0, 1, 2, 3, 3, 4, 4, None]
    # Without pre-segmentation the tokenizer's own words are single characters.
    assert tok.encode("诸葛亮").word_ids == [None, 0, 1, 2, None]


def test_pair_word_ids_do_not_overlap(tok):
    enc = tok.encode("two words", "three more words")
    assert enc.word_ids == [None, 0, 1, None, 2, 3, 4, None]
    enc = tok.encode(["北京", "大学"], ["中国", "人"], is_pretokenized=True)
    assert enc.word_ids == [None, 0, 0, 1, 1, None, 2, 2, 3, None]


def test_save_reload_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"vocab.txt", "tokenizer.json", "tokenizer_config.json"}
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer" and config["do_lower_case"] is True
    assert config["model_max_length"] == 512 and config["mask_token"] == "[MASK]"
    again = Tokenizer.from_pretrained(tmp_path)
    from_txt = Tokenizer.from_vocab(tmp_path / "vocab.txt")
    hf = pytest.importorskip("transformers").BertTokenizerFast.from_pretrained(tmp_path)
    for text in TEXTS:
        ids = tok.encode(text).ids
        assert again.encode(text).ids == ids
        assert from_txt.encode(text).ids == ids
        assert hf(text)["input_ids"] == ids


def test_cased_options_are_honoured(folder, tmp_path):
    tok = Tokenizer.from_vocab(folder / "vocab.txt", do_lower_case=False)
    assert tok.convert_ids_to_tokens(tok.encode("Hello").ids)[1] != "hello"
    keep_accents = Tokenizer.from_vocab(folder / "vocab.txt", strip_accents=False)
    assert keep_accents.encode("café").ids != Tokenizer.from_vocab(folder / "vocab.txt").encode("café").ids
    # tokenizer_config.json decides the options of a folder, as in transformers.
    for name in ("vocab.txt", "tokenizer.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    config = {"do_lower_case": False, "tokenizer_class": "BertTokenizer"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert Tokenizer.from_pretrained(tmp_path).encode("Hello").ids == tok.encode("Hello").ids
    hf = pytest.importorskip("transformers").AutoTokenizer.from_pretrained(tmp_path)
    assert hf("Hello World")["input_ids"] == tok.encode("Hello World").ids


def test_errors_name_the_file_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        Tokenizer.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"no tokenizer.json or vocab.txt"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    with pytest.raises(ValueError, match=r"vocab.txt: vocabulary lacks BERT special token\(s\) \[MASK\]"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nhello\n")
    with pytest.raises(ValueError, match=r"vocab.txt:7: token 'hello' already appears on line 6"):
        Tokenizer.from_vocab(tmp_path / "vocab.txt")
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n")
    (tmp_path / "tokenizer_config.json").write_text('{"unk_token": "<unk>"}')
    with pytest.raises(ValueError, match=r"tokenizer_config.json: unk_token is '<unk>'"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{")
    with pytest.raises(ValueError, match=r"tokenizer_config.json:1: not valid JSON"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    (tmp_path / "vocab.txt").write_bytes(b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n" + "中".encode("gbk") + b"\n")
    with pytest.raises(ValueError, match=r"vocab.txt:6: byte 0xd6 is not valid UTF-8"):
        Tokenizer.from_pretrained(tmp_path)
    # A byte-order mark is not part of the first token; \r\n line ends are line ends.
    (tmp_path / "vocab.txt").write_bytes(b"\xef\xbb\xbf[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n[MASK]\r\nhello\r\n")
    assert Tokenizer.from_pretrained(tmp_path).convert_tokens_to_ids(["[PAD]", "hello"]) == [0, 5]
    tok = Tokenizer.from_vocab(tmp_path / "vocab.txt")
    with pytest.raises(ValueError, match="max_length=2 leaves no room"):
        tok.encode("hello", max_length=2)
    with pytest.raises(ValueError, match="use at least 4"):
        tok.encode("hello", "hello", max_length=3)
