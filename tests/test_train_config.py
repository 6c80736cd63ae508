"""TrainConfig refuses, when it is made, the values no run can use: one line naming the flag."""

from __future__ import annotations

import sys

import pytest

from minibert.train_config import EPOCH, TrainConfig


@pytest.mark.parametrize("kw, message", [
    (dict(batch_size=0), "--batch-size 0: must be at least 1"),
    (dict(grad_accum=0), "--grad-accum 0: must be at least 1"),
    (dict(log_every=0), "--log-every 0: must be at least 1"),
    (dict(keep_checkpoints=0), "--keep-checkpoints 0: must be at least 1"),
    (dict(eval_every=-1), "--eval-every -1: must be at least 0"),
    (dict(eval_every="weekly"), "--eval-every weekly: give a number of steps or 'epoch'"),
    (dict(save_every=-2), "--save-every -2: must be at least 0"),
    (dict(patience=-1), "--patience -1: must be at least 0"),
    (dict(patience=2), "--patience 2 needs evaluations during training: add --eval-every N or --eval-every epoch"),
    (dict(epochs=0), "--epochs 0: must be at least 1 (or give --max-steps)"),
    (dict(max_steps=-1), "--max-steps -1: must be at least 1"),
    (dict(schedule="step"), "--schedule step: use one of linear, cosine, constant"),
    (dict(precision="fp8"), "--precision fp8: use one of auto, fp32, bf16, fp16"),
    (dict(report_to="wandb"), "--report-to wandb: use one of none, tensorboard"),
])
def test_values_no_run_can_use_are_one_line_naming_the_flag(kw, message):
    with pytest.raises(ValueError) as e:
        TrainConfig(**kw)
    assert str(e.value) == message


@pytest.mark.parametrize("kw", [
    dict(),  # the defaults train.py shows in --help
    dict(epochs=0, max_steps=5),  # --max-steps overrides --epochs
    dict(max_steps=0),  # 0: not set, --epochs decides
    dict(eval_every=EPOCH, patience=1),
    dict(eval_every=3, patience=2, save_every=0, report_to="tensorboard"),
])
def test_settings_a_run_can_use_pass(kw):
    TrainConfig(**kw)


def test_report_to_tensorboard_without_tensorboard_is_refused_before_any_work(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what an uninstalled package looks like to find_spec
    with pytest.raises(ValueError) as e:
        TrainConfig(report_to="tensorboard")
    assert str(e.value) == "--report-to tensorboard: tensorboard is not installed; pip install 'minibert[tensorboard]'"
    TrainConfig()  # the other runs never look for it
