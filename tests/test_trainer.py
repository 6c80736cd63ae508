"""The training engine: it learns, its gradients are right, it resumes exactly, it runs on 2 ranks."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import minilm_dir, scale_loss, tiny_config

from minibert import BertForMaskedLM, BertForSequenceClassification, MaskedLM, MaskingCollator, Tokenizer
from minibert.data import ClassificationCollator, tokenize_texts
from minibert.run_folder import RunFolder
from minibert.tasks import SequenceClassification
from minibert.train_state import find_resume, load_checkpoint
from minibert.trainer import STATE_FILE, TrainConfig, Trainer, TrainingError, list_checkpoints

SENTENCES = [
    "the cat sat on the mat", "the dog sat on the log", "a bird flew over the house",
    "the sun rises in the east", "rivers flow down to the sea", "she reads a book every night",
    "he plays the piano very well", "children play in the park", "the train leaves at noon",
    "we planted trees in the garden", "the moon shines at night", "snow falls in the winter",
]


@pytest.fixture(scope="module")
def tok(minilm_tokenizer) -> Tokenizer:
    return minilm_tokenizer


@pytest.fixture(scope="module")
def features(tok):
    return tokenize_texts(tok, SENTENCES, max_length=32)


def make_trainer(tok, features, tmp_path, seed=0, dropout=0.1, **kw) -> Trainer:
    torch.manual_seed(seed)
    model = BertForMaskedLM(tiny_config(tok.vocab_size, dropout=dropout))
    args = dict(output=str(tmp_path), batch_size=4, lr=3e-3, warmup=2, precision="fp32", device="cpu",
                progress=False, log_every=1, seed=0)
    args.update(kw)
    return Trainer(model, TrainConfig(**args), MaskedLM(), features, MaskingCollator(tok, seed=0), tokenizer=tok,
                   log=lambda *_: None)


def test_mlm_loss_drops_on_a_repeated_corpus(tok, features, tmp_path):
    trainer = make_trainer(tok, features, tmp_path, max_steps=150, schedule="constant", lr=5e-3)
    trainer.train()
    lines = [line for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    losses = [json.loads(line)["loss"] for line in lines]
    first, last = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    # ln(30522) = 10.3 at the start; a model that learnt the 12 sentences gets far below it.
    assert first > 9.0 and last < 0.5 * first, (first, last)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "vocab.txt").is_file()


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_is_bit_identical(tok, features, tmp_path):
    # 12 sentences / batch 4 = 3 micro-batches per epoch, grad_accum 2: steps straddle epochs.
    common = dict(max_steps=7, save_every=3, grad_accum=2, keep_checkpoints=5)
    full = make_trainer(tok, features, tmp_path / "full", **common)
    full.train()
    assert [p.name for p in list_checkpoints(tmp_path / "full")] == ["checkpoint-3", "checkpoint-6"]
    # "Stop" after step 3: start again from its checkpoint, with a model initialised differently.
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "full" / "checkpoint-3", part / "checkpoint-3")
    resumed = make_trainer(tok, features, part, seed=123, **common)
    resumed.train(resume=True)
    assert resumed.step_count == 7
    assert resumed.tokens_seen == full.tokens_seen > 0  # the token count carries over too
    a, b = _weights(full.model), _weights(resumed.model)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_ignores_and_cleans_half_written_checkpoints(tok, features, tmp_path):
    trainer = make_trainer(tok, features, tmp_path, max_steps=2, save_every=2)
    trainer.train()
    (tmp_path / ".tmp-checkpoint-4").mkdir()  # a save killed before its rename
    (tmp_path / ".tmp-checkpoint-4" / "model.safetensors").write_bytes(b"garbage")
    (tmp_path / "checkpoint-9").mkdir()  # a folder without trainer state is not a checkpoint
    logs = []
    assert find_resume(RunFolder(tmp_path), True, logs.append) == tmp_path / "checkpoint-2"
    assert not (tmp_path / ".tmp-checkpoint-4").exists() and logs == [f"removed incomplete checkpoint "
                                                                      f"{tmp_path / '.tmp-checkpoint-4'}"]
    with pytest.raises(TrainingError, match="not a complete checkpoint"):
        find_resume(RunFolder(tmp_path), str(tmp_path / "checkpoint-9"), logs.append)


def test_accumulated_gradient_equals_big_batch_gradient(tok, tmp_path):
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_config(tok.vocab_size, dropout=0.0))
    feats = tokenize_texts(tok, SENTENCES[:6], max_length=32)
    t = Trainer(model, TrainConfig(output=str(tmp_path), batch_size=2, precision="fp32", device="cpu",
                                   progress=False), MaskedLM(), feats, MaskingCollator(tok), log=lambda *_: None)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (6, 10), generator=g)
    labels = torch.full_like(ids, -100)
    # micro-batches with 1, 4 and 7 targets: a mean of per-micro-batch means would weight them wrongly
    for row, cols in {0: [1], 2: [1, 2, 3, 4], 4: [1, 2, 3, 4, 5, 6, 7]}.items():
        labels[row, cols] = ids[row, cols]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
             "labels": labels}
    micro = [{k: v[i:i + 2] for k, v in batch.items()} for i in (0, 2, 4)]
    loss_big = t.accumulate([batch])
    big = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    loss_acc = t.accumulate(micro)
    # A loss near 10 summed in another order differs by an ulp or two (9.5e-7, one ulp, measured on AMX):
    # rtol 1e-6 is about 8 ulps; a mean of per-micro-batch means (the bug this guards) is off by > 1e-2.
    torch.testing.assert_close(loss_acc, loss_big, atol=0, rtol=1e-6)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, big[n], atol=1e-6, rtol=1e-5, msg=n)


def test_finite_difference_gradients_float64():
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_config(50, dropout=0.0)).double()
    ids = torch.randint(5, 50, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 1], labels[1, 3] = 7, 9, 11

    def loss() -> torch.Tensor:
        return model(ids, mask, labels=labels).loss

    loss().backward()
    params = dict(model.named_parameters())
    probes = [("bert.embeddings.word.weight", (9, 3)), ("bert.layers.0.attn.qkv.weight", (40, 5)),
              ("bert.layers.1.ffn.up.bias", (7,)), ("head.norm.weight", (2,)), ("head.bias", (11,)),
              ("bert.layers.1.ffn_norm.weight", (30,))]
    eps = 1e-6
    for name, idx in probes:
        p = params[name]
        with torch.no_grad():
            old = p[idx].item()
            p[idx] = old + eps
            up = loss().item()
            p[idx] = old - eps
            down = loss().item()
            p[idx] = old
        numeric = (up - down) / (2 * eps)
        assert abs(numeric - p.grad[idx].item()) <= 1e-6 + 1e-5 * abs(numeric), (name, numeric, p.grad[idx].item())


def test_nan_loss_stops_training_and_saves_nothing_after(tok, features, tmp_path, monkeypatch):
    trainer = make_trainer(tok, features, tmp_path, max_steps=6, save_every=1, log_every=1, keep_checkpoints=10)
    scale_loss(trainer, float("nan"), from_call=3)
    with pytest.raises(TrainingError, match="step 3"):
        trainer.train()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-1", "checkpoint-2"]
    assert not (tmp_path / "model.safetensors").exists()


def test_classification_eval_metrics(tok, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(tok.vocab_size, dropout=0.1)
    cfg.num_labels = 2
    model = BertForSequenceClassification(cfg)
    feats = tokenize_texts(tok, SENTENCES, max_length=32)
    for i, f in enumerate(feats):
        f["label"] = int("the" in SENTENCES[i].split())
    t = Trainer(model, TrainConfig(output=str(tmp_path), batch_size=4, lr=3e-3, max_steps=40, precision="fp32",
                                   device="cpu", progress=False, log_every=20),
                SequenceClassification(), feats, ClassificationCollator(tok.pad_token_id), feats, tokenizer=tok,
                log=lambda *_: None)
    summary = t.train()
    ev = summary["eval"]
    assert set(ev) >= {"eval_loss", "accuracy", "macro_f1"}
    assert ev["accuracy"] >= 0.9  # it can memorise 12 sentences
    assert (tmp_path / "best" / "config.json").is_file()


def _ddp_worker(rank: int, world: int, init: str, out: str, vocab_dir: str):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        tok = Tokenizer.from_pretrained(vocab_dir)
        torch.manual_seed(0)
        model = BertForMaskedLM(tiny_config(tok.vocab_size, dropout=0.0))
        cfg = TrainConfig(output=out, batch_size=2, lr=1e-2, warmup=0, max_steps=3, precision="fp32",
                          device="cpu", progress=False)
        t = Trainer(model, cfg, MaskedLM(), tokenize_texts(tok, SENTENCES, 32), MaskingCollator(tok),
                    log=lambda *_: None)
        batch = _combined_batch()
        for _ in range(3):  # rank r takes rows r, r+2: unequal numbers of targets per rank
            t.step([{k: v[rank::2] for k, v in batch.items()}])
        torch.save(model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _combined_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 2000, (4, 9), generator=g)
    labels = torch.full_like(ids, -100)
    labels[0, [1, 2, 3]] = ids[0, [1, 2, 3]]
    labels[1, 4] = ids[1, 4]
    labels[2, [5, 6]] = ids[2, [5, 6]]
    labels[3, [1, 7, 8]] = ids[3, [1, 7, 8]]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
            "labels": labels}


@pytest.mark.slow
def test_two_process_ddp_equals_one_process(tok, tmp_path):
    vocab_dir = str(minilm_dir())
    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path}/rendezvous", str(tmp_path), vocab_dir), nprocs=2)
    w0 = torch.load(tmp_path / "rank0.pt")
    w1 = torch.load(tmp_path / "rank1.pt")
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_config(tok.vocab_size, dropout=0.0))
    t = Trainer(model, TrainConfig(output=str(tmp_path / "single"), batch_size=2, lr=1e-2, warmup=0, max_steps=3,
                                   precision="fp32", device="cpu", progress=False),
                MaskedLM(), tokenize_texts(tok, SENTENCES, 32), MaskingCollator(tok), log=lambda *_: None)
    for _ in range(3):
        t.step([_combined_batch()])
    for k, v in model.state_dict().items():
        assert torch.equal(w0[k], w1[k]), k
        torch.testing.assert_close(w0[k], v, atol=1e-5, rtol=0, msg=k)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_on_cuda_skips_inf_step(tok, features, tmp_path):
    trainer = make_trainer(tok, features, tmp_path, precision="fp16", device="cuda", max_steps=2)
    before = _weights(trainer.model)
    scale = trainer.scaler.loss_scale
    batch = trainer.collate(features[:4])
    forward = trainer.forward
    scale_loss(trainer, float("inf"))
    trainer.step([batch])
    after = _weights(trainer.model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trainer.scaler.loss_scale == scale / 2
    trainer.forward = forward
    trainer.step([batch])
    assert not all(torch.equal(before[k], v) for k, v in _weights(trainer.model).items())


def test_checkpoint_holds_everything_for_resume(tok, features, tmp_path):
    trainer = make_trainer(tok, features, tmp_path, max_steps=2, save_every=2)
    trainer.train()
    state = torch.load(tmp_path / "checkpoint-2" / STATE_FILE, weights_only=True)
    expected = {"step", "tokens_seen", "position", "optimizer", "schedule", "scaler", "rng", "collate", "data"}
    assert expected <= set(state)
    assert state["data"]["examples"] == len(features) and state["data"]["batch_size"] == trainer.cfg.batch_size
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in lines if "loss" in r]
    assert logged[-1]["tokens"] == trainer.tokens_seen == state["tokens_seen"]
    trainer.sampler.set_epoch(0)
    first_two = list(trainer.sampler)[:2]  # the two micro-batches trained on: real tokens, no padding
    assert trainer.tokens_seen == sum(len(features[j]["input_ids"]) for batch in first_two for j in batch)
    assert (tmp_path / "checkpoint-2" / "model.safetensors").is_file()


class _Payload:
    """Unpickling this runs os.system: the attack a shared checkpoint folder could carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_resume_refuses_a_state_file_with_pickled_code(tok, features, tmp_path):
    trainer = make_trainer(tok, features, tmp_path, max_steps=2, save_every=2)
    trainer.train()
    marker = tmp_path / "pwned"
    state_file = tmp_path / "checkpoint-2" / STATE_FILE
    state = torch.load(state_file, weights_only=True)
    state["collate"] = _Payload(marker)
    torch.save(state, state_file)
    again = make_trainer(tok, features, tmp_path, max_steps=3)
    with pytest.raises(TrainingError) as e:
        load_checkpoint(again, tmp_path / "checkpoint-2")
    message = str(e.value)
    assert message.startswith(f"{state_file}: refused") and "\n" not in message
    assert len(message.replace(str(state_file), "")) < 150
    assert not marker.exists()


