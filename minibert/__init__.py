"""minibert: BERT training, fine-tuning and inference written out in plain PyTorch."""

from .config import PRESETS, BertConfig
from .model import BertForMaskedLM, BertForSequenceClassification, BertModel, Output

__all__ = [
    "PRESETS",
    "BertConfig",
    "BertModel",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "Output",
]
__version__ = "0.1.0"
