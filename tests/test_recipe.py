"""The pre-training recipe's flags (dropout, masking split, AdamW betas/eps) reach the run, and
--resume refuses to continue a run whose batches or blocks differ (a new phase is a new --model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import CORPUS
from conftest import TINY_ARGS as TINY
from torch import nn

from minibert import cli
from minibert.model import SelfAttention


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(CORPUS * 8) + "\n", encoding="utf-8")
    return path


class Captured(Exception):
    pass


@pytest.fixture
def capture(monkeypatch):
    """Replace the Trainer so train_main stops right after assembling the run, keeping its parts."""
    seen = {}

    class FakeTrainer:
        def __init__(self, model, cfg, task, train_data, collate, eval_data=None, eval_collate=None, tokenizer=None,
                     **kwargs):
            seen.update(model=model, cfg=cfg, task=task, collate=collate, eval_collate=eval_collate)
            raise Captured

    monkeypatch.setattr("minibert.trainer.Trainer", FakeTrainer)
    return seen


def dropouts(model: nn.Module) -> set[float]:
    assert all(isinstance(m.attn_drop, nn.Dropout) for m in model.modules() if isinstance(m, SelfAttention))
    return {m.p for m in model.modules() if isinstance(m, nn.Dropout)}  # attention dropout included


def test_recipe_flags_reach_model_collator_and_optimizer(corpus, tmp_path, capture):
    with pytest.raises(Captured):
        cli.train_command([*TINY, "--train", str(corpus), "--output", str(tmp_path / "out"), "--group-texts",
                           "--max-length", "16", "--dropout", "0", "--mask-prob", "1", "--random-prob", "0",
                           "--adam-betas", "0.9,0.98", "--adam-eps", "1e-8"])
    assert dropouts(capture["model"]) == {0.0}
    assert capture["model"].config.hidden_dropout_prob == 0.1  # saved for fine-tuning
    assert capture["model"].config.attention_probs_dropout_prob == 0.1
    assert (capture["collate"].mask_prob, capture["collate"].random_prob) == (1.0, 0.0)
    assert (capture["eval_collate"].mask_prob, capture["eval_collate"].random_prob) == (0.8, 0.1)
    assert capture["cfg"].adam_betas == (0.9, 0.98) and capture["cfg"].adam_eps == 1e-8
    assert capture["cfg"].max_length == 16


def test_dropout_in_config(corpus, tmp_path, capture):
    with pytest.raises(Captured):
        cli.train_command([*TINY, "--train", str(corpus), "--output", str(tmp_path / "out"), "--dropout", "0.05",
                           "--dropout-in-config"])
    assert dropouts(capture["model"]) == {0.05}
    assert capture["model"].config.hidden_dropout_prob == capture["model"].config.attention_probs_dropout_prob == 0.05


def test_without_dropout_flag_the_config_value_is_used(corpus, tmp_path, capture):
    with pytest.raises(Captured):
        cli.train_command([*TINY, "--train", str(corpus), "--output", str(tmp_path / "out")])
    assert dropouts(capture["model"]) == {0.1}


def test_no_dropout_run_saves_config_with_dropout_and_no_dropout_noise(corpus, tmp_path):
    out = tmp_path / "out"
    assert cli.train_main([*TINY, "--train", str(corpus), "--output", str(out), "--dropout", "0",
                           "--max-steps", "2", "--warmup", "0"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["hidden_dropout_prob"] == cfg["attention_probs_dropout_prob"] == 0.1


def test_dropout_zero_makes_training_forward_deterministic(corpus):
    """set_dropout really switches dropout off in train mode (and 0.1 really is noisy)."""
    from minibert import BertConfig, BertForMaskedLM
    from minibert.config import PRESETS
    from minibert.model import set_dropout

    model = BertForMaskedLM(BertConfig(**PRESETS["tiny"], vocab_size=100)).train()
    ids = torch.randint(5, 100, (2, 12))
    assert not torch.equal(model(ids).logits, model(ids).logits)
    set_dropout(model, 0.0)
    torch.testing.assert_close(model(ids).logits, model(ids).logits, atol=0, rtol=0)


@pytest.mark.parametrize("flags,expected", [
    (["--mask-prob", "0.9", "--random-prob", "0.2"], "--mask-prob + --random-prob"),
    (["--mask-prob", "1.5"], "--mask-prob"),
    (["--dropout", "1"], "--dropout 1.0"),
    (["--dropout-in-config"], "--dropout-in-config needs --dropout"),
])
def test_bad_recipe_flags_are_one_line_errors(corpus, tmp_path, capsys, flags, expected):
    assert cli.train_main([*TINY, "--train", str(corpus), "--output", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


@pytest.mark.parametrize("value", ["0.9", "0.9,1.5", "a,b"])
def test_bad_adam_betas(corpus, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as e:
        cli.train_main([*TINY, "--train", str(corpus), "--output", str(tmp_path / "out"), "--adam-betas", value])
    assert e.value.code == 2
    assert "--adam-betas" in capsys.readouterr().err


def test_resume_with_another_max_length_is_refused(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    common = [*TINY, "--train", str(corpus), "--output", str(out), "--group-texts", "--warmup", "0"]
    assert cli.train_main([*common, "--max-length", "16", "--max-steps", "4", "--save-every", "2"]) == 0
    capsys.readouterr()
    assert cli.train_main([*common, "--max-length", "32", "--max-steps", "6", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "max_length 16 -> 32" in err[0] and f"--model {out / 'checkpoint-4'}" in err[0], err
    # the same flags do resume
    assert cli.train_main([*common, "--max-length", "16", "--max-steps", "6", "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
