"""minibert: BERT training, fine-tuning and inference written out in plain PyTorch.

The names below are imported on first use, so `import minibert.config` (or reading a data file with
`minibert.data.readers`) does not pay for importing torch.
"""

import importlib

# name -> the module of this package that defines it
_LAZY = {
    "PRESETS": "config",
    "BertConfig": "config",
    "ClassificationCollator": "data.collators",
    "MaskingCollator": "data.collators",
    "LengthGroupedSampler": "data.sampler",
    "BertForMaskedLM": "model",
    "BertForSequenceClassification": "model",
    "BertModel": "model",
    "Output": "model",
    "AdamW": "optim",
    "FillMask": "pipelines",
    "TextClassifier": "pipelines",
    "MaskedLM": "tasks",
    "SequenceClassification": "tasks",
    "Tokenizer": "tokenizer",
    "TrainConfig": "trainer",
    "Trainer": "trainer",
}
__all__ = list(_LAZY)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
