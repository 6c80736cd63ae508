"""Token classification data: tag schemes and strict decoding, the readers and their errors, windows and
sub-word alignment on the MiniLM (English) and shipped Chinese tokenizers."""

from __future__ import annotations

import json
import random

import pytest
from conftest import ROOT, write_jsonl

from minibert.data.readers import DataError
from minibert.data.tag_features import (
    continuation_ids,
    plan_windows,
    tokenize_tagged,
    word_pieces,
    word_predictions,
)
from minibert.data.tagging import (
    SCHEMES,
    TaggedSentence,
    bmes_to_words,
    build_tag_map,
    convert_tags,
    count_ill_formed,
    encode_tags,
    ill_formed,
    read_conll,
    read_json_tagged,
    read_tagged,
    scheme_tags,
    spans,
    split_text,
    tag_error,
    tags_from_spans,
)
from minibert.tokenizer import Tokenizer

# ----------------------------------------------------------------------------- schemes


def test_tag_error_names_the_scheme_and_its_forms():
    assert all(tag_error(t, "IOB2") is None for t in ("O", "B-PER", "I-GPE-X", "I-WORK OF ART"))
    assert "not a tag of the IOB2 scheme (O, B-TYPE, I-TYPE)" in tag_error("E-PER", "IOB2")
    for bad in ("B", "B-", "PER", "b-PER", "X-PER", "B_PER", "", "B- PER", "B-PER "):
        assert tag_error(bad, "IOB2") is not None and tag_error(bad, "BIOES") is not None
    assert tag_error("S-LOC", "BIOES") is None and tag_error("E-LOC", "BIOES") is None
    assert [t for t in ("B", "M", "E", "S", "O", "I", "B-W") if tag_error(t, "BMES") is None] == ["B", "M", "E", "S"]


def test_strict_spans_by_hand():
    iob2 = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-PER", "B-ORG", "B-ORG", "I-ORG"]
    assert spans(iob2, "IOB2") == [("PER", 0, 2), ("LOC", 5, 6), ("ORG", 7, 8), ("ORG", 8, 10)]
    assert ill_formed(iob2, "IOB2") == 3  # I-LOC, I-LOC after O, I-PER after B-LOC
    bioes = ["B-PER", "E-PER", "S-LOC", "B-ORG", "I-ORG", "O", "B-LOC", "I-LOC", "E-LOC", "B-PER", "I-PER",
             "E-LOC", "I-PER", "E-PER", "B-PER"]
    assert spans(bioes, "BIOES") == [("PER", 0, 2), ("LOC", 2, 3), ("LOC", 6, 9)]
    assert ill_formed(bioes, "BIOES") == 8  # the unclosed B-ORG I-ORG, B-PER I-PER, the stray E-LOC, I-PER E-PER, B-PER
    bmes = ["B", "E", "S", "B", "M", "E", "M", "E", "B", "B", "E"]
    assert spans(bmes, "BMES") == [("", 0, 2), ("", 2, 3), ("", 3, 6), ("", 9, 11)]
    assert ill_formed(bmes, "BMES") == 3


def test_conversions_round_trip_through_entities():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(0, 12)
        entities, i = [], 0
        while i < n:
            length = rng.randint(1, 4)
            if rng.random() < 0.5 and i + length <= n:
                entities.append((rng.choice(["PER", "LOC"]), i, i + length))
                i += length
            i += rng.randint(0, 2)  # adjacent entities of one type too, when 0
        iob2, bioes = tags_from_spans(n, entities, "IOB2"), tags_from_spans(n, entities, "BIOES")
        assert spans(iob2, "IOB2") == entities == spans(bioes, "BIOES")
        assert convert_tags(iob2, "IOB2", "BIOES") == bioes and convert_tags(bioes, "BIOES", "IOB2") == iob2
        assert ill_formed(iob2, "IOB2") == ill_formed(bioes, "BIOES") == 0
    assert convert_tags(["O", "I-PER", "I-PER"], "IOB2", "BIOES") == ["O", "O", "O"]  # ill-formed: no entity
    with pytest.raises(ValueError, match="not a tag of the IOB2 scheme"):
        convert_tags(["S-PER"], "IOB2", "BIOES")
    with pytest.raises(ValueError, match="BMES tags words"):
        tags_from_spans(2, [], "BMES")
    with pytest.raises(ValueError, match="tag scheme 'IOB1': use one of IOB2, BIOES, BMES"):
        convert_tags(["O"], "IOB1", "IOB2")


