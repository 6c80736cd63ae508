"""minibert: BERT training, fine-tuning and inference written out in plain PyTorch."""

from .config import PRESETS, BertConfig
from .data import ClassificationCollator, LengthGroupedSampler, MaskingCollator
from .model import BertForMaskedLM, BertForSequenceClassification, BertModel, Output
from .optim import AdamW
from .pipelines import FillMask, TextClassifier
from .tokenizer import Tokenizer
from .trainer import TrainConfig, Trainer

__all__ = [
    "PRESETS",
    "AdamW",
    "BertConfig",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "BertModel",
    "ClassificationCollator",
    "FillMask",
    "LengthGroupedSampler",
    "MaskingCollator",
    "Output",
    "TextClassifier",
    "Tokenizer",
    "TrainConfig",
    "Trainer",
]
__version__ = "0.1.0"
