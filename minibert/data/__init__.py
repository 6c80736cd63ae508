"""From a file on disk to a batch of tensors, one module per stage:

    readers.py    files -> texts or labelled examples, and label maps (no torch)
    tagging.py    tagged files (CoNLL, JSONL tokens or spans) -> sentences, and tag schemes (no torch)
    tag_features.py  tagged sentences -> windows of token ids with one label per word (no torch)
    features.py   texts -> token ids: tokenize, group into blocks, pack several per row (no torch)
    padding.py    token ids -> padded (B, T) tensors; a leaf the tokenizer and collators both use
    collators.py  features -> padded, masked batches of tensors
    sampler.py    which features go into each batch (length-grouped)
    token_cache.py  .txt corpora -> memory-mapped token ids, tokenized once; blocks and lines read back (no torch)

The names below are imported on first use, so `import minibert.data.readers` stays torch-free.
"""

from .._lazy import lazy_exports

# name -> the module of this package that defines it
_LAZY = {
    "DataError": "readers",
    "Example": "readers",
    "read_texts": "readers",
    "read_labelled": "readers",
    "build_label_map": "readers",
    "encode_labels": "readers",
    "encode_label_sets": "readers",
    "is_regression": "readers",
    "is_multi_label": "readers",
    "TaggedSentence": "tagging",
    "read_tagged": "tagging",
    "build_tag_map": "tagging",
    "encode_tags": "tagging",
    "tokenize_tagged": "tag_features",
    "tokenize_texts": "features",
    "tokenize_examples": "features",
    "group_texts": "features",
    "pack_features": "features",
    "load_mlm_features": "features",
    "pad_batch": "padding",
    "MaskingCollator": "collators",
    "PackingCollator": "collators",
    "ClassificationCollator": "collators",
    "LengthGroupedSampler": "sampler",
    "padding_fraction": "sampler",
    "prepare_cache": "token_cache",
    "TokenCache": "token_cache",
}
__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
