"""Inference: fill-mask and text classification, for `predict.py` and for Python users.

    from minibert import FillMask
    print(FillMask.from_pretrained("models/zh-small")("三国人物诸葛[MASK]"))

TextClassifier predicts what the model's config.json problem_type says: a label with its softmax
probability (single label), the set of labels whose sigmoid probability is above a threshold
(multi-label), or the value, the raw output (regression).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import from_pretrained, load_config
from .data.collators import pad_batch
from .data.features import TRUNCATION_KEY, encode_examples
from .model import BertForMaskedLM, BertForSequenceClassification
from .runtime import resolve_device
from .tasks import SequenceClassification, saved_task
from .tokenizer import Tokenizer


@dataclass
class Candidate:
    token: str
    score: float  # probability under the model's softmax at this position


@dataclass
class MaskResult:
    index: int  # which [MASK] of the text, counting from 0
    candidates: list[Candidate]


@dataclass
class FillResult:
    text: str
    masks: list[MaskResult]
    filled: str  # the text with every [MASK] filled left to right, each by the best token given the ones before
    truncated: bool = False
    targets: list[dict] = field(default_factory=list)  # with `targets`: per mask, {token: probability}


class FillMask:
    def __init__(self, model: BertForMaskedLM, tokenizer: Tokenizer, device: str | torch.device = "auto"):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_length = model.config.max_position_embeddings

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "auto") -> FillMask:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an encoder-only checkpoint's new head is reported below
            model = from_pretrained(BertForMaskedLM, folder)
        return cls(model, Tokenizer.from_pretrained(folder), device)

    def _encode(self, texts: list[str], first: int = 1) -> tuple[dict[str, torch.Tensor], list[bool]]:
        """`first`: the number of texts[0] among all the texts of the call, for error messages."""
        mask_id = self.tokenizer.mask_token_id
        truncated = []
        for i, text in enumerate(texts, start=first):
            if self.tokenizer.mask_token not in text:
                raise ValueError(f"text {i} ({text[:40]!r}) has no {self.tokenizer.mask_token}; "
                                 f"write {self.tokenizer.mask_token} where the model should fill in")
        full = self.tokenizer.encode_batch(texts)
        cut = self.tokenizer.encode_batch(texts, max_length=self.max_length)
        for i, (a, b) in enumerate(zip(full, cut), start=first):
            if a.ids.count(mask_id) != b.ids.count(mask_id):
                raise ValueError(
                    f"text {i} is {len(a.ids)} tokens, longer than the model's {self.max_length} positions, "
                    f"and truncating it would cut off a {self.tokenizer.mask_token}; shorten the text")
            truncated.append(len(a.ids) > len(b.ids))
        return self.tokenizer.pad(cut), truncated

    @torch.inference_mode()
    def _mask_probs(self, texts: list[str], first: int = 1) -> tuple[list[torch.Tensor], list[bool]]:
        """Per text, (n_masks, V) probabilities at its [MASK] positions, in order."""
        batch, truncated = self._encode(texts, first)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        where = batch["input_ids"] == self.tokenizer.mask_token_id  # (B, T)
        out = self.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], positions=where)
        probs = out.logits.float().softmax(-1).cpu()  # (N, V), row-major over (text, position)
        per_text = where.sum(1).tolist()
        return list(probs.split(per_text)), truncated

    def __call__(self, texts: str | list[str], top_k: int = 5, targets: list[str] | None = None,
                 batch_size: int = 32) -> list[FillResult]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        target_ids = self._target_ids(targets) if targets else None
        results = []
        for s in range(0, len(texts), batch_size):
            chunk = texts[s:s + batch_size]
            probs, truncated = self._mask_probs(chunk, first=s + 1)
            for text, p, cut in zip(chunk, probs, truncated):
                masks = []
                for m in range(p.size(0)):
                    top = p[m].topk(min(top_k, p.size(1)))
                    masks.append(MaskResult(m, [Candidate(self._piece(i), float(v))
                                                for v, i in zip(top.values.tolist(), top.indices.tolist())]))
                scored = [{t: float(p[m, i]) for t, i in target_ids.items()} for m in range(p.size(0))] \
                    if target_ids else []
                filled = self._fill_greedy(text, first=masks[0].candidates[0].token) if masks else text
                if cut:
                    warnings.warn(f"text {len(results) + 1} was truncated to {self.max_length} tokens",
                                  stacklevel=2)
                results.append(FillResult(text, masks, filled, cut, scored))
        return results

    def _fill_greedy(self, text: str, first: str) -> str:
        """Fill the masks left to right, re-reading the text after each choice."""
        mask = self.tokenizer.mask_token
        text = text.replace(mask, first, 1)
        while mask in text:
            probs, _ = self._mask_probs([text])
            text = text.replace(mask, self._piece(int(probs[0][0].argmax())), 1)
        return text

    def _piece(self, token_id: int) -> str:
        token = self.tokenizer.convert_ids_to_tokens(token_id)
        return token[2:] if token.startswith("##") else token

    def _target_ids(self, targets: list[str]) -> dict[str, int]:
        vocab = self.tokenizer.get_vocab()
        ids = {}
        for t in targets:
            t = t.strip()
            key = t.lower() if self.tokenizer.do_lower_case else t
            if key not in vocab:
                raise ValueError(f"target {t!r} is not a single token of the model's vocabulary; "
                                 f"give targets that are whole vocabulary entries")
            ids[t] = vocab[key]
        return ids


@dataclass
class Classification:
    text: str
    label: str
    score: float
    scores: dict[str, float]


@dataclass
class MultiLabelClassification:
    text: str
    labels: list[str]  # the predicted set: the labels with a probability above the threshold, most probable first
    scores: dict[str, float]  # every label's sigmoid probability


@dataclass
class Regression:
    text: str
    value: float  # the model's output, unsquashed


class TextClassifier:
    def __init__(self, model: BertForSequenceClassification, tokenizer: Tokenizer,
                 device: str | torch.device = "auto"):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        cfg = model.config
        self.problem_type = cfg.resolved_problem_type
        self.labels = [cfg.id2label[i] if cfg.id2label else str(i) for i in range(cfg.num_labels)]
        self.max_length = cfg.max_position_embeddings
        self.truncation = cfg.extra.get(TRUNCATION_KEY, "head")  # as the model was trained

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "auto") -> TextClassifier:
        cfg = load_config(folder)
        if cfg.architectures and saved_task(cfg) is not SequenceClassification:
            raise ValueError(f"{folder}: config.json says {cfg.architectures[0]}, not a classifier; "
                             f"fine-tune it with --task classify first")
        return cls(from_pretrained(BertForSequenceClassification, folder), Tokenizer.from_pretrained(folder), device)

    @torch.inference_mode()
    def __call__(self, texts: str | list[str], text_pairs: list[str] | None = None, batch_size: int = 32,
                 threshold: float = 0.5) -> list[Classification | MultiLabelClassification | Regression]:
        """One result per text; `threshold`: multi-label, the probability a label must exceed."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        results = []
        for s in range(0, len(texts), batch_size):
            chunk = texts[s:s + batch_size]
            pairs = text_pairs[s:s + batch_size] if text_pairs else None
            features = encode_examples(self.tokenizer, chunk, pairs, self.max_length, self.truncation)
            batch = pad_batch(features, self.tokenizer.pad_token_id)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            logits = self.model(**batch).logits.float().cpu()  # (B, num_labels)
            if self.problem_type == "regression":
                results += [Regression(text, float(v)) for text, v in zip(chunk, logits[:, 0].tolist())]
                continue
            if self.problem_type == "multi_label_classification":
                for text, p in zip(chunk, logits.sigmoid().tolist()):
                    chosen = sorted((i for i, v in enumerate(p) if v > threshold), key=lambda i: -p[i])
                    results.append(MultiLabelClassification(text, [self.labels[i] for i in chosen],
                                                            dict(zip(self.labels, p))))
                continue
            for text, p in zip(chunk, logits.softmax(-1)):
                best = int(p.argmax())
                results.append(Classification(text, self.labels[best], float(p[best]),
                                              {lab: float(v) for lab, v in zip(self.labels, p.tolist())}))
        return results
