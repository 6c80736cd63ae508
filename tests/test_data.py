"""Readers, features, MaskingCollator statistics and invariants, ClassificationCollator, sampler."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import CLS, MASK, PAD, SEP, SPECIALS, UNK, vocab_tokenizer
from torch.utils.data import DataLoader

import minibert.data.collators as collators
from minibert.data import (
    ClassificationCollator,
    DataError,
    Example,
    LengthGroupedSampler,
    MaskingCollator,
    build_label_map,
    encode_labels,
    group_texts,
    is_regression,
    load_mlm_features,
    padding_fraction,
    read_labelled,
    read_texts,
    tokenize_examples,
    tokenize_texts,
)
from minibert.tokenizer import Tokenizer

UNUSED = [f"[unused{i}]" for i in range(5)]
HANZI = list("诸葛亮是丞相刘备关羽张飞曹操")
WORDS = [f"w{i}" for i in range(2000)]  # ordinary tokens: ids ORDINARY.start .. ORDINARY.stop - 1
VOCAB = SPECIALS + UNUSED + HANZI + ["##s"] + WORDS
ORDINARY = range(VOCAB.index("w0"), len(VOCAB))


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    return vocab_tokenizer(tmp_path_factory.mktemp("vocab"), VOCAB)


def random_features(n: int, lo: int, hi: int, seed: int = 0, unk_rate: float = 0.0,
                    max_word: int = 1) -> list[dict]:
    """n sequences of lo..hi ordinary tokens between [CLS] and [SEP], words of 1..max_word tokens."""
    rng = np.random.default_rng(seed)
    features = []
    for length in rng.integers(lo, hi + 1, n):
        ids = rng.integers(ORDINARY.start, ORDINARY.stop, length)
        ids[rng.random(length) < unk_rate] = UNK
        words = np.repeat(np.arange(length), rng.integers(1, max_word + 1, length))[:length]
        features.append({
            "input_ids": np.concatenate([[CLS], ids, [SEP]]),
            "token_type_ids": np.zeros(length + 2, dtype=np.int8),
            "word_ids": np.concatenate([[-1], words, [-1]]),
        })
    return features


def collate_all(collator: MaskingCollator, features: list[dict], batch_size: int = 64) -> list[dict]:
    return [collator(features[i : i + batch_size]) for i in range(0, len(features), batch_size)]


def originals(features: list[dict], batch: dict, start: int) -> torch.Tensor:
    """The unmasked input_ids of a collated batch, padded the same way."""
    ids = torch.full_like(batch["input_ids"], PAD)
    for i, f in enumerate(features[start : start + len(ids)]):
        ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
    return ids


# ---------------------------------------------------------------------------------------------- masking


@pytest.mark.parametrize("mlm, mask, rand", [(0.15, 0.8, 0.1), (0.3, 0.5, 0.25)])
def test_masking_ratios(tok, mlm, mask, rand):
    # 2,500 sequences of 40..160 tokens: ~250k maskable tokens. Each row gets exactly mlm * n selected
    # in expectation (the straddling token is drawn with its fractional probability) and mlm * 40 >= 6,
    # so the at-least-one rule never adds any. The selected fraction's standard deviation is below
    # 0.0004; the category fractions over >= 37k selected tokens have std <= 0.0026, so the +/-0.01
    # tolerances are about 4 sigma (and the seed is fixed, so the test is deterministic anyway).
    # A random replacement equals the original token with probability 1/2000 (the ordinary vocabulary
    # here), which moves at most 0.00005 from "random" to "unchanged": negligible against 0.01.
    features = random_features(2500, 40, 160)
    collator = MaskingCollator(tok, mlm_probability=mlm, mask_prob=mask, random_prob=rand, seed=1)
    maskable = selected = masked = unchanged = 0
    for start, batch in zip(range(0, 2500, 64), collate_all(collator, features)):
        orig = originals(features, batch, start)
        sel = batch["labels"] != -100
        maskable += int((batch["attention_mask"].bool() & (orig > MASK)).sum())
        selected += int(sel.sum())
        masked += int((batch["input_ids"][sel] == MASK).sum())
        unchanged += int((batch["input_ids"][sel] == orig[sel]).sum())
    assert maskable >= 200_000
    assert selected / maskable == pytest.approx(mlm, abs=0.005)
    assert masked / selected == pytest.approx(mask, abs=0.01)
    assert (selected - masked - unchanged) / selected == pytest.approx(rand, abs=0.01)
    assert unchanged / selected == pytest.approx(1 - mask - rand, abs=0.01)


def test_masking_invariants(tok):
    # Short rows (a single maskable token, or none: only [UNK]s) and a low probability exercise the
    # at-least-one rule; [UNK] and padding must never be chosen.
    features = random_features(300, 1, 30, seed=3, unk_rate=0.2)
    features.append({"input_ids": [CLS, UNK, SEP], "token_type_ids": [0, 0, 0]})
    collator = MaskingCollator(tok, mlm_probability=0.05, mask_prob=0.2, random_prob=0.6,
                               pad_to_multiple_of=8, seed=5)
    special = torch.tensor(sorted(tok.all_special_ids))
    unused = torch.tensor([tok.convert_tokens_to_ids(t) for t in UNUSED])
    for start, batch in zip(range(0, len(features), 32), collate_all(collator, features, 32)):
        assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
        assert all(t.dtype == torch.int64 for t in batch.values())
        assert batch["input_ids"].shape[1] % 8 == 0
        orig = originals(features, batch, start)
        out, labels = batch["input_ids"], batch["labels"]
        sel = labels != -100
        maskable = batch["attention_mask"].bool() & ~torch.isin(orig, special)
        assert not (sel & ~maskable).any(), "a special token or padding was selected"
        assert torch.equal(labels[sel], orig[sel])
        assert torch.equal(out[~sel], orig[~sel]), "an unselected token changed"
        replaced = sel & (out != MASK) & (out != orig)
        assert not torch.isin(out[replaced], torch.cat([special, unused])).any()
        has_maskable = maskable.any(1)
        assert (sel.any(1) == has_maskable).all(), "a row with maskable tokens has nothing selected"
    # The replacement pool is exactly the ordinary vocabulary: no specials, no [unusedN].
    assert collator.random_ids.tolist() == list(range(len(SPECIALS) + len(UNUSED), len(VOCAB)))


def test_whole_word_masking_keeps_words_whole(tok):
    features = random_features(1500, 40, 160, seed=7, max_word=4)
    collator = MaskingCollator(tok, whole_word_mask=True, seed=2)
    maskable = selected = 0
    for batch, start in zip(collate_all(collator, features), range(0, len(features), 64)):
        sel = batch["labels"] != -100
        for i, f in enumerate(features[start : start + len(sel)]):
            words = torch.as_tensor(f["word_ids"])
            row = sel[i, : len(words)]
            # A word's pieces are adjacent, so a partly masked word shows as a change inside a word.
            same_word = words[1:] == words[:-1]
            assert torch.equal(row[1:][same_word], row[:-1][same_word]), "a word was partly masked"
            maskable += int((words >= 0).sum())
            selected += int(row.sum())
    # Words of 1-4 tokens are taken until each row's budget; the straddling word is taken with its
    # fractional probability, so the expected fraction is exactly 0.15 (std ~0.002 here).
    assert selected / maskable == pytest.approx(0.15, abs=0.01)


def test_whole_word_masking_on_segmented_chinese(tok, tmp_path):
    corpus = tmp_path / "pd.txt"
    corpus.write_text("诸葛 亮 是 丞相\n刘备 关羽 张飞\n曹操 是 丞相 诸葛亮\n" * 200, encoding="utf-8")
    features = load_mlm_features(corpus, tok, max_length=32, whole_word_mask=True)
    assert features[0]["word_ids"].tolist() == [-1, 0, 0, 1, 2, 3, 3, -1]
    batch = MaskingCollator(tok, whole_word_mask=True, seed=0)(features)
    sel = batch["labels"] != -100
    for f, row in zip(features, sel):
        words = torch.as_tensor(f["word_ids"]).long()
        for w in range(int(words.max()) + 1):
            picked = row[: len(words)][words == w]
            assert picked.all() or not picked.any()
    # 诸葛亮 (3 characters) is one word in line 3: it is masked as a unit at least sometimes.
    assert any(sel[i, 6:9].all() for i in range(2, len(features), 3))
    unsegmented = tmp_path / "raw.txt"
    unsegmented.write_text("诸葛亮是丞相\n刘备关羽张飞\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"raw.txt: whole-word masking .* no line has two words"):
        load_mlm_features(unsegmented, tok, max_length=32, whole_word_mask=True)


def test_same_seed_same_batches_different_seed_different(tok):
    features = random_features(64, 20, 60, seed=11)

    def run(**kw):
        collator = MaskingCollator(tok, **kw)
        return [b["input_ids"] for b in collate_all(collator, features, 16)]

    assert all(torch.equal(a, b) for a, b in zip(run(seed=0), run(seed=0)))
    assert not all(torch.equal(a, b) for a, b in zip(run(seed=0), run(seed=1)))
    assert not all(torch.equal(a, b) for a, b in zip(run(seed=0), run(seed=0, rank=1)))
    assert all(torch.equal(a, b) for a, b in
               zip(run(seed=0, whole_word_mask=True), run(seed=0, whole_word_mask=True)))


def test_epochs_workers_and_resume(tok, monkeypatch):
    features = random_features(32, 20, 60, seed=12)
    collator = MaskingCollator(tok, seed=3)
    epoch0 = collator(features)["labels"]
    collator.set_epoch(1)
    epoch1 = collator(features)["labels"]
    assert not torch.equal(epoch0, epoch1)
    collator.set_epoch(0)
    assert torch.equal(collator(features)["labels"], epoch0)

    # Resume: the state after two batches reproduces the third.
    collator.set_epoch(2)
    collator(features), collator(features)
    state = collator.state_dict()
    third = collator(features)["labels"]
    resumed = MaskingCollator(tok, seed=3)
    resumed.load_state_dict(state)
    assert torch.equal(resumed(features)["labels"], third)

    # Inside DataLoader worker k the collator (even a forked copy with a live generator) re-seeds from
    # (seed, epoch, rank, k): distinct across workers, reproducible per worker.
    def in_worker(k: int, c: MaskingCollator) -> torch.Tensor:
        monkeypatch.setattr(collators, "get_worker_info", lambda: SimpleNamespace(id=k))
        return c(features)["labels"]

    w0, w1 = in_worker(0, MaskingCollator(tok, seed=3)), in_worker(1, MaskingCollator(tok, seed=3))
    assert not torch.equal(w0, w1) and not torch.equal(w0, epoch0)
    assert torch.equal(in_worker(0, MaskingCollator(tok, seed=3)), w0)
    forked = MaskingCollator(tok, seed=3)
    monkeypatch.setattr(collators, "get_worker_info", lambda: None)
    forked(features)  # the main process's generator is live when the worker is forked
    assert torch.equal(in_worker(1, forked), w1)


def test_real_dataloader_workers_are_distinct_and_reproducible(tok):
    same = random_features(1, 60, 60, seed=13) * 8  # identical rows: only the randomness differs

    def run() -> list[torch.Tensor]:
        loader = DataLoader(same, batch_size=4, num_workers=2, collate_fn=MaskingCollator(tok, seed=9))
        return [b["labels"] for b in loader]

    first, second = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], first[1]), "both workers drew the same masks"


def test_collator_validates_probabilities(tok):
    with pytest.raises(ValueError, match=r"mask_prob \+ random_prob must be <= 1.*0.9 \+ 0.2"):
        MaskingCollator(tok, mask_prob=0.9, random_prob=0.2)
    with pytest.raises(ValueError, match=r"mlm_probability must be in \(0, 1\], got 1.5"):
        MaskingCollator(tok, mlm_probability=1.5)
    with pytest.raises(ValueError, match=r"random_prob must be in \[0, 1\], got -0.1"):
        MaskingCollator(tok, random_prob=-0.1)
    with pytest.raises(ValueError, match="word_ids"):
        MaskingCollator(tok, whole_word_mask=True)([{"input_ids": [CLS, 20, SEP]}])


# ---------------------------------------------------------------------------------------------- readers


def write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_read_texts_formats(tmp_path):
    txt = write(tmp_path, "a.txt", b"\xef\xbb\xbffirst line\r\n\n  second  \n\n\xe4\xb8\xad\xe6\x96\x87\n")
    assert read_texts(txt) == ["first line", "second", "中文"]
    js = write(tmp_path, "train.json", json.dumps([{"text": "诸葛亮"}, {"text": "  "}, {"text": "b", "id": 2}]))
    assert read_texts(js) == ["诸葛亮", "b"]
    assert read_texts(write(tmp_path, "s.json", '["x", "y"]')) == ["x", "y"]
    jl = write(tmp_path, "c.jsonl", '{"text": "one"}\n\n{"text": "two\\nlines"}\n')
    assert read_texts(jl) == ["one", "two\nlines"]
    assert read_texts(write(tmp_path, "d.jsonl", '{"sentence": "s"}\n'), text_column="sentence") == ["s"]


def test_read_labelled_formats(tmp_path):
    pretty = json.dumps([{"text": "a", "label": "pos"}, {"text": "b", "label": "neg", "text_pair": "c"}],
                        indent=2)
    examples = read_labelled(write(tmp_path, "t.json", pretty))
    assert examples == [Example("a", "pos", None, 2), Example("b", "neg", "c", 6)]
    csv_text = 'text,label,text_pair\n"hello, world",10,\n\nplain,2,p\n"multi\nline ""quoted""",2,\n'
    examples = read_labelled(write(tmp_path, "t.csv", csv_text))
    assert examples == [Example("hello, world", 10, None, 2), Example("plain", 2, "p", 4),
                        Example('multi\nline "quoted"', 2, None, 5)]
    assert build_label_map(examples) == {"2": 0, "10": 1}  # numeric order, not "10" < "2"
    tsv = read_labelled(write(tmp_path, "t.tsv", 'sentence\tlabel\nit\'s "great"\tpos\n'), text_column="sentence")
    assert tsv == [Example('it\'s "great"', "pos", None, 2)]
    jl = read_labelled(write(tmp_path, "r.jsonl", '{"text": "x", "label": 0.5}\n{"text": "y", "label": 2}\n'))
    assert is_regression(jl) and not is_regression(examples)
    labels = read_labelled(write(tmp_path, "l.jsonl", "".join(
        json.dumps({"text": "x", "label": lab}) + "\n" for lab in ["b", "a", "c", "a"])))
    label2id = build_label_map(labels)
    assert label2id == {"a": 0, "b": 1, "c": 2}
    assert encode_labels(labels, label2id, "l.jsonl") == [1, 0, 2, 0]


