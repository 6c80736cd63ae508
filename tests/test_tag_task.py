"""Token classification end to end: constrained decoding, the collator, sentence-level metrics over windows,
the TokenClassifier pipeline (offsets, windows, aggregation) and the tag task through train.py / predict.py."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from conftest import PREDICT, ROOT, TRAIN, call, tiny_config

from minibert.data.collators import TaggingCollator
from minibert.data.tag_features import tokenize_tagged
from minibert.data.tagging import allowed_transitions, ill_formed, scheme_tags, spans, viterbi
from minibert.metrics import TaggingMetrics, entity_metrics, evaluate
from minibert.model import BertForTokenClassification, Output
from minibert.pipelines.tag import TokenClassifier
from minibert.tokenizer import Tokenizer

SCHEME_LABELS = {"IOB2": scheme_tags(["LOC", "PER"], "IOB2"), "BIOES": scheme_tags(["LOC", "PER"], "BIOES"),
                 "BMES": scheme_tags([], "BMES")}


def well_formed(tags: list[str], scheme: str) -> bool:
    if scheme == "BMES":  # as BIOES without types: B M* E | S
        return ill_formed([{"B": "B-W", "M": "I-W", "E": "E-W", "S": "S-W"}[t] for t in tags], "BIOES") == 0
    return ill_formed(tags, scheme) == 0


@pytest.mark.parametrize("scheme", ["IOB2", "BIOES", "BMES"])
def test_viterbi_finds_the_best_well_formed_sequence(scheme):
    """Against brute force over every sequence of 4 tags (5^4 or 4^4 of them), 30 random score tables: the
    decode is well formed and scores the most among the well-formed sequences. A wrong transition rule or a
    back-pointer off by one fails here."""
    labels = SCHEME_LABELS[scheme]
    constraints = allowed_transitions(labels, scheme)
    rng = np.random.default_rng(0)
    for _ in range(30):
        lp = np.log(rng.dirichlet(np.ones(len(labels)) * 0.5, size=4)).astype(np.float32)
        path = viterbi(lp, *constraints)
        assert well_formed([labels[i] for i in path], scheme)
        best = max((seq for seq in itertools.product(range(len(labels)), repeat=4)
                    if well_formed([labels[i] for i in seq], scheme)),
                   key=lambda seq: sum(lp[t, i] for t, i in enumerate(seq)))
        assert sum(lp[t, i] for t, i in enumerate(path)) == pytest.approx(sum(lp[t, i] for t, i in enumerate(best)),
                                                                           abs=1e-5)


def test_tagging_collator_pads_labels_with_ignore_and_keeps_word_positions_for_evaluation_only(zh_tokenizer):
    words = [list("朱镕基在北京"), list("上海")]
    labels = [[1, 2, 2, 0, 3, 4], [3, 4]]
    feats = tokenize_tagged(zh_tokenizer, words, labels, max_length=16).features
    train = TaggingCollator(zh_tokenizer.pad_token_id)(feats)
    assert set(train) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert train["labels"][1].tolist() == [-100, 3, 4, -100] + [-100] * 4  # [CLS] a b [SEP] then padding
    ev = TaggingCollator(zh_tokenizer.pad_token_id, words=True)(feats)
    assert ev["meta_sentence"].tolist() == [0, 1]
    assert ev["meta_word_ids"][1, :4].tolist() == [-1, 0, 1, -1]
    assert ev["meta_prediction_mask"][1].tolist() == [0, 1, 1, 0, 0, 0, 0, 0]


class LookupModel(torch.nn.Module):
    """Tags each token by its id alone (table[id] -> tag id), whatever its window: what a tagger of long text
    must then give is known exactly, so any loss or doubling at a window edge shows."""

    def __init__(self, table: dict[int, int], num_labels: int):
        super().__init__()
        self.table, self.num_labels = table, num_labels
        self.config = None

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        tags = torch.tensor([[self.table.get(int(i), 0) for i in row] for row in input_ids])
        logits = torch.nn.functional.one_hot(tags, self.num_labels).float() * 8.0  # (B, T, L)
        if labels is None:
            return Output(logits)
        n = (labels != -100).sum()
        return Output(logits, torch.nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1),
                                                                ignore_index=-100), n)


@pytest.fixture(scope="module")
def zh_tokenizer():
    return Tokenizer.from_pretrained(ROOT / "models" / "zh-small")


def lookup_tagger(zh_tokenizer, max_length: int) -> TokenClassifier:
    """A TokenClassifier over a tiny model whose forward is LookupModel's: 朱 B-PER, 镕 基 I-PER, 京 B-LOC."""
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    cfg = tiny_config(zh_tokenizer.vocab_size, num_labels=5, id2label=dict(enumerate(labels)),
                      label2id={t: i for i, t in enumerate(labels)})
    cfg.extra["tokens_are_characters"] = True
    pipe = TokenClassifier(BertForTokenClassification(cfg), zh_tokenizer, device="cpu")
    pipe.max_length = max_length  # short windows, so that a short text crosses several
    ids = zh_tokenizer.convert_tokens_to_ids(["朱", "镕", "基", "京"])
    pipe.model = LookupModel(dict(zip(ids, [1, 2, 2, 3])), 5)
    return pipe


