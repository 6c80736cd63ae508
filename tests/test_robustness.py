"""What happens to a run when things go wrong: signals during a save, a second run on the same folder,
a full disk, damaged checkpoints, a resume with other data. Nothing complete is ever lost."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_ARGS, TRAIN, call, tiny_config, write_jsonl

from minibert import BertForMaskedLM, MaskedLM, MaskingCollator
from minibert.lock import LOCK_NAME, LockError, OutputLock
from minibert.trainer import (
    STATE_FILE,
    BrokenCheckpoint,
    Interrupted,
    TrainConfig,
    Trainer,
    TrainingError,
    list_checkpoints,
)


def make_trainer(tok, features, out: Path, logs: list | None = None, **kw) -> Trainer:
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_config(tok.vocab_size, dropout=0.0))
    args = dict(output=str(out), batch_size=4, lr=1e-3, warmup=0, precision="fp32", device="cpu",
                progress=False, log_every=1, seed=0)
    args.update(kw)
    log = logs.append if logs is not None else (lambda *_: None)
    return Trainer(model, TrainConfig(**args), MaskedLM(), features, MaskingCollator(tok, seed=0), tokenizer=tok,
                   log=log)


def no_partial_folders(out: Path) -> bool:
    return not [p.name for p in out.iterdir() if p.name.startswith((".tmp-", ".old-"))]


# ----------------------------------------------------------------------------- signals


def test_signals_during_a_checkpoint_save_wait_for_it(tok, features, tmp_path, monkeypatch):
    """Two SIGTERMs while checkpoint-2 is being written: the save completes, no second save is made,
    and the run stops with Interrupted (exit status 143)."""
    trainer = make_trainer(tok, features, tmp_path, max_steps=1000, save_every=2)
    writes = []
    real = type(trainer.model).save_pretrained

    def slow_save(model, folder, **kw):
        writes.append(Path(folder).name)
        if len(writes) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(model, folder, **kw)

    monkeypatch.setattr(type(trainer.model), "save_pretrained", slow_save)
    with pytest.raises(Interrupted) as e:
        trainer.train()
    assert e.value.exit_status == 143 and e.value.signum == signal.SIGTERM
    assert str(e.value) == f"SIGTERM: stopped at step 2; checkpoint saved to {tmp_path / 'checkpoint-2'}; continue " \
                           "with --resume"
    assert writes == [".tmp-checkpoint-2"]  # written once, completely
    assert list_checkpoints(tmp_path) == [tmp_path / "checkpoint-2"] and no_partial_folders(tmp_path)
    again = make_trainer(tok, features, tmp_path, max_steps=3)
    assert again.resume(True) == tmp_path / "checkpoint-2" and again.step_count == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back


def test_a_signal_between_steps_saves_the_current_step(tok, features, tmp_path, monkeypatch):
    trainer = make_trainer(tok, features, tmp_path, max_steps=1000)
    real_step = trainer.step

    def step(micro):
        loss = real_step(micro)
        if trainer.step_count == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    monkeypatch.setattr(trainer, "step", step)
    with pytest.raises(Interrupted) as e:
        trainer.train()
    assert e.value.exit_status == 130 and "stopped at step 3" in str(e.value)
    assert list_checkpoints(tmp_path) == [tmp_path / "checkpoint-3"]
    assert not (tmp_path / LOCK_NAME).exists()


# ----------------------------------------------------------------------------- the output lock


@pytest.mark.slow  # starts an interpreter
def test_lock_refuses_a_live_owner_and_takes_over_a_dead_ones(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": live.pid, "host": socket.gethostname(),
                                                      "started": "2026-12-02 10:00:00"}))
        with pytest.raises(LockError) as e, OutputLock(tmp_path):
            pass
        assert str(e.value) == (f"{tmp_path}: another run (process {live.pid}, started 2026-12-02 10:00:00) is "
                                "writing this folder; wait for it to finish, stop it, or choose another --output")
    finally:
        live.kill()
        live.wait()
    # The same process is now dead (SIGKILL: it never removed its lock): taken over, with a warning.
    with pytest.warns(UserWarning, match=f"taking over the lock left by process {live.pid}, which is no longer"):
        with OutputLock(tmp_path):
            assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
            with OutputLock(tmp_path):  # re-entrant within the process
                pass
            assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_from_another_host_or_unreadable(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(LockError, match=f"in use by process 1 on host elsewhere; if that run is gone, delete "
                                        f"{tmp_path / LOCK_NAME}"), OutputLock(tmp_path):
        pass
    (tmp_path / LOCK_NAME).write_text('{"pid": 12')  # a lock whose writer died mid-write
    with pytest.warns(UserWarning, match="unreadable lock file"), OutputLock(tmp_path):
        pass


# ----------------------------------------------------------------------------- write errors


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tok, features, tmp_path, monkeypatch):
    import minibert.trainer as trainer_module

    trainer = make_trainer(tok, features, tmp_path, max_steps=6, save_every=2)
    real_save = torch.save

    def save(obj, f, *a, **kw):
        if trainer.step_count == 4:
            _disk_full()
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(trainer_module.torch, "save", save)
    with pytest.raises(TrainingError) as e:
        trainer.train()
    message = str(e.value)
    assert message.startswith(f"{tmp_path}: could not write checkpoint-4 (No space left on device); it needs "
                              f"about ") and "\n" not in message
    assert " MB, " in message and message.endswith(" free; checkpoint-2 is intact and --resume continues from it")
    assert list_checkpoints(tmp_path) == [tmp_path / "checkpoint-2"] and no_partial_folders(tmp_path)
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / LOCK_NAME).exists()
    monkeypatch.undo()
    again = make_trainer(tok, features, tmp_path, max_steps=6, save_every=2)
    again.train(resume=True)
    assert again.step_count == 6 and (tmp_path / "model.safetensors").is_file()


def test_disk_full_during_the_final_save_keeps_the_earlier_model(tok, features, tmp_path, monkeypatch):
    import minibert.checkpoint as checkpoint_module

    make_trainer(tok, features, tmp_path, max_steps=2).train()
    before = (tmp_path / "model.safetensors").read_bytes()
    trainer = make_trainer(tok, features, tmp_path, max_steps=3, lr=1e-2)
    monkeypatch.setattr(checkpoint_module, "save_file", _disk_full)
    with pytest.raises(TrainingError, match=rf"^{tmp_path}: could not write the final model \(No space left on "
                                            r"device\); it needs about [0-9.]+ MB, .* free$"):
        trainer.train()
    assert (tmp_path / "model.safetensors").read_bytes() == before and no_partial_folders(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))
    BertForMaskedLM.from_pretrained(tmp_path)  # still loadable


def test_best_folder_is_replaced_atomically(tok, features, tmp_path, monkeypatch):
    import minibert.checkpoint as checkpoint_module

    evaluated = make_trainer(tok, features, tmp_path, max_steps=2, eval_every=1)
    evaluated.eval_data = features
    evaluated.train()
    before = (tmp_path / "best" / "model.safetensors").read_bytes()
    again = make_trainer(tok, features, tmp_path, max_steps=2, eval_every=1)
    again.eval_data = features  # its first evaluation is its best so far: best/ is replaced
    monkeypatch.setattr(checkpoint_module, "save_file", _disk_full)
    with pytest.raises(TrainingError, match="could not write best/"):
        again.train()
    assert (tmp_path / "best" / "model.safetensors").read_bytes() == before and no_partial_folders(tmp_path)


# ----------------------------------------------------------------------------- damaged checkpoints


@pytest.mark.parametrize("damage", ["truncated state", "garbage weights", "missing weights"])
def test_a_broken_latest_checkpoint_falls_back_to_the_previous(tok, features, tmp_path, damage):
    make_trainer(tok, features, tmp_path, max_steps=4, save_every=2).train()
    latest = tmp_path / "checkpoint-4"
    if damage == "truncated state":
        broken = latest / STATE_FILE
        broken.write_bytes(broken.read_bytes()[:1000])
    elif damage == "garbage weights":
        broken = latest / "model.safetensors"
        broken.write_bytes(b"\x00" * 100)
    else:
        (latest / "model.safetensors").unlink()
        broken = latest  # "checkpoint-4: no weights found; expected model.safetensors, ..."
    logs: list[str] = []
    again = make_trainer(tok, features, tmp_path, logs, max_steps=5)
    assert again.resume(True) == tmp_path / "checkpoint-2" and again.step_count == 2
    warning = [line for line in logs if line.startswith("warning:")]
    assert len(warning) == 1 and str(broken) in warning[0] and warning[0].endswith("resuming from checkpoint-2 "
                                                                                   "instead"), logs
    # Named explicitly, a broken checkpoint is an error, not a fallback.
    with pytest.raises(BrokenCheckpoint, match=str(latest)):
        make_trainer(tok, features, tmp_path, max_steps=5).resume(str(latest))


def test_no_intact_checkpoint_is_a_one_line_error(tok, features, tmp_path):
    make_trainer(tok, features, tmp_path, max_steps=2, save_every=2).train()
    state = tmp_path / "checkpoint-2" / STATE_FILE
    state.write_bytes(os.urandom(0) + b"PK\x03\x04" + bytes(range(256)) * 4)
    with pytest.raises(BrokenCheckpoint) as e:
        make_trainer(tok, features, tmp_path, max_steps=3).resume(True)
    assert str(e.value) == (f"{state}: unreadable, the file is truncated or corrupted; no earlier checkpoint in "
                            f"{tmp_path} to fall back to: train again without --resume (with --overwrite)")


# ----------------------------------------------------------------------------- resuming another run


def test_resume_with_a_changed_training_file(tmp_path):
    lines = ["三国人物诸葛亮", "刘备关羽张飞", "曹操孙权周瑜", "诸葛亮草船借箭"]
    write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in lines])
    args = [*TINY_ARGS, "--train", "corpus.jsonl", "--output", "run", "--save-every", "1", "--batch-size", "2"]
    assert call(TRAIN, *args, "--max-steps", "2", cwd=tmp_path).returncode == 0
    # Same number of lines and tokens, other text: only the file's hash tells.
    write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in ["三国人物诸葛涛", *lines[1:]]])
    settings = (tmp_path / "run" / "train_args.json").read_bytes()
    refused = call(TRAIN, *args, "--max-steps", "3", "--resume", cwd=tmp_path)
    assert refused.returncode == 2
    assert (tmp_path / "run" / "train_args.json").read_bytes() == settings  # a refused run writes nothing
    error = refused.stderr.strip().splitlines()
    assert len(error) == 1 and "this run differs from the one that wrote the checkpoint (train_sha256 " in error[0]
    assert error[0].endswith("or pass --accept-changed-run"), error
    accepted = call(TRAIN, *args, "--max-steps", "3", "--resume", "--accept-changed-run", cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    assert "warning: --resume" in accepted.stdout + accepted.stderr
    assert "after 3 steps" in accepted.stdout
