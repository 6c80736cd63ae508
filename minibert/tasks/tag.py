"""Token classification: a tag per token (named entities, word segmentation), and predict.py's tag side."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from ..config import BertConfig, option
from ..data.collators import TaggingCollator
from ..data.readers import DataError, Example
from ..data.tag_features import tokenize_tagged
from ..data.tagging import (
    SCHEMES,
    TaggedSentence,
    bmes_to_words,
    build_tag_map,
    check_scheme,
    count_ill_formed,
    encode_tags,
    read_tagged,
    scheme_of,
)
from ..metrics import TaggingMetrics, entity_metrics, segmentation_metrics
from ..model import CRF_KEY, BertForTokenClassification
from ..pipelines.tag import AGGREGATIONS, CHARACTERS_KEY, Tagged, TokenClassifier
from ..tokenizer import Tokenizer
from .base import FEW_TEXTS, Metric, PredictOptions, Predictor, Task, TaskData, TaskWords, gold_column, split

TRAIN_EXAMPLES = """\
  # named entities from a CoNLL file (token and tag per line) or JSONL ({"tokens": [...], "tags": [...]})
  python train.py --task tag --model models/zh-small --train data/zh/ner_train.jsonl \\
      --eval data/zh/ner_dev.jsonl --eval-every epoch --output out/ner
  # word segmentation with B/M/E/S tags
  python train.py --task tag --tag-scheme BMES --model models/zh-small --train data/zh/cws_train.jsonl \\
      --eval data/zh/cws_dev.jsonl --eval-every epoch --output out/cws
"""
PREDICT_EXAMPLES = """\
  python predict.py --model models/zh-small-ner "国务院总理朱镕基在北京会见了美国客人"
  python predict.py --model models/zh-small-ner --json --file news.txt --output entities.jsonl
  python predict.py --model models/zh-small-ner --eval data/zh/ner_test.jsonl  # entity P/R/F1 per type
  python predict.py --model models/zh-small-cws "迈向充满希望的新世纪"              # words separated by spaces
