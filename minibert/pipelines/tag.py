"""Token classification: the entities of a text (or its words, for a segmentation model).

    from minibert import TokenClassifier
    tag = TokenClassifier.from_pretrained("models/zh-small-ner")
    tag("国务院总理朱镕基在北京会见了美国客人")[0].entities   # [Entity("PER", "朱镕基", 6, 9, 0.99), ...]
    cws = TokenClassifier.from_pretrained("models/zh-small-cws")
    cws("迈向充满希望的新世纪")[0].words                      # ["迈向", "充满", "希望", "的", "新", "世纪"]

A text is cut into tokens as the model was trained (one per character for Chinese models, BERT's
words otherwise), read in overlapping windows when it is longer than the model's positions (each
token predicted by the window that owns it, data.tagging's plan_windows), and tagged with the best
sequence of tags the scheme allows (`decode`): a constrained Viterbi over the tags' log-probabilities
(plus the learned transition scores of a tagger trained with --crf) that never starts an entity with
I-X or ends a word on B, so every entity and word is well formed and its offsets are exact.

aggregation, with transformers' meanings: "none" one result per token with its own tag (`entity`);
"simple" entities grouped from the tokens' tags; "first" / "average" / "max" a word's tag from its first
piece's scores, the mean of its pieces' scores, or the piece with the highest score. With one character
per token (Chinese), every strategy but none gives the same entities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import from_pretrained, load_config
from ..data.padding import pad_batch
from ..data.tag_features import tokenize_tagged
from ..data.tagging import OUTSIDE, allowed_transitions, marginals, scheme_of, spans, split_text, viterbi
from ..files import find_model
from ..model import BertForTokenClassification
from ..runtime import resolve_device, reuse_freed_memory
from ..tokenizer import Tokenizer

AGGREGATIONS = ("none", "simple", "first", "average", "max")
CHARACTERS_KEY = "tokens_are_characters"  # config.json: the model was trained on one character per token


@dataclass
class Entity:
    entity_group: str  # the type ("PER"); with aggregation none, the token's own tag ("B-PER")
    word: str  # text[start:end], exactly as it stands in the text
    start: int  # character offsets into the text, end exclusive
    end: int
    score: float  # the mean probability of the chosen tags over the entity's tokens (a CRF tagger: their
    # marginal probabilities under the CRF)


@dataclass
class Tagged:
    text: str
    entities: list[Entity]
    words: list[str] | None = None  # a segmentation model (B/M/E/S tags): the text cut into words


class TokenClassifier:
    def __init__(self, model: BertForTokenClassification, tokenizer: Tokenizer, device: str | torch.device = "auto"):
        self.device = resolve_device(device)
        reuse_freed_memory(self.device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        cfg = model.config
        self.labels = [cfg.id2label[i] if cfg.id2label else str(i) for i in range(cfg.num_labels)]
        self.scheme = scheme_of(self.labels)
        self.segmenter = self.scheme == "BMES"
        self.per_character = bool(cfg.extra.get(CHARACTERS_KEY, False))
        self.max_length = cfg.max_position_embeddings
        self._constraints = allowed_transitions(self.labels, self.scheme)
        self._crf = tuple(t.float().cpu().numpy() for t in model.crf.scores()) if model.crf is not None else None

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "auto") -> TokenClassifier:
        folder = find_model(folder)
        cfg = load_config(folder)
        if BertForTokenClassification.__name__ not in (cfg.architectures or []):
            raise ValueError(f"{folder}: config.json says {(cfg.architectures or ['?'])[0]}, not a token classifier; "
                             f"fine-tune it with --task tag first")
        return cls(from_pretrained(BertForTokenClassification, folder), Tokenizer.from_pretrained(folder), device)

    @torch.inference_mode()
    def token_scores(self, words: list[list[str]], batch_size: int = 32) -> list[list[np.ndarray | None]]:
        """Per sentence of words, each word's pieces' tag probabilities (pieces, L) float32, from the window
        that owns the word; None for a word the tokenizer makes no piece of."""
        feats = tokenize_tagged(self.tokenizer, words, max_length=self.max_length).features
        out: list[list[np.ndarray | None]] = [[None] * len(w) for w in words]
        for s in range(0, len(feats), batch_size):
            chunk = feats[s:s + batch_size]
            batch = pad_batch(chunk, self.tokenizer.pad_token_id)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            probs = self.model(**batch).logits.float().softmax(-1).cpu().numpy()  # (B, T, L)
            for f, p in zip(chunk, probs):
                word_ids, first = f["word_ids"], f["prediction_mask"]
                for at in first.nonzero()[0]:
                    w = int(word_ids[at])
                    stop = at + 1
                    while stop < len(word_ids) and word_ids[stop] == w:
                        stop += 1
                    out[int(f["sentence"])][w] = p[at:stop]
        return out

    def __call__(self, texts: str | list[str], aggregation: str = "first", batch_size: int = 32) -> list[Tagged]:
        """One result per text: its entities (a segmentation model: also its words)."""
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation {aggregation!r}: use one of {', '.join(AGGREGATIONS)}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        offsets = [split_text(t, self.per_character) for t in texts]
        words = [[t[s:e] for s, e in spans_] for t, spans_ in zip(texts, offsets)]
        scores = self.token_scores(words, batch_size)
        return [self._tag(text, offs, sc, aggregation) for text, offs, sc in zip(texts, offsets, scores)]

    def tag_words(self, words: list[list[str]], aggregation: str = "first", batch_size: int = 32) -> list[list[str]]:
        """The decoded tag of every given word (a tagged file's tokens), per sentence."""
        return [self.word_tags(scores, aggregation)[0] for scores in self.token_scores(words, batch_size)]

    def word_tags(self, word_scores: list[np.ndarray | None],
                  aggregation: str = "first") -> tuple[list[str], list[float]]:
        """Each word's tag and that tag's probability, decoded as a whole sentence (see the module's doc)."""
        L = len(self.labels)
        rows = []
        for p in word_scores:
            if p is None:  # no piece: read as outside an entity (or a one-character word)
                p = np.full((1, L), 1e-6, dtype=np.float32)
                p[0, self.labels.index("S" if self.segmenter else OUTSIDE)] = 1.0
            if aggregation == "average":
                rows.append(p.mean(0))
            elif aggregation == "max":
                rows.append(p[p.max(1).argmax()])
            else:
                rows.append(p[0])
        probs = np.stack(rows) if rows else np.zeros((0, L), dtype=np.float32)
        log_probs = np.log(np.clip(probs, 1e-12, None))
        path = viterbi(log_probs, *self._constraints, scores=self._crf)
        if self._crf is not None:  # a CRF tagger's score: the tag's probability under the whole-sentence model
            probs = marginals(log_probs, *self._constraints, scores=self._crf)
        return [self.labels[i] for i in path], [float(probs[t, i]) for t, i in enumerate(path)]

    def _tag(self, text: str, offsets: list[tuple[int, int]], word_scores: list, aggregation: str) -> Tagged:
        if aggregation in ("none", "simple"):
            offsets, word_scores = self._pieces(text, offsets, word_scores)
        tags, probs = self.word_tags(word_scores, "first" if aggregation in ("none", "simple") else aggregation)
        if aggregation == "none":
            entities = [Entity(tag, text[s:e], s, e, p) for tag, (s, e), p in zip(tags, offsets, probs)
                        if tag != OUTSIDE]
            return Tagged(text, entities, self._words(text, offsets, tags) if self.segmenter else None)
        if self.segmenter:
            words = self._words(text, offsets, tags)
            return Tagged(text, [], words)
        entities = []
        for kind, a, b in spans(tags, self.scheme):
            s, e = offsets[a][0], offsets[b - 1][1]
            entities.append(Entity(kind, text[s:e], s, e, float(np.mean(probs[a:b]))))
        return Tagged(text, entities)

    @staticmethod
    def _words(text: str, offsets: list[tuple[int, int]], tags: list[str]) -> list[str]:
        """Segmentation tags -> words of `text`: one starts at B or S and ends after E or S."""
        words, start, end = [], None, 0
        for (s, e), tag in zip(offsets, tags):
            if start is not None and tag in ("B", "S"):
                words.append(text[start:end])
                start = None
            if start is None:
                start = s
            end = e
            if tag in ("E", "S"):
                words.append(text[start:end])
                start = None
        if start is not None:
            words.append(text[start:end])
        return words

    def _pieces(self, text: str, offsets: list[tuple[int, int]], word_scores: list) -> tuple[list, list]:
        """Every piece as a token of its own (aggregation none / simple): its offsets, from the lengths of
        its characters in the piece ("##" dropped), and its scores; a word whose pieces do not spell it
        (normalization changed its length) stays one token with its first piece's scores."""
        out_offsets, out_scores = [], []
        for (s, e), p in zip(offsets, word_scores):
            if p is None or len(p) == 1:
                out_offsets.append((s, e))
                out_scores.append(p)
                continue
            pieces = self.tokenizer.encode([text[s:e]], is_pretokenized=True).ids[1:-1]
            lengths = [len(t.removeprefix("##")) for t in self.tokenizer.convert_ids_to_tokens(pieces)]
            if len(lengths) != len(p) or sum(lengths) != e - s:
                out_offsets.append((s, e))
                out_scores.append(p[:1])
                continue
            at = s
            for n, row in zip(lengths, p):
                out_offsets.append((at, at + n))
                out_scores.append(row[None])
                at += n
        return out_offsets, out_scores