def scripted_run(tok, features, tmp_path, scores: list[dict], **kw) -> tuple[Trainer, list[str], list[int]]:
    """A masked-LM run whose evaluations return `scores` in turn (the model's own numbers never count):
    what picks best/ and what stops training, alone. A checkpoint every step, all kept, to compare best/ with.
    Returns the trainer, its log lines and the steps at which it evaluated."""
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_config(tok.vocab_size, dropout=0.0))
    cfg = dict(output=str(tmp_path), batch_size=4, lr=1e-3, precision="fp32", device="cpu", progress=False,
               log_every=1, save_every=1, keep_checkpoints=100, plot=False)
    logs: list[str] = []
    trainer = Trainer(model, TrainConfig(**{**cfg, **kw}), MaskedLM(), features, MaskingCollator(tok, seed=0),
                      eval_data=features[:4], tokenizer=tok, log=logs.append)
    script, steps = iter(scores), []

    def evaluate():
        steps.append(trainer.step_count)
        return dict(next(script))

    trainer.evaluate = evaluate
    return trainer, logs, steps


def _same_weights(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_patience_stops_after_n_evaluations_without_improvement(tok, features, tmp_path):
    # evaluations at steps 2, 4, 6, 8: accuracy 0.5, 0.7 (best), 0.6, 0.7 (a tie is no improvement): the
    # 2nd evaluation in a row without improvement is step 8's, so training stops there, not at step 40
    scores = [{"accuracy": a, "eval_loss": 1.0} for a in (0.5, 0.7, 0.6, 0.7, 0.9, 0.9)]
    trainer, logs, steps = scripted_run(tok, features, tmp_path, scores, max_steps=40, eval_every=2, patience=2,
                                        metric="accuracy", log_every=5)
    summary = trainer.train()
    assert steps == [2, 4, 6, 8]  # and no extra evaluation after the stop
    assert summary["steps"] == 8 and summary["best_step"] == 4 and summary["metric"] == "accuracy"
    assert summary["best_value"] == 0.7 and summary["eval"]["step"] == 8
    assert summary["stopped"] == "early stop at step 8: accuracy did not improve for 2 evaluations (--patience 2)"
    assert summary["stopped"] in logs
    assert _same_weights(tmp_path / "best", tmp_path / "checkpoint-4")
    assert _same_weights(tmp_path, tmp_path / "checkpoint-8")  # the final model is the last step's
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["summary"]["stopped"] == summary["stopped"] and records[-1]["summary"]["best_step"] == 4
    assert [r["step"] for r in records if "loss" in r] == [5, 8]  # the stopping step's training loss too


@pytest.mark.parametrize("metric, best_step", [("eval_loss", 8), ("accuracy", 2), (None, 8)])
def test_metric_picks_best(tok, features, tmp_path, metric, best_step):
    # eval_loss lowest at step 8, accuracy highest at step 2; masked LM picks by eval_loss by default
    scores = [{"eval_loss": loss, "accuracy": acc} for loss, acc in ((3.0, 0.9), (2.0, 0.1), (2.5, 0.1),
                                                                      (1.5, 0.2), (1.8, 0.3))]
    trainer, _, steps = scripted_run(tok, features, tmp_path, scores, max_steps=10, eval_every=2, metric=metric)
    summary = trainer.train()
    assert steps == [2, 4, 6, 8, 10] and summary["stopped"] == "reached the last step (10)"
    assert summary["best_step"] == best_step and summary["metric"] == (metric or "eval_loss")
    assert _same_weights(tmp_path / "best", tmp_path / f"checkpoint-{best_step}")


def test_eval_every_epoch(tok, features, tmp_path):
    # 12 sentences in batches of 4: 3 steps an epoch; the last epoch's evaluation is the final one
    scores = [{"eval_loss": 1.0, "accuracy": 0.0}] * 3
    trainer, _, steps = scripted_run(tok, features, tmp_path, scores, epochs=3, eval_every="epoch")
    trainer.train()
    assert steps == [3, 6, 9]


@pytest.mark.parametrize("kw, eval_data, message", [
    (dict(patience=2, eval_every=2), False, "--patience 2 needs evaluation data"),
    (dict(metric="macro_f1"), True, "--metric macro_f1: not a metric of --task mlm"),
])
def test_model_selection_settings_that_cannot_work(tok, features, tmp_path, kw, eval_data, message):
    # what TrainConfig alone can tell is refused when it is made (test_train_config.py); these need the task or data
    cfg = TrainConfig(output=str(tmp_path), max_steps=2, device="cpu", progress=False, **kw)
    with pytest.raises((TrainingError, ValueError), match=message):
        Trainer(BertForMaskedLM(tiny_config(tok.vocab_size)), cfg, MaskedLM(), features, MaskingCollator(tok),
                eval_data=features[:4] if eval_data else None, tokenizer=tok)


def test_bf16_weights_needs_bf16_and_keeps_the_fp32_model_the_truth(tok, features, tmp_path):
    """--bf16-weights: the passes run on a bf16 copy, the optimizer updates the fp32 model and the copy
    is refreshed from it; gradients land in the fp32 model's .grad summed over micro-batches."""
    with pytest.raises(TrainingError, match="--bf16-weights needs bf16 precision"):
        make_trainer(tok, features, tmp_path / "fp32", bf16_weights=True)
    t = make_trainer(tok, features, tmp_path, dropout=0.0, precision="bf16", bf16_weights=True, grad_accum=3, warmup=0,
                     max_steps=2)
    assert all(p.dtype == torch.float32 for p in t.model.parameters())
    assert all(w.dtype == torch.bfloat16 for w in t.bf16_copy.module.parameters())
    micro = [t.collate(features[i:i + 4]) for i in (0, 4, 8)]
    t.accumulate(micro)
    assert all(w.grad is None for w in t.bf16_copy.module.parameters())
    got = {n: p.grad.clone() for n, p in t.model.named_parameters()}
    assert all(g.dtype == torch.float32 for g in got.values())
    # the same micro-batches through an autocast pass of the fp32 model: the same gradient up to bf16 rounding
    t.model.zero_grad(set_to_none=True)
    bf16_copy, t.bf16_copy, t.forward = t.bf16_copy, None, t.model
    t.accumulate(micro)
    for n, p in t.model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, atol=0.03 * float(p.grad.abs().max()) + 1e-6, rtol=0, msg=n)
    t.bf16_copy, t.forward = bf16_copy, bf16_copy.module
    t.model.zero_grad(set_to_none=True)
    before = _weights(t.model)
    t.step(micro)
    after = _weights(t.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for (n, p), w in zip(t.model.named_parameters(), t.bf16_copy.module.parameters()):
        assert torch.equal(w, p.detach().to(torch.bfloat16)), n  # refreshed after the update


def test_bf16_weights_trains_like_autocast_and_resumes_bit_identically(tok, features, tmp_path):
    """Over 12 steps the per-step losses of --bf16-weights stay within 3% of the autocast run's and the
    loss falls; stopping after step 6 and resuming gives the same fp32 weights as the full run."""
    def losses(folder):
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in lines if '"loss"' in line]

    common = dict(max_steps=12, dropout=0.0, precision="bf16", schedule="constant", lr=3e-3)
    make_trainer(tok, features, tmp_path / "autocast", **common).train()
    full = make_trainer(tok, features, tmp_path / "full", bf16_weights=True, save_every=6, **common)
    full.train()
    a, b = losses(tmp_path / "autocast"), losses(tmp_path / "full")
    assert len(a) == len(b) == 12
    assert b[-1] < b[0] - 0.5, b
    for x, y in zip(a, b):
        assert y == pytest.approx(x, rel=0.03), (a, b)
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "full" / "checkpoint-6", part / "checkpoint-6")
    resumed = make_trainer(tok, features, part, seed=123, bf16_weights=True, save_every=6, **common)
    resumed.train(resume=True)
    for k, v in _weights(full.model).items():
        assert torch.equal(v, _weights(resumed.model)[k]), k