def test_strict_spans_equal_seqeval_on_random_sequences():
    """seqeval's strict decoder (Tokens(...).entities) and ours agree on 300 random sequences per
    scheme, most of them ill-formed (every tag equally likely)."""
    scheme_module = pytest.importorskip("seqeval.scheme")
    rng = random.Random(1)
    for scheme, seqeval_scheme, prefixes in (("IOB2", scheme_module.IOB2, "BI"),
                                             ("BIOES", scheme_module.IOBES, "BIES")):
        tags = ["O"] + [f"{p}-{t}" for p in prefixes for t in ("PER", "LOC")]
        for _ in range(300):
            seq = [rng.choice(tags) for _ in range(rng.randint(0, 15))]
            theirs = [(e.tag, e.start, e.end) for e in scheme_module.Tokens(seq, seqeval_scheme).entities]
            assert spans(seq, scheme) == theirs, seq
    # BMES is BIOES with M for I and no types: seqeval reads untyped tags as type "_"
    for _ in range(300):
        seq = [rng.choice("BMES") for _ in range(rng.randint(0, 15))]
        as_bioes = ["I" if t == "M" else t for t in seq]
        theirs = [(e.start, e.end) for e in scheme_module.Tokens(as_bioes, scheme_module.IOBES).entities]
        assert [(s, e) for _, s, e in spans(seq, "BMES")] == theirs, seq


def test_scheme_tags_and_tag_map():
    assert scheme_tags(["PER", "LOC", "PER"], "IOB2") == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert scheme_tags(["X"], "BIOES") == ["O", "B-X", "I-X", "E-X", "S-X"]
    assert scheme_tags([], "BMES") == ["B", "M", "E", "S"]
    sentences = [TaggedSentence(["a", "b"], ["S-ORG", "O"], 1), TaggedSentence(["c"], ["B-PER"], 3)]
    # every tag of each type seen, though the data lacks I-ORG, E-PER ...: ids do not depend on the file's order
    assert build_tag_map(sentences, "BIOES") == {t: i for i, t in enumerate(scheme_tags(["ORG", "PER"], "BIOES"))}
    assert build_tag_map(sentences[::-1], "BIOES") == build_tag_map(sentences, "BIOES")
    assert continuation_ids({"O": 0, "B-X": 1, "I-X": 2, "B-Y": 3}) == {0: 0, 1: 2, 2: 2, 3: 3}
    assert continuation_ids({"B": 0, "M": 1, "E": 2, "S": 3}) == {0: 1, 1: 1, 2: 2, 3: 3}


def test_bmes_to_words_keeps_every_character():
    chars = list("我爱北京天安门")
    assert bmes_to_words(chars, ["S", "S", "B", "E", "B", "M", "E"]) == ["我", "爱", "北京", "天安门"]
    # ill-formed predictions still give words that spell the text: M after S starts a word, B B splits
    assert bmes_to_words(chars, ["M", "S", "M", "E", "B", "B", "B"]) == ["我", "爱", "北京", "天", "安", "门"]
    assert bmes_to_words([], []) == []
    with pytest.raises(ValueError, match="2 tokens but 1 tags"):
        bmes_to_words(["a", "b"], ["S"])


# ----------------------------------------------------------------------------- readers


