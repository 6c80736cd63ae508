"""Numerical parity with transformers on random tiny models, and the model's own contracts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_SHAPE, assert_close_fp32, tiny_config
from torch import nn

from minibert import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel, kernels
from minibert.checkpoint import state_to_hf
from minibert.model import masked_lm_loss, num_parameters

TINY = dict(**TINY_SHAPE, vocab_size=120, type_vocab_size=2)


def hf_tiny(cls_name: str, seed: int = 0, **kw):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(**TINY, **kw)
    model = getattr(transformers, cls_name)(cfg).eval()
    # Random init leaves LayerNorms at identity and biases at zero; perturb them so the
    # comparison exercises every parameter, not just the matrices.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def batch(seed: int = 1, B: int = 3, T: int = 11):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, TINY["vocab_size"], (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 7:] = 0  # padding in the batch
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    types = torch.zeros(B, T, dtype=torch.long)
    types[0, 6:] = 1
    return ids, mask, types


def save_hf(model, folder, fmt: str):
    if fmt == "safetensors":
        model.save_pretrained(folder)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_masked_lm_parity(tmp_path, fmt):
    ref = hf_tiny("BertForMaskedLM")
    save_hf(ref, tmp_path, fmt)
    ours = BertForMaskedLM.from_pretrained(tmp_path).eval()
    ids, mask, types = batch()
    labels = torch.full_like(ids, -100)
    labels[0, [1, 4, 9]] = ids[0, [1, 4, 9]]
    labels[1, 2] = 7
    with torch.no_grad():
        r = ref(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels,
                output_hidden_states=True)
        hidden = ours.bert(ids, mask, types)
        dense = ours(ids, mask, types)
        sparse = ours(ids, mask, types, labels=labels)
    # fp32 through other kernels (oneDNN linear here, MKL in transformers): hidden states and logits up
    # to |x| = 4.8 differ by at most 2.1 fp32 ulps of the largest entry on AMX and AVX2 kernels; the
    # tolerance, 1e-5 of the largest, is 84 ulps (see assert_close_fp32).
    assert_close_fp32(hidden, r.hidden_states[-1])
    assert_close_fp32(dense.logits, r.logits)
    assert_close_fp32(sparse.loss, r.loss)
    assert_close_fp32(sparse.logits, r.logits[labels != -100])
    assert int(sparse.n_targets) == 4


def test_masked_lm_gradients_match(tmp_path):
    ref = hf_tiny("BertForMaskedLM", seed=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ref.save_pretrained(tmp_path)
    ours = BertForMaskedLM.from_pretrained(tmp_path)
    ref.train()
    ours.train()
    ids, mask, types = batch(seed=4)
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(5)) < 0.3, ids, -100)
    labels[mask == 0] = -100
    ref(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels).loss.backward()
    ours(ids, mask, types, labels=labels).loss.backward()
    ref_grads = {k: p.grad for k, p in ref.named_parameters()}
    our_grads = state_to_hf({n: p.grad for n, p in ours.named_parameters()})
    checked = 0
    for name, g in our_grads.items():
        if name not in ref_grads:  # HF's tied decoder.weight has no separate grad entry
            continue
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-7, msg=name)
        checked += 1
    assert checked == len(our_grads)


@pytest.mark.parametrize("num_labels", [3, 1])
def test_sequence_classification_parity(tmp_path, num_labels):
    ref = hf_tiny("BertForSequenceClassification", num_labels=num_labels)
    ref.save_pretrained(tmp_path)
    ours = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, mask, types = batch(seed=2)
    labels = torch.tensor([0, 2, 1]) if num_labels == 3 else torch.tensor([0.5, -1.0, 2.0])
    with torch.no_grad():
        r = ref(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
        o = ours(ids, mask, types, labels=labels)
    # Logits up to |x| = 1.6 differ by at most 1.5 ulps of the largest on AMX and AVX2 kernels: 1e-5 of
    # the largest is 84 ulps of it (see assert_close_fp32).
    assert_close_fp32(o.logits, r.logits)
    assert_close_fp32(o.loss, r.loss)


def test_bare_model_parity(tmp_path):
    ref = hf_tiny("BertModel")
    ref.save_pretrained(tmp_path)
    ours = BertModel.from_pretrained(tmp_path).eval()
    ids, mask, types = batch(seed=6)
    with torch.no_grad():
        r = ref(input_ids=ids, attention_mask=mask, token_type_ids=types)
        h = ours(ids, mask, types)
    # Hidden states up to |x| = 3.5 differ by at most 2 ulps of the largest (AMX and AVX2 kernels): 1e-5
    # of the largest is 84 ulps of it (see assert_close_fp32).
    assert_close_fp32(h, r.last_hidden_state)
    assert_close_fp32(ours.pool(h), r.pooler_output)


def test_token_type_defaults_to_zero():
    torch.manual_seed(0)
    model = BertModel(BertConfig(**TINY)).eval()
    ids, mask, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask), model(ids, mask, torch.zeros_like(ids)))


def test_mlm_batch_without_targets_is_zero_not_nan():
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(**TINY))
    ids, mask, _ = batch()
    labels = torch.full_like(ids, -100)
    out = model(ids, mask, labels=labels)
    assert torch.isfinite(out.loss) and out.loss.item() == 0.0 and int(out.n_targets) == 0
    out.loss.backward()  # still part of the graph
    # and a batch where only some rows have a target
    labels[0, 2] = 9
    out = model(ids, mask, labels=labels)
    assert torch.isfinite(out.loss) and int(out.n_targets) == 1


def output_and_grads(model, field: str, *args, **kwargs) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One forward (output `field`) and backward of the loss: that output and every parameter's gradient."""
    model.zero_grad()
    out = model(*args, **kwargs)
    out.loss.backward()
    return getattr(out, field).detach(), [p.grad.clone() for p in model.parameters()]


