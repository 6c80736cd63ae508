"""minibert: BERT training, fine-tuning and inference written out in plain PyTorch.

The names below are imported on first use, so `import minibert.config` (or reading a data file with
`minibert.data.readers`) does not pay for importing torch.
"""

from ._lazy import lazy_exports

# name -> the module of this package that defines it
_LAZY = {
    "PRESETS": "config",
    "BertConfig": "config",
    "ClassificationCollator": "data.collators",
    "MaskingCollator": "data.collators",
    "LengthGroupedSampler": "data.sampler",
    "BertForMaskedLM": "model",
    "BertForSequenceClassification": "model",
    "BertForTokenClassification": "model",
    "BertModel": "model",
    "Output": "model",
    "AdamW": "optim",
    "FillMask": "pipelines",
    "TextClassifier": "pipelines",
    "TokenClassifier": "pipelines",
    "MaskedLM": "tasks",
    "SequenceClassification": "tasks",
    "Tokenizer": "tokenizer",
    "TrainConfig": "trainer",
    "Trainer": "trainer",
}
__all__ = list(_LAZY)
__version__ = "0.1.0"


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