def _write(path, text: str, encoding: str = "utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_read_conll_tabs_spaces_columns_docstart(tmp_path):
    text = ("-DOCSTART- -X- -X- O\n\n"
            "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\n"
            "New York\tB-LOC\nis\tO\n"
            "-DOCSTART-\tO\n"
            "中  B-LOC\n国 I-LOC\n")
    sentences = read_conll(_write(tmp_path / "train.conll", "\ufeff" + text.replace("\n", "\r\n")))
    assert [(s.tokens, s.tags, s.line) for s in sentences] == [
        (["EU", "rejects"], ["B-ORG", "O"], 3),
        (["New York", "is"], ["B-LOC", "O"], 7),  # a tab-separated line keeps the spaces of its token
        (["中", "国"], ["B-LOC", "I-LOC"], 10),
    ]
    assert sentences[2].token_line(1) == 11
    bmes = read_conll(_write(tmp_path / "cws.txt", "我 S\n爱 S\n北 B\n京 E\n"), scheme="BMES")
    assert bmes[0].tags == ["S", "S", "B", "E"]


@pytest.mark.parametrize("text, scheme, message", [
    ("a O\nb\n", "IOB2", r"bad.txt:2: 'b' has no tag; write the token and its tag separated by a tab or a space"),
    ("a O\n\nb\t\n", "IOB2", r"bad.txt:3: the tag of token 'b' is empty; give every token a tag \(O outside"),
    ("a\tO\n\tO\n", "IOB2", r"bad.txt:2: the token \(first column\) is empty"),
    ("a O\nb E-PER\n", "IOB2", r"bad.txt:2: tag 'E-PER' is not a tag of the IOB2 scheme \(O, B-TYPE, I-TYPE\); "
                               r"fix the tag, or read the file with the scheme it uses \(IOB2, BIOES, BMES\)"),
    ("a B-PER\nb O\n", "BMES", r"bad.txt:1: tag 'B-PER' is not a tag of the BMES scheme \(B, M, E, S\)"),
    ("\n\n-DOCSTART- O\n", "IOB2", r"bad.txt: no tagged tokens found"),
    ("", "IOB2", r"bad.txt: no tagged tokens found"),
])
def test_read_conll_errors_name_file_line_and_fix(tmp_path, text, scheme, message):
    with pytest.raises(DataError, match=message):
        read_conll(_write(tmp_path / "bad.txt", text), scheme)


def test_read_conll_missing_file_and_encoding(tmp_path):
    with pytest.raises(DataError, match="nope.txt: file not found"):
        read_conll(tmp_path / "nope.txt")
    with pytest.raises(DataError, match=r"gbk.txt:2: byte 0x.. is not valid UTF-8"):
        read_conll(_write(tmp_path / "gbk.txt", "a O\n中 B-LOC\n", "gbk"))


def test_read_json_token_records(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [
        {"tokens": ["-DOCSTART-"], "ner_tags": [0]},
        {"tokens": ["EU", "rejects", "German"], "ner_tags": [3, 0, 7]},
        {"tokens": [], "ner_tags": []},
        {"id": "2", "tokens": ["Peter", "Blackburn"], "ner_tags": [1, 2]},
    ])
    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    got = read_json_tagged(path, label_names=names)
    assert [(s.tokens, s.tags, s.line) for s in got] == [
        (["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"], 2), (["Peter", "Blackburn"], ["B-PER", "I-PER"], 4)]
    strings = tmp_path / "train.json"
    strings.write_text(json.dumps([{"tokens": ["我", "爱"], "tags": ["S", "S"]}]), encoding="utf-8")
    assert read_tagged(strings, "BMES")[0].tags == ["S", "S"]


@pytest.mark.parametrize("record, message", [
    ({"tokens": ["a", "b"], "tags": ["O"]}, r"bad.jsonl:2: 2 tokens but 1 tags; give every token exactly one tag"),
    ({"tokens": ["a"], "ner_tags": [1]}, r"bad.jsonl:2: tags are integer ids; pass the label names in id order"),
    ({"tokens": ["a", "b"], "tags": ["O", ""]}, r"bad.jsonl:2: the tag of token 'b' is empty"),
    ({"tokens": ["a"], "tags": ["B-PER "]}, r"bad.jsonl:2: tag 'B-PER ' is not a tag of the IOB2 scheme"),
    ({"tokens": ["a"], "tags": [True]}, r"bad.jsonl:2: the tag of token 'a' is a boolean"),
    ({"tokens": ["a"]}, r"bad.jsonl:2: object has 'tokens' but no 'tags' or 'ner_tags' field"),
    ({"tokens": "a b", "tags": ["O"]}, r"bad.jsonl:2: 'tokens' must be a list of strings, got a string"),
    ({"words": ["a"], "tags": ["O"]}, r"bad.jsonl:2: expected an object with 'tokens' and 'tags', or with 'text' and "
                                      r"'entities', got fields 'words', 'tags'"),
    ({"text": "ab", "entities": [[0, 3, "PER"]]}, r"bad.jsonl:2: entity \[0, 3, 'PER'\] is outside the text of 2 "
                                                  r"characters; offsets count characters from 0 and end is exclusive"),
    ({"text": "abc", "entities": [[1, 1, "PER"]]}, r"bad.jsonl:2: entity \[1, 1, 'PER'\] is outside the text"),
    ({"text": "abcd", "entities": [[0, 2, "PER"], {"start": 1, "end": 3, "label": "LOC"}]},
     r"bad.jsonl:2: entities \[0, 2\) PER and \[1, 3\) LOC overlap; each token takes one tag, so keep one of them"),
    ({"text": "a b", "entities": [[1, 2, "PER"]]}, r"bad.jsonl:2: entity \[1, 2, 'PER'\] covers only whitespace"),
    ({"text": "ab", "entities": [[0, 1]]}, r"bad.jsonl:2: entity \[0, 1\] is not \[start, end, label\]"),
    ({"text": "ab", "entities": [[0, 1, ""]]}, r"bad.jsonl:2: entity \[0, 1, ''\]: the label must be an entity type"),
    ({"text": "ab", "entities": [["0", 1, "X"]]}, r"bad.jsonl:2: entity \['0', 1, 'X'\]: start and end must be"),
    ({"text": "ab"}, r"bad.jsonl:2: object has 'text' but no 'entities' field .* or \[\] for a text without entities"),
])
def test_read_json_errors_name_file_line_and_fix(tmp_path, record, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"tokens": ["ok"], "tags": ["O"]}, record])
    with pytest.raises(DataError, match=message):
        read_json_tagged(path)