def assert_same_output_and_grads(a, b, rel: float = 1e-5) -> None:
    """The outputs, and each parameter's gradients, within `rel` of their largest entry (assert_close_fp32)."""
    assert_close_fp32(a[0], b[0], rel)
    for ga, gb in zip(a[1], b[1]):
        assert_close_fp32(ga, gb, rel)


def test_sparse_head_matches_dense_loss_and_grads():
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    ids, mask, _ = batch()
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.2, ids, -100)
    labels[0, 0] = 3
    results = []
    for sparse in (True, False):
        model.sparse_head = sparse
        results.append(output_and_grads(model, "loss", ids, mask, labels=labels))
    # The head's matmuls on the labelled rows or on all of them: at most 1.6 ulps of each tensor's
    # largest entry apart (AMX and AVX2 kernels); 1e-5 of the largest is 84.
    assert_same_output_and_grads(*results)


@pytest.mark.parametrize("packed", [False, True])
def test_last_layer_at_positions_equals_the_full_output_selected(packed):
    """BertModel(positions=...) runs the last layer past attention for the selected tokens only; the
    values and every parameter's gradient are those of the full output selected there."""
    torch.manual_seed(0)
    model = BertModel(BertConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    ids, mask, types = batch(seed=4)
    kw = {"sequence_ids": torch.tensor([[1] * 4 + [2] * 5 + [0] * 2] * 3)} if packed else {}
    where = torch.rand(ids.shape, generator=torch.Generator().manual_seed(3)) < 0.3
    where[1, 0] = True
    weights = torch.randn(int(where.sum()), TINY["hidden_size"])
    results = []
    for sparse in (True, False):
        model.zero_grad()
        h = model(ids, mask, types, positions=where, **kw) if sparse else model(ids, mask, types, **kw)[where]
        (h * weights).sum().backward()
        results.append((h.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    assert results[0][0].shape == (int(where.sum()), TINY["hidden_size"])
    # The last layer on fewer rows blocks its matmuls otherwise: at most 0.3 ulps of |x| = 3 measured.
    assert_close_fp32(results[0][0], results[1][0])
    assert results[0][1].keys() == results[1][1].keys()
    for name, g in results[1][1].items():
        # Sums in another order: fp32 rounding relative to the tensor's largest entry (the embedding
        # tables' gradients reach ~300 here).
        err = float((results[0][1][name] - g).abs().max())
        assert err <= 1e-5 + 1e-6 * float(g.abs().max()), (name, err)
    # (N, 2) indices select the same rows, in the same order
    torch.testing.assert_close(model(ids, mask, types, positions=where.nonzero(), **kw), results[0][0])


def test_positions_as_index_tensor_equal_boolean_mask():
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(**TINY)).eval()
    ids, mask, _ = batch()
    where = torch.zeros_like(ids, dtype=torch.bool)
    where[0, 3] = where[2, 1] = True
    with torch.no_grad():
        a = model(ids, mask, positions=where).logits
        b = model(ids, mask, positions=where.nonzero()).logits
        full = model(ids, mask).logits
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, full[where])


@pytest.mark.parametrize("packed", [False, True])
def test_last_layer_attends_from_the_selected_queries_only(monkeypatch, packed):
    """The last layer's attention gets one query row per selected token of the fullest row, not T;
    (N, 2) indices in any order, repeats included, give the full output's rows in that order."""
    torch.manual_seed(0)
    model = BertModel(BertConfig(**TINY)).eval()
    ids, mask, types = batch(seed=4)
    kw = {"sequence_ids": torch.tensor([[1] * 4 + [2] * 5 + [0] * 2] * 3)} if packed else {}
    index = torch.tensor([[2, 7], [0, 3], [2, 1], [0, 3], [1, 10], [2, 0]])  # rows 0, 1, 2: 2, 1, 3 picks
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.append((q.shape[2], k.shape[2]))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        at = model(ids, mask, types, positions=index, **kw)
        full = model(ids, mask, types, **kw)
    T = ids.shape[1]
    assert seen[TINY["num_hidden_layers"] - 1] == (3, T)  # the last layer of the first call
    assert all(s == (T, T) for s in seen[:TINY["num_hidden_layers"] - 1] + seen[TINY["num_hidden_layers"]:])
    assert_close_fp32(at, full[index[:, 0], index[:, 1]])  # as in the test above (measured 0 here)


def test_tied_decoder_and_init():
    transformers = pytest.importorskip("transformers")
    cfg = BertConfig(**TINY)
    model = BertForMaskedLM(cfg)
    names = dict(model.named_parameters())
    assert not any("decoder" in n for n in names)  # the decoder is the embedding table itself
    # transformers counts its tied decoder once too: the same parameters, counted the same way
    assert num_parameters(model) == transformers.BertForMaskedLM(transformers.BertConfig(**TINY)).num_parameters()
    w = model.bert.layers[0].attn.qkv.weight
    assert abs(w.std().item() - cfg.initializer_range) < 0.003
    assert torch.all(model.bert.layers[0].attn_norm.weight == 1)
    assert torch.all(model.bert.embeddings.word.weight[cfg.pad_token_id] == 0)


def test_half_precision_padding_has_no_nan():
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(**TINY)).eval()
    ids, mask, _ = batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids, mask).logits
    assert torch.isfinite(logits).all()


