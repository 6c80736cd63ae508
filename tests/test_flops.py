"""bench/common.py's flops_per_token, the work the throughput benchmarks divide by, against the model it counts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from minibert import BertForMaskedLM, kernels

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench/: not installed
from bench.common import flops_per_token  # noqa: E402


def test_flops_per_token_counts_the_models_matmuls():
    """2 FLOPs per weight of every matmul (the tied decoder included) plus attention's QK^T and AV,
    times 3 for forward + backward; the MLM head's share, and the last layer's apart from its K and V
    projections, scale with the positions they run on."""
    cfg, T = tiny_config(vocab_size=120), 16
    model = BertForMaskedLM(cfg)
    encoder = sum(m.weight.numel() for m in model.bert.modules() if isinstance(m, torch.nn.Linear))
    last = model.bert.layers[-1]
    at_positions = sum(m.weight.numel() for m in (last.attn.proj, last.ffn.up, last.ffn.down))
    at_positions += cfg.hidden_size * cfg.hidden_size  # the Q third of the fused QKV weight
    head = model.head.dense.weight.numel() + cfg.vocab_size * cfg.hidden_size
    attention = cfg.num_hidden_layers * 2 * 2 * T * cfg.hidden_size
    assert flops_per_token(cfg, T) == 3 * (2 * encoder + attention + 2 * head)
    assert flops_per_token(cfg, T, mlm_fraction=0.15) == pytest.approx(
        3 * (2 * (encoder - 0.85 * at_positions) + attention * (1 - 0.85 / cfg.num_hidden_layers)
             + 2 * head * 0.15))


def test_flops_per_token_equals_the_matmuls_a_training_step_runs(monkeypatch):
    """What torch.utils.flop_counter counts for one forward and backward (dropout on, so the
    written-out attention's bmm run; every row with the same number of masked positions, so the last
    layer's queries carry no padding) is flops_per_token at that masked fraction, exactly."""
    from torch.utils.flop_counter import FlopCounterMode

    monkeypatch.setattr(kernels, "ONEDNN_FP32", False)  # the same products through F.linear
    cfg, B, T, n = tiny_config(vocab_size=120), 4, 16, 3
    torch.manual_seed(0)
    model = BertForMaskedLM(cfg).train()
    ids = torch.randint(5, cfg.vocab_size, (B, T))
    labels = torch.full((B, T), -100)
    for b in range(B):
        cols = torch.randperm(T)[:n]
        labels[b, cols] = ids[b, cols]
    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids=ids, attention_mask=torch.ones(B, T, dtype=torch.long), labels=labels).loss.backward()
    assert counter.get_total_flops() == pytest.approx(B * T * flops_per_token(cfg, T, mlm_fraction=n / T),
                                                      rel=1e-12)
