"""The callbacks of a run: the hooks in order, and --report-to tensorboard read back from its event file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import scale_loss, tiny_config

from minibert import BertForMaskedLM, MaskedLM, MaskingCollator
from minibert.callbacks import Callback
from minibert.trainer import TrainConfig, Trainer, TrainingError


def make_trainer(tok, features, out: Path, callbacks=None, **kw) -> Trainer:
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_config(tok.vocab_size, dropout=0.0))
    cfg = dict(output=str(out), batch_size=4, lr=1e-3, warmup=0, precision="fp32", device="cpu", progress=False,
               log_every=1, seed=0, plot=False)
    return Trainer(model, TrainConfig(**{**cfg, **kw}), MaskedLM(), features, MaskingCollator(tok, seed=0),
                   eval_data=features[:4], tokenizer=tok, log=lambda *_: None, callbacks=callbacks)


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, trainer):
        self.events.append(("begin", trainer.step_count))

    def on_log(self, trainer, record):
        self.events.append(("log", record["step"]))

    def on_evaluate(self, trainer, metrics, improved):
        # called after best/ is saved: a hook that sees `improved` finds the new best/ in place
        self.events.append(("eval", metrics["step"], improved, (trainer.run.best / "model.safetensors").is_file()))

    def on_save(self, trainer, path):
        self.events.append(("save", path.name))

    def on_train_end(self, trainer, summary):
        self.events.append(("end", summary and summary["steps"]))


def test_hooks_are_called_in_order_and_end_on_failure_too(tok, features, tmp_path):
    rec = Recorder()
    make_trainer(tok, features, tmp_path / "run", [rec], max_steps=4, eval_every=2, save_every=3,
                 log_every=2).train()
    assert rec.events[0] == ("begin", 0) and rec.events[-1] == ("end", 4)
    body = rec.events[1:-1]
    # eval at 2 (during training) comes before step 2's log record, as in metrics.jsonl; the final eval at 4
    # comes after the loop, so after step 4's log record
    assert [e[:2] for e in body] == [("eval", 2), ("log", 2), ("save", "checkpoint-3"), ("log", 4), ("eval", 4)]
    assert body[0][2:] == (True, True)  # the first evaluation is the best so far, best/ saved before the hook

    failing = Recorder()
    trainer = make_trainer(tok, features, tmp_path / "nan", [failing], max_steps=3)
    scale_loss(trainer, float("nan"))
    with pytest.raises(TrainingError, match="inf/nan"):
        trainer.train()
    assert failing.events == [("begin", 0), ("end", None)]


def test_tensorboard_events_hold_the_numbers_of_metrics_jsonl(tok, features, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    make_trainer(tok, features, tmp_path, max_steps=4, eval_every=2, report_to="tensorboard").train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    expected: dict[str, dict[int, float]] = {}
    for r in records:
        if "loss" in r:
            for name in ("loss", "lr", "tokens_per_s"):
                expected.setdefault(f"train/{name}", {})[r["step"]] = r[name]
        elif "eval" in r:
            for name in ("eval_loss", "perplexity", "accuracy", "masked_tokens"):
                expected.setdefault(f"eval/{name}", {})[r["eval"]["step"]] = r["eval"][name]
    assert len(expected["train/loss"]) == 4 and sorted(expected["eval/eval_loss"]) == [2, 4]

    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0]), size_guidance={"scalars": 0})
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == sorted(expected)
    for tag, by_step in expected.items():
        got = {e.step: e.value for e in acc.Scalars(tag)}
        assert got.keys() == by_step.keys(), tag
        for step, value in by_step.items():  # TensorBoard keeps float32
            assert got[step] == pytest.approx(value, rel=1e-6), (tag, step)