def test_masked_lm_loss_reduces_over_targets_only():
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, -100, 2], [-100, -100, 4]])
    loss, n = masked_lm_loss(logits, labels)
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(loss, ref)
    assert int(n) == 3


def test_config_rejects_bad_heads():
    with pytest.raises(ValueError, match="num_attention_heads"):
        BertConfig(hidden_size=30, num_attention_heads=4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_keeps_with_probability_1_minus_p_and_scales(dtype):
    """minibert's CPU dropout (a torch.rand mask), fp32 and bf16: over 2^20 elements the kept
    fraction is 0.9 within 5 standard errors (sqrt(0.09 / 2^20) = 0.0003), kept values are x / 0.9
    (bf16: x times 1 / 0.9 in bf16, what torch's kernel gives), the gradient is the same mask, and
    eval mode, p = 0 and other dtypes behave as nn.Dropout."""
    from minibert.model import Dropout

    torch.manual_seed(0)
    x = torch.randn(1024, 1024).to(dtype).requires_grad_()
    scale = torch.tensor(1 / 0.9).to(dtype)  # fp32: 1 / 0.9; bf16: rounded as torch's mask is
    drop = Dropout(0.1).train()
    y = drop(x)
    assert y.dtype == dtype
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 5 * (0.09 / x.numel()) ** 0.5
    torch.testing.assert_close(y[kept], (x * scale)[kept], rtol=1e-6, atol=0)
    ref = nn.Dropout(0.1).train()(x.detach())  # torch's kernel: the same kept values
    torch.testing.assert_close(ref[ref != 0], (x.detach() * scale)[ref != 0], rtol=1e-6, atol=0)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.to(dtype) * scale, rtol=1e-6, atol=0)
    assert torch.equal(drop.eval()(x), x) and torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    half = x.detach().half()
    assert abs((Dropout(0.1).train()(half) != 0).float().mean().item() - 0.9) < 0.01  # torch's kernel
    torch.manual_seed(1)
    a = drop.train()(x)
    torch.manual_seed(1)
    assert torch.equal(drop(x), a)  # drawn from torch's generator: seeded runs and resume repeat it