def test_unseen_eval_label_names_label_and_line(tmp_path):
    train = read_labelled(write(tmp_path, "train.jsonl", '{"text": "a", "label": "pos"}\n'
                                                           '{"text": "b", "label": "neg"}\n'))
    path = write(tmp_path, "eval.jsonl", '{"text": "a", "label": "pos"}\n\n{"text": "c", "label": "maybe"}\n')
    with pytest.raises(DataError, match=r"eval.jsonl:3: label 'maybe' does not occur in the training data"):
        encode_labels(read_labelled(path), build_label_map(train), path)


READ_TEXT_ERRORS = [
    ("missing.txt", None, r"missing.txt: file not found"),
    ("corpus.xml", "<a/>", r"corpus.xml: unknown extension '.xml'; use one of .txt, .json, .jsonl"),
    ("empty.txt", "\n \n", r"empty.txt: file is empty"),
    ("empty.json", "[]", r"empty.json: no texts found"),
    ("bad.json", '[\n  "a",\n  "b"\n  "c"\n]', r"bad.json:4: invalid JSON \(Expecting ',' delimiter"),
    ("bad.jsonl", '{"text": "a"}\n\n{"text": "b",}\n', r"bad.jsonl:3: invalid JSON"),
    ("dict.json", '{"text": "a"}', r"dict.json:1: expected a JSON list of examples, got an object"),
    ("notext.json", '[\n {"text": "a"},\n {"sentence": "b"}\n]',
     r"notext.json:3: object has no 'text' field \(fields: 'sentence'\)"),
    ("nonstr.jsonl", '{"text": "a"}\n{"text": 5}\n', r"nonstr.jsonl:2: field 'text' is a number, expected a string"),
    ("list.jsonl", '{"text": "a"}\n[1, 2]\n', r"list.jsonl:2: expected a string or an object .* got an array"),
    ("gbk.txt", b"ok\nfine\n" + "中文\n".encode("gbk"), r"gbk.txt:3: byte 0xd6 is not valid UTF-8"),
]


