"""BertConfig: the hyper-parameters of a BERT, with Hugging Face `config.json` field names.

This module imports no torch, so scripts can read and validate a config before paying for torch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .files import read_json

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
# A classifier's job, as transformers names it in config.json: it decides the loss and the prediction.
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


def option(default, help: str, **flag):
    """A dataclass field of a setting that train.py offers as a flag: its default, its help text, and
    where the type says too little, the flag's argparse `choices`, `type` (a parser) or `metavar`."""
    return field(default=default, metadata={"help": help, **flag})


@dataclass
class BertConfig:
    vocab_size: int = 30522  # rows of the word-embedding table (and of the tied MLM decoder)
    hidden_size: int = 768  # width of every token vector in the encoder
    num_hidden_layers: int = 12  # transformer layers stacked in the encoder
    num_attention_heads: int = 12  # heads per self-attention; must divide hidden_size
    intermediate_size: int = 3072  # width of the feed-forward's hidden layer
    hidden_act: str = "gelu"  # feed-forward and MLM-transform activation; "gelu" is the exact erf form
    hidden_dropout_prob: float = 0.1  # dropout after embeddings, attention output and feed-forward
    attention_probs_dropout_prob: float = 0.1  # dropout on the attention weights
    max_position_embeddings: int = 512  # longest sequence the absolute position table covers
    type_vocab_size: int = 2  # segment ids (sentence A / B)
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon, as in the original BERT
    pad_token_id: int = 0  # id of [PAD]; its embedding row is zeroed at init
    initializer_range: float = 0.02  # std of the normal init of every weight matrix
    classifier_dropout: float | None = None  # dropout before the classifier; None: hidden_dropout_prob
    num_labels: int = 2  # classifier outputs; 1 means regression (MSE loss)
    id2label: dict[int, str] | None = None  # class index -> name, saved with classification models
    label2id: dict[str, int] | None = None  # inverse of id2label
    # regression (MSE), single_label_classification (softmax, cross-entropy) or multi_label_classification
    # (sigmoid, BCE); None: as transformers infers it, regression when num_labels == 1, else single label
    problem_type: str | None = None
    architectures: list[str] | None = None  # model class names, written by save_pretrained
    model_type: str = "bert"
    extra: dict = field(default_factory=dict, repr=False)  # unknown keys, kept for a faithful re-save

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; use one of {ACTIVATIONS}")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type {self.problem_type!r} is not one of {', '.join(PROBLEM_TYPES)}")
        # JSON keys are strings: normalise id2label to int keys, and derive whichever map is missing.
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            if self.label2id is None:
                self.label2id = {v: k for k, v in self.id2label.items()}
        elif self.label2id is not None:
            self.id2label = {int(v): str(k) for k, v in self.label2id.items()}
        if self.label2id is not None:
            self.label2id = {str(k): int(v) for k, v in self.label2id.items()}
        if self.id2label is not None and len(self.id2label) != self.num_labels:
            self.num_labels = len(self.id2label)

    @property
    def resolved_problem_type(self) -> str:
        """problem_type, or what transformers infers without it: regression for one output, else single label."""
        if self.problem_type:
            return self.problem_type
        return "regression" if self.num_labels == 1 else "single_label_classification"

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: dict) -> BertConfig:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        if "num_labels" not in known and d.get("id2label"):
            known["num_labels"] = len(d["id2label"])
        return cls(**known, extra=extra)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        d = {**self.extra, **d}
        for key in ("id2label", "label2id", "problem_type", "architectures", "classifier_dropout"):
            if d[key] is None:
                del d[key]
        if d.get("id2label") is not None:
            d["id2label"] = {str(k): v for k, v in d["id2label"].items()}
        return d

    @classmethod
    def from_json(cls, path: str | Path) -> BertConfig:
        path = Path(path)
        d = read_json(path, "config is ")
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(d).__name__}")
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# Named shapes for training from scratch (`--config PRESET`). vocab_size is set from the vocabulary.
PRESETS: dict[str, dict] = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                 max_position_embeddings=128),
    # Pre-trained at 128 tokens: a longer position table would hold rows that never saw training.
    "zh-small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                     max_position_embeddings=128),
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                      max_position_embeddings=512),
}