@pytest.mark.parametrize("p", [0.1, 0.5, 0.75])
def test_keep_mask_keeps_with_probability_1_minus_p_at_every_position_of_a_word(p):
    """keep_mask draws int64 words and reads each as four int16s: each quarter must be uniform over
    the whole int16 range (a draw without the sign bit would keep every fourth element when
    p < 0.5). Over 2^18 elements at each of the four positions, the kept fraction is 1 - p within 5
    standard errors; an element count that is not a multiple of 4 and the shape come out right."""
    from minibert.kernels import keep_mask

    torch.manual_seed(0)
    m = keep_mask(torch.Size([1024, 1025]), p, torch.device("cpu"))
    assert m.shape == (1024, 1025) and m.dtype == torch.bool
    flat = m.flatten()[: 2**20]
    se = (p * (1 - p) / 2**18) ** 0.5
    for quarter in range(4):
        assert abs(flat[quarter::4].double().mean().item() - (1 - p)) < 5 * se
    assert keep_mask(torch.Size([3, 5]), 1e-12, torch.device("cpu")).all()


def split_heads(x: torch.Tensor, nh: int) -> torch.Tensor:
    B, T, C = x.shape
    return x.view(B, T, nh, C // nh).transpose(1, 2)  # (B, nh, T, hs)


def sdpa_joined(q, k, v, mask, nh, dropout_p=0.0):
    """F.scaled_dot_product_attention on (B, T, C) tensors, heads split and joined: the reference."""
    y = F.scaled_dot_product_attention(split_heads(q, nh), split_heads(k, nh), split_heads(v, nh),
                                       attn_mask=mask, dropout_p=dropout_p)
    return y.transpose(1, 2).flatten(2)


def attention_and_grads(fn, qkv: torch.Tensor, gy: torch.Tensor, *args):
    """fn's output on q, k, v sliced from qkv (the layout the model hands over) and qkv's gradient
    for the upstream gradient gy."""
    qkv = qkv.detach().requires_grad_()
    y = fn(*qkv.split(qkv.size(-1) // 3, dim=2), *args)
    y.backward(gy)
    return y.detach(), qkv.grad


@pytest.mark.parametrize("queries", ["all", "some"])
def test_written_out_attention_equals_sdpa(queries):
    """The CPU training path's attention (head by head on strided views, backward written out)
    computes what F.scaled_dot_product_attention does, output and gradients of q, k and v, for no
    mask, a key-padding mask and a packed block-diagonal mask, with every token a query and with
    fewer queries than keys (the last layer's selected positions); fp32, within 1e-5 of the largest
    entry. Wide inputs make the attention far from uniform, so a wrong scale, mask or softmax gradient
    shows."""
    from minibert.kernels import attention
    from minibert.model import attention_mask_for_sdpa, packed_mask_for_sdpa

    torch.manual_seed(0)
    B, T, nh, C = 2, 9, 4, 32
    keep = torch.ones(B, T, dtype=torch.long)
    keep[1, 5:] = 0
    packed = torch.tensor([[1, 1, 1, 2, 2, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1]])
    rows = torch.tensor([0, 2, 3, 5]) if queries == "some" else torch.arange(T)
    for mask in (None, attention_mask_for_sdpa(keep), packed_mask_for_sdpa(packed)):
        if mask is not None and mask.size(2) > 1:
            mask = mask[:, :, rows]
        qkv, gy = torch.randn(B, T, 3 * C) * 2, torch.randn(B, len(rows), C)

        def with_queries(fn):
            return lambda q, k, v, *args: fn(q[:, rows], k, v, *args)

        got = attention_and_grads(with_queries(attention), qkv, gy, mask, nh)
        ref = attention_and_grads(with_queries(sdpa_joined), qkv, gy, mask, nh)
        for a, b in zip(got, ref):
            # Inputs of 2 sigma give outputs and gradients up to |x| = 9, off by at most 6.2 fp32 ulps of
            # the largest entry on AMX and AVX2 kernels: 1e-5 of the largest is 84 (assert_close_fp32).
            assert_close_fp32(a, b)


def test_written_out_attention_dropout_is_the_reference_with_the_same_mask():
    """With attention dropout, the output and gradients are those of softmax weights times the keep
    mask scaled by 1 / (1 - p), the mask being keep_mask's draw for (nh, B, Tq, T) from the same
    seed (fp32, within 1e-5 of the largest entry); about 1 - p of the weights are kept."""
    from minibert.kernels import attention, keep_mask

    B, T, nh, C, p = 2, 16, 4, 32, 0.3
    qkv, gy = torch.randn(B, T, 3 * C) * 2, torch.randn(B, T, C)
    torch.manual_seed(5)
    got = attention_and_grads(attention, qkv, gy, None, nh, p)
    torch.manual_seed(5)
    keep = keep_mask(torch.Size([nh, B, T, T]), p, torch.device("cpu")).transpose(0, 1)  # (B, nh, T, T)
    assert abs(keep.float().mean().item() - (1 - p)) < 0.05

    def reference(q, k, v, mask, nh, p):
        w = (split_heads(q, nh) @ split_heads(k, nh).transpose(-1, -2) * (C // nh) ** -0.5).softmax(-1)
        return (w * keep / (1 - p) @ split_heads(v, nh)).transpose(1, 2).flatten(2)

    ref = attention_and_grads(reference, qkv, gy, None, nh, p)
    for a, b in zip(got, ref):
        # Up to |x| = 18, off by at most 2.7 ulps of the largest on AMX and AVX2 kernels (84 allowed).
        assert_close_fp32(a, b)


def test_training_forward_with_attention_dropout_matches_eval_when_nothing_is_dropped():
    """In training mode with attention dropout on, a CPU model takes the written-out attention; with
    p so small that no weight is dropped (and hidden dropout 0) its output and gradients must be
    those of eval mode, which runs SDPA. A wide init makes the attention far from uniform, so a
    wrong scale or mask shows."""
    cfg = tiny_config(TINY["vocab_size"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=1e-12,
                      initializer_range=0.3)
    torch.manual_seed(0)
    model = BertForMaskedLM(cfg)
    ids = torch.randint(5, cfg.vocab_size, (3, 12))
    att = torch.ones_like(ids)
    att[2, 7:] = 0
    labels = torch.where(torch.rand(ids.shape) < 0.3, ids, -100)
    labels[0, 0] = ids[0, 0]
    results = [output_and_grads(model.train(train), "logits", ids, att, labels=labels) for train in (True, False)]
    # Two kernel families (bmm + softmax against SDPA's fused kernel) sum in other orders: over init seeds
    # 0-19, on AMX and AVX2 kernels, the logits differ by at most 10 fp32 ulps of their largest entry
    # and a gradient by 29 ulps of its own largest (seed 0 here: 23; the wide init puts large terms into
    # small sums). 3e-5 of the largest is 250 ulps; a wrong scale or mask is off by tens of percents.
    assert_same_output_and_grads(*results, rel=3e-5)


def test_bf16_training_on_cpu_writes_attention_out_and_matches_sdpa(monkeypatch):
    """A CPU forward that needs gradients in bf16 (autocast) takes the written-out attention in every
    layer; fp32 without dropout and inference keep SDPA. The bf16 loss and gradients agree with
    the same pass through SDPA to bf16 precision (loss rtol 1e-2, gradients 20% of their largest
    entry), with a wide init so that a wrong scale or mask would show."""
    calls = []
    written = kernels.attention

    def spy(*args):
        calls.append(args[0].dtype)
        return written(*args)

    monkeypatch.setattr(kernels, "attention", spy)
    cfg = tiny_config(TINY["vocab_size"], dropout=0.0, initializer_range=0.3)
    torch.manual_seed(0)
    model = BertForMaskedLM(cfg).train()
    ids = torch.randint(5, cfg.vocab_size, (3, 12))
    att = torch.ones_like(ids)
    att[2, 7:] = 0
    labels = torch.where(torch.rand(ids.shape) < 0.3, ids, -100)
    labels[0, 0] = ids[0, 0]

    def loss_and_grads():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return output_and_grads(model, "loss", ids, att, labels=labels)

    out = loss_and_grads()
    assert calls == [torch.bfloat16] * cfg.num_hidden_layers
    calls.clear()
    model(ids, att, labels=labels).loss.backward()  # fp32, no dropout: SDPA
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids, att)  # no gradients: SDPA
    assert calls == []
    model.zero_grad(set_to_none=True)

    monkeypatch.setattr(kernels, "attention", sdpa_joined)
    ref = loss_and_grads()
    # The two bf16 paths round different intermediates to bf16 (8-bit significand, 3.9e-3): over init
    # seeds 0-9, on AMX, AVX512-BF16 and AVX2 kernels alike, the loss differs by at most 3e-3 (relative)
    # and the worst gradient tensor by 8% of its largest entry (seed 0 here: 5%; the wide init makes
    # the attention peaky). A dropped scale or mask moves the worst tensor by 59% to 900% and the
    # loss by 3e-4 to 9e-2 over the same seeds: the gradients are what tells, at 20%.
    assert out[0].item() == pytest.approx(ref[0].item(), rel=1e-2)
    for (name, _), got, g in zip(model.named_parameters(), out[1], ref[1]):
        torch.testing.assert_close(got, g, atol=0.2 * float(g.abs().max()) + 1e-6, rtol=0, msg=name)


def onednn_calls(monkeypatch) -> list[torch.dtype]:
    """Spy on the oneDNN kernel `linear` calls: the input dtype of every call."""
    calls = []
    kernel = kernels._onednn_linear

    def spy(x, w, b, *rest):
        calls.append(x.dtype)
        return kernel(x, w, b, *rest)

    monkeypatch.setattr(kernels, "_onednn_linear", spy)
    return calls


@pytest.mark.skipif(kernels._onednn_linear is None, reason="this torch build has no oneDNN linear")
@pytest.mark.parametrize("case", ["3d", "2d-no-bias", "transposed-input", "weight-slice", "one-output"])
def test_onednn_linear_equals_f_linear_values_and_gradients(case):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 16, generator=g) if case == "3d" else torch.randn(7, 16, generator=g)
    w = torch.randn(40 if case == "weight-slice" else 1 if case == "one-output" else 24, 16, generator=g)
    b = None if case == "2d-no-bias" else torch.randn(w.size(0), generator=g)
    if case == "transposed-input":
        x = torch.randn(16, 7, generator=g).t()  # not contiguous
    leaves = [t.requires_grad_() for t in (x, w, b) if t is not None]
    wv, bv = (w[8:32], b[8:32]) if case == "weight-slice" else (w, b)
    out = kernels.linear(x, wv, bv)
    grad = torch.randn(out.shape, generator=g)
    got = torch.autograd.grad(out, leaves, grad)
    ref_out = F.linear(x, wv, bv)
    ref = torch.autograd.grad(ref_out, leaves, grad)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    for a, r in zip(got, ref):
        torch.testing.assert_close(a, r, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(kernels._onednn_linear is None, reason="this torch build has no oneDNN linear")
def test_fp32_cpu_training_runs_every_linear_on_onednn_and_bf16_autocast_none(monkeypatch):
    calls = onednn_calls(monkeypatch)
    monkeypatch.setattr(kernels, "ONEDNN_FP32", True)  # whatever MINIBERT_FP32_MATMUL says
    cfg = BertConfig(**TINY_SHAPE, vocab_size=64)
    model = BertForMaskedLM(cfg).train()
    ids = torch.randint(5, 64, (2, 9))
    labels = torch.where(torch.rand(ids.shape) < 0.4, ids, -100)
    labels[0, 0] = ids[0, 0]
    model(ids, labels=labels).loss.backward()
    # Forward: per layer qkv, attention output, FFN up and down, the last layer's qkv as two calls
    # (Q at the labelled positions, K and V everywhere); the MLM head's dense and vocabulary
    # projection. Backward: one input-gradient call for each (the weight gradients stay on MKL).
    forward = 4 * cfg.num_hidden_layers + 1 + 2
    assert calls == [torch.float32] * (2 * forward)
    calls.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids, labels=labels).loss.backward()
    assert calls == []
    monkeypatch.setattr(kernels, "ONEDNN_FP32", False)
    model(ids, labels=labels).loss.backward()
    assert calls == []


@pytest.mark.slow  # starts two interpreters
def test_fp32_matmul_environment_switch():
    code = "import minibert.kernels as m; print(m.ONEDNN_FP32)"
    env = {**os.environ, "MINIBERT_FP32_MATMUL": "blas"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    env["MINIBERT_FP32_MATMUL"] = "onednn"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
