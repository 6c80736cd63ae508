"""From a file on disk to a batch of tensors, one module per stage:

    readers.py    files -> texts or labelled examples, and label maps (no torch)
    features.py   texts -> token ids: tokenize, group into blocks, pack several per row (no torch)
    collators.py  features -> padded, masked batches of tensors
    sampler.py    which features go into each batch (length-grouped)

The names below are imported on first use, so `import minibert.data.readers` stays torch-free.
"""

import importlib

# name -> the module of this package that defines it
_LAZY = {
    "DataError": "readers",
    "Example": "readers",
    "read_texts": "readers",
    "read_labelled": "readers",
    "build_label_map": "readers",
    "encode_labels": "readers",
    "is_regression": "readers",
    "tokenize_texts": "features",
    "tokenize_examples": "features",
    "group_texts": "features",
    "pack_features": "features",
    "load_mlm_features": "features",
    "pad_batch": "collators",
    "MaskingCollator": "collators",
    "PackingCollator": "collators",
    "ClassificationCollator": "collators",
    "LengthGroupedSampler": "sampler",
    "padding_fraction": "sampler",
}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