def test_token_classifier_reads_long_text_in_windows_with_no_entity_lost_or_doubled(zh_tokenizer):
    pipe = lookup_tagger(zh_tokenizer, max_length=12)  # windows of 10 characters, sharing 2
    for offset in range(12):  # the name at every place against the window edges
        text = "在" * offset + "朱镕基到北京" + "了" * 23 + "朱镕基"
        (result,) = pipe(text)
        got = [(e.entity_group, e.word, e.start, e.end) for e in result.entities]
        assert got == [("PER", "朱镕基", offset, offset + 3), ("LOC", "京", offset + 5, offset + 6),
                       ("PER", "朱镕基", len(text) - 3, len(text))], offset


def test_token_classifier_offsets_are_exact_substrings_with_spaces_and_latin(zh_tokenizer):
    pipe = lookup_tagger(zh_tokenizer, max_length=32)
    text = "  朱 镕基 met 2 people in 北京 "
    (result,) = pipe(text)
    assert [(e.word, e.start, e.end) for e in result.entities] == [("朱 镕基", 2, 6), ("京", 24, 25)]
    assert all(text[e.start:e.end] == e.word for e in result.entities)
    (none,) = pipe(text, aggregation="none")
    assert [(e.entity_group, e.word) for e in none.entities] == [("B-PER", "朱"), ("I-PER", "镕"), ("I-PER", "基"),
                                                                   ("B-LOC", "京")]


def test_token_classifier_english_pieces_spell_their_words(minilm_tokenizer):
    """An English WordPiece model: a word of several pieces is one entity in first/average/max, and its
    pieces' offsets (aggregation none / simple) cover the word exactly."""
    labels = ["O", "B-PER", "I-PER"]
    cfg = tiny_config(minilm_tokenizer.vocab_size, num_labels=3, id2label=dict(enumerate(labels)),
                      label2id={t: i for i, t in enumerate(labels)})
    pipe = TokenClassifier(BertForTokenClassification(cfg), minilm_tokenizer, device="cpu")
    text = "Yesterday Schwarzenegger visited"
    pieces = minilm_tokenizer.encode(["Schwarzenegger"], is_pretokenized=True).ids[1:-1]
    assert len(pieces) > 1
    pipe.model = LookupModel({pieces[0]: 1, **{p: 2 for p in pieces[1:]}}, 3)
    for aggregation in ("first", "average", "max", "simple"):
        (r,) = pipe(text, aggregation=aggregation)
        assert [(e.word, e.start, e.end) for e in r.entities] == [("Schwarzenegger", 10, 24)], aggregation
    (r,) = pipe(text, aggregation="none")
    assert "".join(e.word for e in r.entities) == "Schwarzenegger"
    assert r.entities[0].start == 10 and r.entities[-1].end == 24


def test_tagging_metrics_score_whole_sentences_across_windows(zh_tokenizer):
    """A sentence read in 4 windows: perfect logits give F1 1; with one entity's tags broken the numbers
    equal entity_metrics on the whole sentences, so nothing is lost, doubled or cut at window edges."""
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    words = [list("朱镕基在北京会见客人" * 3), list("上海")]
    gold = [[1, 2, 2, 0, 3, 4, 0, 0, 0, 0] * 3, [3, 4]]
    feats = tokenize_tagged(zh_tokenizer, words, gold, max_length=12).features
    assert sum(f["sentence"] == 0 for f in feats) > 2

    def run(predicted: list[list[int]]) -> dict:
        table = {(s, w): t for s, tags in enumerate(predicted) for w, t in enumerate(tags)}
        metrics = TaggingMetrics(labels)
        batch = TaggingCollator(zh_tokenizer.pad_token_id, words=True)(feats)
        tags = torch.tensor([[table.get((int(s), int(w)), 0) if w >= 0 else 0 for w in row]
                             for s, row in zip(batch["meta_sentence"], batch["meta_word_ids"])])
        logits = torch.nn.functional.one_hot(tags, 5).float() * 8.0
        metrics.update(Output(logits, torch.tensor(0.0), torch.tensor(1)), batch)
        return metrics.result()

    assert run(gold)["f1"] == 1.0
    broken = [list(gold[0]), gold[1]]
    broken[0][10:13] = [0, 0, 0]  # the second 朱镕基 missed
    broken[0][24:26] = [1, 2]  # the third 北京, cut by a window edge, read as a person
    got = run(broken)
    want = entity_metrics(*[[[labels[t] for t in s] for s in tags] for tags in (gold, broken)])
    assert (got["precision"], got["recall"], got["f1"]) == (want["precision"], want["recall"], want["f1"])
    assert got["per_type"] == want["per_type"]