def test_span_records_become_per_character_tags(tmp_path):
    path = write_jsonl(tmp_path / "spans.jsonl", [
        {"text": "国务院总理朱镕基在北京", "entities": [[5, 8, "PER"], {"start": 9, "end": 11, "label": "LOC"}]},
        {"text": "  ", "entities": []},
        {"text": "我在 上海", "entities": [[3, 5, "LOC"]]},
    ])
    got = read_json_tagged(path)
    assert len(got) == 2 and got[1].line == 3
    assert got[0].tokens == list("国务院总理朱镕基在北京")
    assert got[0].tags == ["O"] * 5 + ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC"]
    assert got[1].tokens == ["我", "在", "上", "海"]  # whitespace is no token: it has no piece to tag
    assert read_json_tagged(path, "BIOES")[0].tags[5:] == ["B-PER", "I-PER", "E-PER", "O", "B-LOC", "E-LOC"]
    words = read_json_tagged(write_jsonl(tmp_path / "en.jsonl", [
        {"text": "Mr. Obama's visit to NewYork.", "entities": [[4, 9, "PER"], [24, 28, "LOC"]]}]),
        per_character=False)[0]
    assert words.tokens == ["Mr", ".", "Obama", "'", "s", "visit", "to", "New", "York", "."]
    assert words.tags == ["O", "O", "B-PER", "O", "O", "O", "O", "O", "B-LOC", "O"]
    with pytest.raises(DataError, match=r"spans.jsonl:1: a record of text and entity spans needs a typed scheme"):
        read_json_tagged(path, "BMES")


def test_split_text_offsets():
    text = "朱镕基 met\tMerkel (2019)年。"
    per_char = split_text(text)
    assert [text[s:e] for s, e in per_char] == [c for c in text if not c.isspace()]
    words = split_text(text, per_character=False)
    assert [text[s:e] for s, e in words] == ["朱", "镕", "基", "met", "Merkel", "(", "2019", ")", "年", "。"]
    assert [text[s:e] for s, e in split_text(text, per_character=False, cuts=[6, 10])] == [
        "朱", "镕", "基", "me", "t", "Me", "rkel", "(", "2019", ")", "年", "。"]


def test_ill_formed_tags_are_counted_and_unknown_tags_name_their_line(tmp_path):
    path = _write(tmp_path / "eval.txt", "a I-PER\nb O\n\nc B-PER\nd I-LOC\ne B-MISC\n")
    sentences = read_conll(path)
    assert count_ill_formed(sentences) == 2  # I-PER at a sentence start, I-LOC after B-PER
    label2id = {t: i for i, t in enumerate(scheme_tags(["PER", "LOC"], "IOB2"))}
    with pytest.raises(DataError, match=r"eval.txt:6: tag 'B-MISC' of token 'e' is not one of the model's tags "
                                        r"\(O, B-LOC, I-LOC, B-PER, I-PER\); fix the tag, or train with data that "
                                        r"has it"):
        encode_tags(sentences, label2id, path)
    label2id.update({"B-MISC": 5, "I-MISC": 6})
    assert encode_tags(sentences, label2id, path) == [[4, 0], [3, 2, 5]]


# ----------------------------------------------------------------------------- windows and alignment