@pytest.mark.parametrize("name, content, message", READ_TEXT_ERRORS, ids=[c[0] for c in READ_TEXT_ERRORS])
def test_read_texts_errors(tmp_path, name, content, message):
    path = tmp_path / name if content is None else write(tmp_path, name, content)
    with pytest.raises(DataError, match=message):
        read_texts(path)


READ_LABELLED_ERRORS = [
    ("cols.csv", "sentence,label\nx,1\n",
     r"cols.csv:1: header has no column 'text' \(columns: 'sentence', 'label'\)"),
    ("tabs.csv", "text\tlabel\nx\t1\n", r"tabs.csv:1: header has no column 'text'.*looks tab-separated"),
    ("fields.csv", "text,label\nx,1\ny,2,3\n", r"fields.csv:3: row has 3 fields but the header has 2"),
    ("nolabel.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n', r"nolabel.jsonl:2: object has no 'label'"),
    ("emptylabel.tsv", "text\tlabel\nx\t\n", r"emptylabel.tsv:2: label is empty"),
    ("boollabel.json", '[{"text": "a", "label": true}]', r"boollabel.json:1: field 'label' is a boolean"),
    ("pair.jsonl", '{"text": "a", "label": 1, "text_pair": 3}\n', r"pair.jsonl:1: field 'text_pair' is a number"),
    ("header.csv", "text,label\n\n", r"header.csv: has a header but no rows"),
    ("latin1.csv", "text,label\ncaf\xe9,1\n".encode("latin-1"), r"latin1.csv:2: byte 0xe9 is not valid UTF-8"),
    ("x.txt", "a\n", r"x.txt: unknown extension '.txt'; use one of .json, .jsonl, .csv, .tsv"),
]


@pytest.mark.parametrize("name, content, message", READ_LABELLED_ERRORS, ids=[c[0] for c in READ_LABELLED_ERRORS])
def test_read_labelled_errors(tmp_path, name, content, message):
    with pytest.raises(DataError, match=message):
        read_labelled(write(tmp_path, name, content))


# ---------------------------------------------------------------------------------------------- features


def test_tokenize_and_group_texts(tok, tmp_path):
    texts = ["w1 w2 w3s", "w4", "w5 w6 w7 w8 w9 w10 w11 w12"]
    ids = tok.convert_tokens_to_ids
    lines = tokenize_texts(tok, texts, max_length=5)
    assert [f["input_ids"].tolist() for f in lines] == [
        [CLS, *ids(["w1", "w2", "w3"]), SEP], [CLS, ids("w4"), SEP], [CLS, *ids(["w5", "w6", "w7"]), SEP]]
    assert lines[0]["word_ids"].tolist() == [-1, 0, 1, 2, -1]
    whole = tokenize_texts(tok, texts, whole_word_mask=True)
    assert whole[0]["word_ids"].tolist() == [-1, 0, 1, 2, 2, -1]  # "w3s" -> w3 ##s: one word

    blocks = group_texts(whole, 5, CLS, SEP)
    content = [i for f in whole for i in f["input_ids"][1:-1].tolist()]  # 13 tokens: 4 blocks of 3 + 1
    assert [len(b["input_ids"]) for b in blocks] == [5, 5, 5, 5, 3]
    assert [i for b in blocks for i in b["input_ids"][1:-1].tolist()] == content
    assert all(b["input_ids"][0] == CLS and b["input_ids"][-1] == SEP for b in blocks)
    assert blocks[0]["word_ids"].tolist() == [-1, 0, 1, 2, -1]
    # Block 1 is "##s" (the rest of line 1's w3s), w4 (line 2), w5 (line 3): three distinct words.
    assert blocks[1]["word_ids"].tolist() == [-1, 0, 1, 2, -1]
    corpus = write(tmp_path, "corpus.txt", "\n\n".join(texts))
    grouped = load_mlm_features(corpus, tok, max_length=5, whole_word_mask=True, group=True)
    assert [b["input_ids"].tolist() for b in grouped] == [b["input_ids"].tolist() for b in blocks]
    assert len(load_mlm_features(corpus, tok, max_length=5)) == 3


def test_tokenize_examples_and_classification_collator(tok):
    examples = [Example("w1 w2", "a", None, 1), Example("w3", "b", "w4 w5 w6", 2)]
    features = tokenize_examples(tok, examples, [0, 1], max_length=6)
    assert features[1]["token_type_ids"].tolist() == [0, 0, 0, 1, 1, 1]
    batch = ClassificationCollator(tok.pad_token_id, pad_to_multiple_of=8)(features)
    assert batch["input_ids"].shape == (2, 8) and batch["labels"].dtype == torch.int64
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert batch["token_type_ids"][1].tolist() == [0, 0, 0, 1, 1, 1, 0, 0]
    regression = ClassificationCollator(tok.pad_token_id)(tokenize_examples(tok, examples, [0.5, 1], None))
    assert regression["labels"].dtype == torch.float32 and regression["input_ids"].shape == (2, 7)
    assert "labels" not in ClassificationCollator(0)(tokenize_examples(tok, examples, None, None))


# ---------------------------------------------------------------------------------------------- sampler


def test_length_grouped_sampler():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 200, (1003,), generator=g).tolist()
    sampler = LengthGroupedSampler(lengths, batch_size=16, seed=1, mega_batch_mult=8)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 63
    assert sorted(i for b in batches for i in b) == list(range(1003))
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # longest batch first
    assert batches == list(LengthGroupedSampler(lengths, batch_size=16, seed=1, mega_batch_mult=8))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    random_batches = [list(range(i, min(i + 16, 1003))) for i in range(0, 1003, 16)]
    assert padding_fraction(lengths, batches) < padding_fraction(lengths, random_batches) / 4

    dropped = LengthGroupedSampler(lengths, batch_size=16, drop_last=True)
    assert len(list(dropped)) == len(dropped) == 62 and all(len(b) == 16 for b in dropped)
    shards = [list(LengthGroupedSampler(lengths, 16, seed=1, num_replicas=3, rank=r)) for r in range(3)]
    assert all(len(s) == len(LengthGroupedSampler(lengths, 16, num_replicas=3, rank=0)) == 21 for s in shards)
    flat = [i for s in shards for b in s for i in b]
    assert len(flat) == len(set(flat))
    with pytest.raises(ValueError, match="rank must be in"):
        LengthGroupedSampler(lengths, 16, num_replicas=2, rank=2)


@pytest.mark.parametrize("progress", [False, True])
def test_tokenizing_many_texts_shows_a_bar_only_when_asked(tok, capsys, progress):
    from minibert.data.features import PROGRESS_MIN_TEXTS

    texts = ["w1 w2 w3"] * (PROGRESS_MIN_TEXTS + 1)
    features = tokenize_texts(tok, texts, max_length=8, progress=progress)
    assert len(features) == len(texts)
    err = capsys.readouterr().err
    assert ("tokenizing" in err) if progress else err == ""
    tokenize_texts(tok, texts[:100], max_length=8, progress=True)  # a few texts: no bar even when asked
    assert capsys.readouterr().err == ""
