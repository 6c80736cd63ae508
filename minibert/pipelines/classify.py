"""Text classification: a label (single label), a label set (multi-label) or a value (regression)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import from_pretrained, load_config
from ..data.features import TRUNCATION_KEY, encode_examples
from ..data.padding import pad_batch
from ..files import find_model
from ..model import BertForSequenceClassification
from ..runtime import resolve_device, reuse_freed_memory
from ..tokenizer import Tokenizer


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
        reuse_freed_memory(self.device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        cfg = model.config
        self.problem_type = cfg.resolved_problem_type
        self.labels = [cfg.id2label[i] if cfg.id2label else str(i) for i in range(cfg.num_labels)]
        self.max_length = cfg.max_position_embeddings
        self.truncation = cfg.extra.get(TRUNCATION_KEY, "head")  # as the model was trained

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "auto") -> TextClassifier:
        folder = find_model(folder)
        cfg = load_config(folder)
        if cfg.architectures and BertForSequenceClassification.__name__ not in cfg.architectures:
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
