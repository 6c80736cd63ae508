"""Padding a batch: the one function that turns token-id lists into (B, T) tensors.

A leaf that imports nothing from minibert, so that the tokenizer (Tokenizer.pad), the collators and the
pipelines share it without the tokenizer reaching forward into the collators' stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_batch(features: Sequence[dict], pad_token_id: int, pad_to_multiple_of: int | None = None,
              keys: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Features (dicts with "input_ids", optionally "token_type_ids") -> int64 tensors (B, T):
    input_ids, attention_mask, token_type_ids, and each of `keys` padded with -1.

    T is the batch's longest sequence, rounded up to pad_to_multiple_of (tensor cores like 8).
    """
    if not features:
        raise ValueError("cannot pad an empty batch")
    T = max(len(f["input_ids"]) for f in features)
    if pad_to_multiple_of:
        T = -(-T // pad_to_multiple_of) * pad_to_multiple_of
    B = len(features)
    batch = {
        "input_ids": torch.full((B, T), pad_token_id, dtype=torch.long),
        "attention_mask": torch.zeros(B, T, dtype=torch.long),
        "token_type_ids": torch.zeros(B, T, dtype=torch.long),
    }
    batch.update({k: torch.full((B, T), -1, dtype=torch.long) for k in keys})
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        batch["input_ids"][i, :n] = torch.as_tensor(f["input_ids"])
        batch["attention_mask"][i, :n] = 1
        if "token_type_ids" in f:
            batch["token_type_ids"][i, :n] = torch.as_tensor(f["token_type_ids"])
        for k in keys:
            batch[k][i, :n] = torch.as_tensor(f[k])
    return batch