def test_windows_partition_the_pieces():
    """Random sentences (words of 1-4 pieces), window sizes and strides: every window holds at most
    `size` pieces, consecutive windows overlap by the stride, or up to a word more (a window starts at a
    word start), and the own ranges tile 0..n, each inside its window; a window ends on a word boundary
    whenever one lies in its second half."""
    rng = random.Random(0)
    for _ in range(500):
        words = [w for w in range(rng.randint(0, 60)) for _ in range(rng.choice([1, 1, 1, 2, 4]))]
        size = rng.randint(1, 20)
        stride = rng.randint(0, size - 1)
        windows = plan_windows(words, size, stride)
        n = len(words)
        assert windows[0][0] == 0 and windows[-1][1] == n and windows[0][2] == 0 and windows[-1][3] == n
        for k, (s, e, own_s, own_e) in enumerate(windows):
            assert 0 < e - s <= size or n == 0
            assert s <= own_s <= own_e <= e
            if k:
                prev = windows[k - 1]
                assert prev[3] == own_s and prev[0] < s and prev[1] <= e and s <= prev[1]
                assert stride <= prev[1] - s <= stride + 3 or s == prev[0] + 1
            starts = {i for i in range(1, n) if words[i] != words[i - 1]}
            if e < n and any(s + size // 2 < b <= s + size for b in starts):
                assert e in starts or e == s + size
    with pytest.raises(ValueError, match="stride=4 with windows of 4 pieces"):
        plan_windows([0] * 9, 4, 4)


def test_word_pieces_equal_encoding_whole_sentences(minilm_tokenizer):
    """Encoding each distinct word once gives the pieces and word ids of encoding every sentence with
    is_pretokenized: English words that split into several pieces, punctuation inside a word, accents,
    a zero-width space and an empty word (no pieces), CJK characters, and a sentence without words."""
    zh = Tokenizer.from_pretrained(ROOT / "models" / "zh-small")
    sentences = [["Don't", "Café", "naïve", "\u200b", "", "résumé,", "Schwarzwaldhausen", "诸葛亮", "1998年"],
                 [], list("国务院总理朱镕基在北京会见了美国客人𠀀ａ"), ["e\u0301", "x y"]]
    for tokenizer in (minilm_tokenizer, zh):
        expected = tokenizer.encode_batch(sentences, is_pretokenized=True)
        for (ids, words), enc in zip(word_pieces(tokenizer, sentences), expected, strict=True):
            assert ids.tolist() == enc.ids[1:-1] and words.tolist() == enc.word_ids[1:-1]


SENTENCE = ["Angela", "Merkel", "visited", "Schwarzwaldhausen", "(", "Germany", ")", "in", "2019", "."]
TAGS = ["B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC", "O", "O", "O", "O"]


def _label2id(scheme="IOB2"):
    return {t: i for i, t in enumerate(scheme_tags(["PER", "LOC"], scheme))}


def test_first_piece_alignment_on_minilm(minilm_tokenizer):
    label2id = _label2id()
    labels = [[label2id[t] for t in TAGS]]
    out = tokenize_tagged(minilm_tokenizer, [SENTENCE], labels, max_length=64)
    assert (out.split_sentences, out.unknown_pieces, out.empty_words, len(out.features)) == (0, 0, 0, 1)
    f = out.features[0]
    pieces = minilm_tokenizer.convert_ids_to_tokens(f["input_ids"].tolist())
    assert pieces[:6] == ["[CLS]", "angela", "mer", "##kel", "visited", "schwarz"] and pieces[-1] == "[SEP]"
    id2label = {i: t for t, i in label2id.items()}
    got = [(p, id2label.get(int(x), None)) for p, x in zip(pieces, f["labels"])]
    assert got[:9] == [("[CLS]", None), ("angela", "B-PER"), ("mer", "I-PER"), ("##kel", None), ("visited", "O"),
                       ("schwarz", "B-LOC"), ("##wald", None), ("##hausen", None), ("(", "O")]
    assert (f["prediction_mask"] == (f["labels"] != -100)).all()
    assert f["word_ids"].tolist()[:4] == [-1, 0, 1, 1] and f["word_ids"][-1] == -1

    every = tokenize_tagged(minilm_tokenizer, [SENTENCE], labels, max_length=64, label_all_tokens=True,
                            label2id=label2id).features[0]
    got = [id2label.get(int(x)) for x in every["labels"][1:9]]
    assert got == ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC", "O"]  # B- becomes I- on later pieces
    assert every["prediction_mask"].tolist() == f["prediction_mask"].tolist()  # predictions: first pieces still
    with pytest.raises(ValueError, match="label_all_tokens needs label2id"):
        tokenize_tagged(minilm_tokenizer, [SENTENCE], labels, max_length=64, label_all_tokens=True)


@pytest.mark.parametrize("label_all_tokens", [False, True])
def test_long_sentences_become_overlapping_windows_labelled_once(minilm_tokenizer, label_all_tokens):
    label2id = _label2id()
    sentences = [SENTENCE * 3, SENTENCE[:3], [], ["\u200b", "Merkel"]]  # long, short, empty, a word without pieces
    tags = [TAGS * 3, TAGS[:3], [], ["O", "B-PER"]]
    labels = [[label2id[t] for t in ts] for ts in tags]
    full = tokenize_tagged(minilm_tokenizer, sentences, labels, max_length=4096, label_all_tokens=label_all_tokens,
                           label2id=label2id).features
    out = tokenize_tagged(minilm_tokenizer, sentences, labels, max_length=12, stride=4,
                          label_all_tokens=label_all_tokens, label2id=label2id)
    assert out.split_sentences == 1 and out.empty_words == 1
    assert all(len(f["input_ids"]) <= 12 for f in out.features)
    long = [f for f in out.features if f["sentence"] == 0]
    assert len(long) > 3
    # the windows overlap, yet the labels over all windows are those of the unsplit sentence, each once
    pieces = [int(x) for f in long for x in f["input_ids"][1:-1]]
    assert len(pieces) > len(full[0]["input_ids"]) - 2
    labelled = sorted((int(w), int(x)) for f in long for w, x in zip(f["word_ids"], f["labels"]) if x != -100)
    expected = sorted((int(w), int(x)) for w, x in zip(full[0]["word_ids"], full[0]["labels"]) if x != -100)
    assert labelled == expected
    # predictions read back per word: the labels themselves as the "predictions" give the tags back
    words = word_predictions(out.features, [f["labels"] for f in out.features], [len(s) for s in sentences])
    id2label = {i: t for t, i in label2id.items()}
    assert [[id2label.get(x) for x in ws] for ws in words] == [TAGS * 3, TAGS[:3], [], [None, "B-PER"]]
    assert [f["sentence"] for f in out.features][-3:] == [1, 2, 3]
    assert out.features[-2]["input_ids"].tolist() == [minilm_tokenizer.cls_token_id, minilm_tokenizer.sep_token_id]


def test_window_arguments_are_checked(minilm_tokenizer):
    with pytest.raises(ValueError, match="max_length=2 leaves no room"):
        tokenize_tagged(minilm_tokenizer, [SENTENCE], max_length=2)
    with pytest.raises(ValueError, match=r"stride=10: use 0 <= stride < max_length - 2 = 10"):
        tokenize_tagged(minilm_tokenizer, [SENTENCE], max_length=12, stride=10)
    assert "labels" not in tokenize_tagged(minilm_tokenizer, [SENTENCE], max_length=12).features[0]


def test_chinese_one_character_per_piece_unknowns_keep_their_label():
    tokenizer = Tokenizer.from_pretrained(ROOT / "models" / "zh-small")
    text = "国务院总理朱镕基在北京会见了美国客人𠀀"  # the last character is outside the vocabulary
    chars = [text[s:e] for s, e in split_text(text)]
    tags = ["O"] * 5 + ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC"] + ["O"] * 3 + ["B-LOC", "I-LOC", "O", "O",
                                                                                     "B-PER"]
    label2id = _label2id()
    out = tokenize_tagged(tokenizer, [chars], [[label2id[t] for t in tags]], max_length=128)
    f = out.features[0]
    assert len(f["input_ids"]) == len(chars) + 2 and f["word_ids"][1:-1].tolist() == list(range(len(chars)))
    assert out.unknown_pieces == 1 and f["input_ids"][-2] == tokenizer.unk_token_id
    assert f["labels"][1:-1].tolist() == [label2id[t] for t in tags]  # [UNK] keeps B-PER
    windows = tokenize_tagged(tokenizer, [chars * 20], [[label2id[t] for t in tags] * 20], max_length=128, stride=32)
    assert windows.split_sentences == 1 and len(windows.features) == 4
    assert sum(int((w["labels"] != -100).sum()) for w in windows.features) == 20 * len(chars)


def test_schemes_constant():
    assert SCHEMES == ("IOB2", "BIOES", "BMES")