def test_evaluate_never_passes_meta_keys_to_the_model(zh_tokenizer):
    feats = tokenize_tagged(zh_tokenizer, [list("北京")], [[3, 4]], max_length=8).features
    seen = []

    class Model(LookupModel):
        def forward(self, **batch):
            seen.append(sorted(batch))
            return super().forward(**batch)

    evaluate(Model({}, 5), feats, TaggingCollator(zh_tokenizer.pad_token_id, words=True), 4, torch.device("cpu"),
             TaggingMetrics(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]))
    assert seen == [["attention_mask", "input_ids", "labels", "token_type_ids"]]


def test_spans_of_decoded_bmes_are_words():
    labels = SCHEME_LABELS["BMES"]
    lp = np.log(np.full((5, 4), 0.25, dtype=np.float32))
    lp[0, labels.index("M")] = 0.0  # M can not start a word: the decode must not follow the argmax here
    tags = [labels[i] for i in viterbi(lp, *allowed_transitions(labels, "BMES"))]
    assert tags[0] in ("B", "S") and tags[-1] in ("E", "S")
    assert spans(["B-W" if t == "B" else "I-W" if t == "M" else "E-W" if t == "E" else "S-W" for t in tags], "BIOES")


def write_conll(path, sentences):
    path.write_text("\n\n".join("\n".join(f"{c}\t{t}" for c, t in zip(chars, tags)) for chars, tags in sentences)
                    + "\n", encoding="utf-8")


VOCAB = str(ROOT / "vocab" / "zh.txt")
NER = [(list("朱镕基在北京会见客人"), ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O", "O", "O"]),
       (list("江泽民到上海"), ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC"]),
       (list("李鹏在天津"), ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"])] * 4


def test_train_and_predict_a_tagger_through_the_command_lines(tmp_path):
    train, out = tmp_path / "train.conll", tmp_path / "ner"
    write_conll(train, NER)
    r = call(TRAIN, "--task", "tag", "--config", "tiny", "--vocab", VOCAB, "--train", str(train),
             "--eval", str(train), "--eval-every", "epoch", "--epochs", "2", "--output", str(out), "--no-progress",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"] and config["tokens_are_characters"] is True
    assert set(config["label2id"]) == {"O", "B-LOC", "I-LOC", "B-PER", "I-PER"}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval"] for r in records if "eval" in r]
    assert len(evals) == 2 and {"f1", "precision", "recall", "per_type"} <= set(evals[-1])
    r = call(PREDICT, "--model", str(out), "--json", "朱镕基在北京", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["text"] == "朱镕基在北京" and isinstance(record["entities"], list)
    for e in record["entities"]:
        assert set(e) == {"entity_group", "word", "start", "end", "score"}
        assert record["text"][e["start"]:e["end"]] == e["word"]
    r = call(PREDICT, "--model", str(out), "--eval", str(train), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "entities: precision" in r.stdout and "PER" in r.stdout


def test_predict_eval_refuses_a_tag_the_model_does_not_know(tmp_path):
    train, other, out = tmp_path / "train.conll", tmp_path / "other.conll", tmp_path / "ner"
    write_conll(train, NER)
    write_conll(other, [(list("微软"), ["B-ORG", "I-ORG"])])
    r = call(TRAIN, "--task", "tag", "--config", "tiny", "--vocab", VOCAB, "--train", str(train),
             "--epochs", "1", "--output", str(out), "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = call(PREDICT, "--model", str(out), "--eval", str(other), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and f"{other}:1:" in r.stderr and "B-ORG" in r.stderr