"""


def _label_names(text: str | None) -> list[str] | None:
    """--label-names: comma-separated names, or a JSON file holding a list of them."""
    if text is None:
        return None
    path = Path(text)
    if path.suffix.lower() == ".json" and path.is_file():
        names = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"--label-names {path}: expected a JSON list of tag names, e.g. [\"O\", \"B-PER\"]")
        return names
    return [n.strip() for n in text.split(",")]


@dataclass
class TagOptions(PredictOptions):
    aggregation: str = option("first", "tag: how a word's pieces make its tag, as transformers' pipeline: none (every "
                              "token with its own tag), simple (entities from the tokens' tags), first / average / "
                              "max (a word's first piece's scores, their mean, or the piece with the highest score)",
                              choices=AGGREGATIONS)
    exclusive: ClassVar[tuple[str, ...]] = ("aggregation",)


class TagPredictor(Predictor):
    """The entities of each text with their exact substrings and offsets; the words of a segmentation model."""

    options: TagOptions

    def __init__(self, folder: Path, options: TagOptions, eval_file: Path | None = None):
        super().__init__(folder, options, eval_file)
        self.pipe = TokenClassification.pipeline(folder, options.device)

    def default_inputs(self) -> list[Example]:
        raise ValueError("no text to tag; give texts, --file or --eval")

    def stream(self, items: list[Example]) -> Iterator[list]:
        size = self.options.batch_size
        for s in range(0, len(items), size):
            yield self.pipe([e.text for e in items[s:s + size]], self.options.aggregation, size)

    @property
    def shows_words(self) -> bool:
        """A segmenter's results are its words, unless --aggregation none asks for every token's own tag."""
        return self.pipe.segmenter and self.options.aggregation != "none"

    @property
    def entity_key(self) -> str:
        return "entity" if self.options.aggregation == "none" else "entity_group"  # transformers' names

    def show(self, e: Example, r: Tagged) -> str:
        if self.shows_words:
            return " ".join(r.words)
        found = "   ".join(f"{x.word} {x.entity_group} {x.score:.4f}" for x in r.entities) or "(none)"
        return f"{r.text}\n  {found}"

    def json_record(self, r: Tagged) -> dict:
        if self.shows_words:
            return {"text": r.text, "words": r.words}
        return {"text": r.text, "entities": [{self.entity_key: x.entity_group, "word": x.word, "start": x.start,
                                              "end": x.end, "score": x.score} for x in r.entities]}

    def record(self, e: Example, r: Tagged) -> dict:
        record = self.json_record(r)
        return {**record, "gold": e.label} if e.label is not None else record

    def columns(self, items: list[Example]) -> list[str]:
        return ["text", "words" if self.shows_words else "entities"] + gold_column(items)

    def csv_row(self, record: dict) -> dict:
        """Words separated by spaces; entities as "word/TYPE score" separated by " | "."""
        row = dict(record)
        if self.shows_words:
            row["words"] = " ".join(record["words"])
        else:
            row["entities"] = " | ".join(f"{x['word']}/{x[self.entity_key]} {x['score']:.4f}"
                                         for x in record["entities"])
        return row

    def evaluate(self) -> dict:
        """Entity P/R/F1 per type and token accuracy (IOB2, BIOES), or word P/R/F1 (BMES), of the model's tags
        for the tokens of a tagged file, decoded as predict.py decodes them."""
        from tqdm.auto import tqdm

        pipe, o = self.pipe, self.options
        sentences = read_tagged(self.eval_file, pipe.scheme)
        encode_tags(sentences, {t: i for i, t in enumerate(pipe.labels)}, self.eval_file)  # a tag it lacks: file:line
        aggregation = o.aggregation if o.aggregation != "none" else "first"  # none groups nothing: read words first
        pred = []
        with tqdm(total=len(sentences), desc="eval", unit="sentence", leave=False, dynamic_ncols=True,
                  disable=not o.progress or len(sentences) <= FEW_TEXTS) as bar:
            for s in range(0, len(sentences), o.batch_size):
                chunk = sentences[s:s + o.batch_size]
                pred += pipe.tag_words([x.tokens for x in chunk], aggregation, o.batch_size)
                bar.update(len(chunk))
        gold = [s.tags for s in sentences]
        head = {"sentences": len(sentences), "tokens": sum(len(g) for g in gold)}
        if pipe.segmenter:
            words = [bmes_to_words(s.tokens, g) for s, g in zip(sentences, gold)]
            return {**head, **segmentation_metrics(words, [bmes_to_words(s.tokens, p)
                                                           for s, p in zip(sentences, pred)])}
        return {**head, **entity_metrics(gold, pred, pipe.scheme)}

    def report(self, metrics: dict) -> str:
        head = f"{self.eval_file}: {metrics['sentences']} sentences, {metrics['tokens']} tokens"
        if self.pipe.segmenter:
            return (f"{head}, {metrics['gold_words']} words: precision {metrics['precision']:.4f}, "
                    f"recall {metrics['recall']:.4f}, F1 {metrics['f1']:.4f}")
        lines = [f"{head}, {metrics['gold_entities']} entities: precision {metrics['precision']:.4f}, "
                 f"recall {metrics['recall']:.4f}, F1 {metrics['f1']:.4f}, token accuracy {metrics['accuracy']:.4f}",
                 f"{'type':<10} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
        for kind, m in metrics["per_type"].items():
            lines.append(f"{kind:<10} {m['precision']:>9.4f} {m['recall']:>9.4f} {m['f1']:>9.4f} {m['support']:>8}")
        if metrics["ill_formed_gold"]:
            lines.append(f"note: {metrics['ill_formed_gold']} gold tags fit no entity (an I-X after O); "
                         "strict scoring drops them, as seqeval's strict mode")
        return "\n".join(lines)


@dataclass
class TokenClassification(Task):
    """A tag per token: entities in IOB2 or BIOES (B-PER I-PER O ...), or word segmentation in BMES. Files:
    CoNLL (token and tag per line), JSONL {"tokens": [...], "tags": [...]}, or {"text", "entities"} spans."""

    name: ClassVar[str] = "tag"
    model_class: ClassVar[type] = BertForTokenClassification
    kind: ClassVar[str] = "token classification"
    pipeline_tag: ClassVar[str] = "token-classification"
    example_text: ClassVar[str] = "国务院总理朱镕基在北京会见了美国客人"
    words: ClassVar[TaskWords] = TaskWords(
        summary="token classification (named entities, word segmentation)", purpose="tagging every token",
        train_files="CoNLL (.txt/.conll/.tsv: token and tag per line) or .json/.jsonl tokens and tags, or text "
                    "with entity spans",
        train_examples=TRAIN_EXAMPLES, predict_does="tag the entities (or words) of texts",
        predict_record="the entities with their offsets and scores (a segmenter: the words)",
        predict_eval="a tagged file (CoNLL or JSONL) and prints entity precision, recall and F1 per type (word F1 "
                     "for a segmenter)",
        predict_examples=PREDICT_EXAMPLES)
    declared_metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("f1", higher_is_better=True), Metric("precision", higher_is_better=True),
        Metric("recall", higher_is_better=True), Metric("accuracy", higher_is_better=True),
        Metric("eval_loss", higher_is_better=False))
    best_metric: ClassVar[str] = "f1"
    # The rate of the shipped taggers (models/zh-small on People's Daily; README, "Named entities and word
    # segmentation").
    finetune_defaults: ClassVar[dict[str, float]] = {"lr": 5e-4}
    exclusive: ClassVar[tuple[str, ...]] = ("tag_scheme", "label_all_tokens", "stride", "label_names", "crf")
    predict_names: ClassVar[tuple[str, ...]] = ("tag",)
    predict_options: ClassVar[type] = TagOptions
    predictor: ClassVar[type] = TagPredictor

    tag_scheme: str = option("IOB2", "the scheme of the files' tags: IOB2 (B-X, I-X, O), BIOES (also E-X, S-X) "
                             "or BMES (word segmentation: B, M, E, S)", choices=SCHEMES)
    label_all_tokens: bool = option(False, "put a word's tag on all its pieces (B-X becoming I-X after the "
                                    "first) instead of its first piece only, as run_ner.py's flag")
    stride: int | None = option(None, "tokens shared by the overlapping windows a sentence longer than "
                                "--max-length is read in (default: a quarter of the window)")
    label_names: str | None = option(None, "the names of integer tags in JSONL (ner_tags as ids): "
                                     "comma-separated, or a .json list", metavar="NAMES")
    crf: bool = option(False, "a linear-chain CRF layer over the tags: learned scores for each pair of neighbouring "
                       "tags, trained on the sentence's log-likelihood and used by the Viterbi decoding (a "
                       "starting model that has one keeps it)")
    split_sentences: int = field(default=0, init=False)  # sentences load() read as several windows

    def __post_init__(self) -> None:
        check_scheme(self.tag_scheme)

    def load(self, tokenizer: Tokenizer, config: BertConfig, max_length: int, train_file: Path,
             eval_file: Path | None = None, eval_split: float = 0.0, seed: int = 0, progress: bool = False) -> TaskData:
        names = _label_names(self.label_names)
        self.split_sentences = 0  # counted by _features for this load's files only
        train = read_tagged(train_file, self.tag_scheme, names)
        if not train:
            raise DataError(f"{train_file}: no tagged sentence; give one token and its tag per line (CoNLL) or "
                            "JSONL records with tokens and tags")
        evals = read_tagged(eval_file, self.tag_scheme, names) if eval_file else None
        if eval_split:
            train, evals = split(train, eval_split, seed)
        label2id = self._tag_map(config, train)
        characters = all(len(t) == 1 for s in train for t in s.tokens)
        # a starting CRF tagger that keeps its tags keeps its CRF; self.crf then says what the model has
        self.crf = self.crf or bool(config.extra.get(CRF_KEY)) and label2id == config.label2id
        kept = {k: v for k, v in config.to_dict().items() if k != CRF_KEY}
        config = BertConfig.from_dict({**kept, "num_labels": len(label2id),
                                       "id2label": {i: t for t, i in label2id.items()}, "label2id": label2id,
                                       CHARACTERS_KEY: characters, **({CRF_KEY: True} if self.crf else {})})
        train_feats = self._features(tokenizer, train, label2id, max_length, train_file)
        eval_feats = self._features(tokenizer, evals, label2id, max_length, eval_file or train_file) if evals \
            else None
        ill = count_ill_formed(train, self.tag_scheme)
        note = f", tags: {', '.join(label2id)}"
        if self.split_sentences:
            note += f", {self.split_sentences} sentences longer than --max-length read in overlapping windows"
        if ill:
            note += f", {ill} training tags fit no entity (an I-X after O)"
        return TaskData(train_feats, eval_feats, config, note)

    def _tag_map(self, config: BertConfig, sentences: list[TaggedSentence]) -> dict[str, int]:
        """The starting model's tags when it is a tagger of this scheme that knows every training tag (it goes
        on learning them), else every tag of the scheme for the training data's types."""
        if config.label2id and BertForTokenClassification.__name__ in (config.architectures or []) \
                and scheme_of(config.label2id) == self.tag_scheme \
                and all(t in config.label2id for s in sentences for t in s.tags):
            return dict(config.label2id)
        return build_tag_map(sentences, self.tag_scheme)

    def _features(self, tokenizer: Tokenizer, sentences: list[TaggedSentence], label2id: dict[str, int],
                  max_length: int, path: Path) -> list[dict]:
        out = tokenize_tagged(tokenizer, [s.tokens for s in sentences], encode_tags(sentences, label2id, path),
                              max_length=max_length, stride=self.stride, label_all_tokens=self.label_all_tokens,
                              label2id=label2id)
        self.split_sentences += out.split_sentences
        return out.features

    def collator(self, tokenizer: Tokenizer, seed: int = 0, rank: int = 0) -> Callable:
        return TaggingCollator(tokenizer.pad_token_id)

    def eval_collator(self, tokenizer: Tokenizer, seed: int = 0) -> Callable:
        return TaggingCollator(tokenizer.pad_token_id, words=True)

    def count_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != -100).sum())

    def metrics(self, config: BertConfig) -> TaggingMetrics:
        return TaggingMetrics([config.id2label[i] for i in range(config.num_labels)])

    def settings_note(self) -> str:
        return f", tags {self.tag_scheme}" + (", all pieces labelled" if self.label_all_tokens else "") \
            + (", CRF layer" if self.crf else "")

    def card_summary(self, config: BertConfig) -> str:
        labels = [config.id2label[i] for i in range(config.num_labels)]
        crf = ", with a CRF layer" if config.extra.get(CRF_KEY) else ""
        if scheme_of(labels) == "BMES":
            return f"word segmentation (B/M/E/S tags){crf}"
        types = sorted({t[2:] for t in labels if t != "O"})
        return f"{scheme_of(labels)} tags for {len(types)} entity types: {', '.join(types)}{crf}"

    @classmethod
    def pipeline(cls, folder: Path, device: str = "auto") -> TokenClassifier:
        return TokenClassifier.from_pretrained(folder, device=device)
