"""A run's state on disk: checkpoints written atomically and read back checked, the model folders (the
final model, best/) replaced atomically, the check that a resumed run is the same run, and the RNG state.

What a checkpoint holds is the trainer's business (`Trainer.state_dict`); this module writes it next to
the weights, reads both back complete or not at all, and picks the checkpoint to resume from. Every
folder is written under a temporary name and renamed into place, so a full disk or a signal never
leaves a half-written checkpoint or model where a complete one was (run_folder.py names them).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointError, convert_from_hf, pickled_global, read_weights
from .run_folder import STATE_FILE, RunFolder, is_checkpoint
from .signals import Signals

if TYPE_CHECKING:
    from .trainer import Trainer

# What a state file must hold to resume from; older checkpoints may lack the others ("tokens_seen", ...).
STATE_KEYS = ("step", "position", "optimizer", "schedule", "scaler", "rng", "collate", "best")


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what to change."""


class BrokenCheckpoint(TrainingError):
    """A checkpoint folder whose files are truncated, corrupted or incomplete."""


# ----------------------------------------------------------------------------- RNG


def capture_rng() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": [x.tolist() if isinstance(x, np.ndarray) else x for x in np.random.get_state()],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- the same run


def file_signature(path: str | Path) -> dict:
    """Name, size and SHA-256 of a data file: what a resumed run checks it is training on again."""
    path = Path(path)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"train_file": path.name, "train_bytes": path.stat().st_size, "train_sha256": digest.hexdigest()}


def _short(value) -> str:
    """A signature value for an error line: hashes cut to 12 characters."""
    return value[:12] if isinstance(value, str) and len(value) == 64 else str(value)


def check_same_run(path: Path, saved: dict | None, now: dict, accept_changed: bool,
                   log: Callable[[str], None]) -> None:
    """Refuse to resume from `path` when the run signature it saved differs from this run's (`now`): the
    data position means nothing with other batches or other blocks of text. --accept-changed-run makes
    it a warning."""
    if saved is None:  # a checkpoint written before signatures were recorded
        return
    diff = [f"{k} {_short(saved[k])} -> {_short(now[k])}" for k in now if k in saved and saved[k] != now[k]]
    if not diff:
        return
    if accept_changed:
        log(f"warning: --resume {path}: continuing a different run ({', '.join(diff)}), as --accept-changed-run "
            f"asks")
        return
    raise TrainingError(
        f"--resume {path}: this run differs from the one that wrote the checkpoint ({', '.join(diff)}); "
        f"to start a new phase from its weights use --model {path} with a new --output, or pass "
        f"--accept-changed-run")


# ----------------------------------------------------------------------------- writing


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


class Saver:
    """Writes `model` (and `tokenizer`) into the run folder: checkpoints keeping the newest `keep`, best/,
    and the final model. Each save runs inside signals.critical(): a signal waits for it to finish."""

    def __init__(self, run: RunFolder, model: nn.Module, tokenizer, signals: Signals, keep: int):
        self.run, self.model, self.tokenizer, self.signals, self.keep = run, model, tokenizer, signals, keep

    def checkpoint(self, step: int, state: dict) -> Path:
        """Write checkpoint-STEP (the weights and `state`) atomically: into a temporary folder, then renamed.
        A write error (a full disk) removes the partial folder and leaves every earlier checkpoint as it was."""
        final, tmp = self.run.checkpoint(step), self.run.tmp(self.run.checkpoint(step).name)
        with self.signals.critical():
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                self.model.save_pretrained(tmp, tokenizer=self.tokenizer)
                torch.save(state, tmp / STATE_FILE)  # last: its presence marks the folder complete
            except OSError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                # weights in the file's dtype, plus AdamW's two fp32 moments per parameter
                raise self._write_error(final.name, e, 3 * self._model_bytes()) from None
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            self.run.prune_checkpoints(self.keep)
        return final

    def model_to(self, dest: Path) -> None:
        """save_pretrained into `dest` (the output folder or best/) so that a failed write leaves the model
        that was there intact: written into a temporary folder first, then moved in."""
        final = dest == self.run.path
        what = "the final model" if final else f"{dest.name}/"
        tmp = self.run.tmp("final" if final else dest.name)
        with self.signals.critical():
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                self.model.save_pretrained(tmp, tokenizer=self.tokenizer)
            except OSError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                raise self._write_error(what, e, self._model_bytes()) from None
            if final:  # the folder holds more (checkpoints, metrics): move file by file
                for f in tmp.iterdir():
                    os.replace(f, dest / f.name)
                tmp.rmdir()
            else:
                old = self.run.old(dest.name)
                if dest.exists():
                    os.replace(dest, old)
                os.replace(tmp, dest)
                shutil.rmtree(old, ignore_errors=True)

    def _write_error(self, what: str, error: OSError, needed: int) -> TrainingError:
        """A one-line error for a failed write: the folder, the reason, the space it needs, what is safe."""
        try:
            free = f", {_size(shutil.disk_usage(self.run.path).free)} free"
        except OSError:
            free = ""
        found = self.run.checkpoints()
        safe = f"; {found[-1].name} is intact and --resume continues from it" if found else ""
        return TrainingError(f"{self.run.path}: could not write {what} ({error.strerror or error}); it needs about "
                             f"{_size(needed)}{free}{safe}")

    def _model_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.model.state_dict().values())


# ----------------------------------------------------------------------------- the trainer's state


def trainer_state(trainer: Trainer) -> dict:
    """What checkpoint-N holds besides the weights: everything to continue the run exactly (optimizer,
    schedule, loss scale, RNG, data position, masking stream, best evaluation so far), and what the run
    was (its settings, and its signature for check_same_run)."""
    return {
        "step": trainer.step_count,
        "tokens_seen": trainer.tokens_seen,
        "position": list(trainer.position),
        "optimizer": trainer.optimizer.state_dict(),
        "schedule": trainer.schedule.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "rng": capture_rng(),
        "collate": trainer.collate.state_dict() if hasattr(trainer.collate, "state_dict") else None,
        "best": trainer.best,
        "evals_since_best": trainer.evals_since_best,
        "config": asdict(trainer.cfg),
        "data": trainer.run_signature,
    }


def load_checkpoint(trainer: Trainer, path: Path) -> None:
    """Continue `trainer` from checkpoint `path`, read whole and checked to be the same run before anything
    is set."""
    state, weights = read_checkpoint(path, trainer.model)
    check_same_run(path, state.get("data"), trainer.run_signature, trainer.cfg.accept_changed_run, trainer.log)
    trainer.model.load_state_dict(weights)
    if trainer.bf16_copy is not None:
        trainer.bf16_copy.refresh()
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.schedule.load_state_dict(state["schedule"])
    trainer.scaler.load_state_dict(state["scaler"])
    restore_rng(state["rng"])
    if state["collate"] is not None and hasattr(trainer.collate, "load_state_dict"):
        trainer.collate.load_state_dict(state["collate"])
    trainer.step_count = state["step"]
    trainer.tokens_seen = state.get("tokens_seen", 0)
    trainer.position = tuple(state["position"])
    trainer.best = state["best"]
    trainer.evals_since_best = state.get("evals_since_best", 0)


# ----------------------------------------------------------------------------- reading and resuming


def read_checkpoint(path: Path, model: nn.Module) -> tuple[dict, dict[str, torch.Tensor]]:
    """(trainer state, weights for `model`) of a checkpoint folder, checked complete before anything is applied.

    A state file that carries objects other than tensors and plain data is refused (TrainingError: the
    code in it never runs); a truncated or corrupted one raises BrokenCheckpoint."""
    file = path / STATE_FILE
    try:
        # weights_only: tensors and plain containers only; a state file carrying code is refused.
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        code = pickled_global(e)
        if code:
            raise TrainingError(f"{file}: refused, it would call {code} (pickled code, never run); resume "
                                f"only from checkpoints this trainer wrote") from None
        raise BrokenCheckpoint(f"{file}: unreadable, the file is truncated or corrupted") from None
    except FileNotFoundError:
        raise BrokenCheckpoint(f"{file}: missing, the checkpoint is incomplete") from None
    except Exception:  # torch.load on damaged bytes raises RuntimeError, EOFError, IndexError, ...
        raise BrokenCheckpoint(f"{file}: unreadable, the file is truncated or corrupted") from None
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise BrokenCheckpoint(f"{file}: incomplete, no {missing[0]!r} entry")
    try:
        weights, _ = convert_from_hf(read_weights(path), model, source=str(path))
    except CheckpointError as e:
        raise BrokenCheckpoint(str(e)) from None
    return state, weights


def find_resume(run: RunFolder, resume: str | bool, log: Callable[[str], None], clean: bool = True) -> Path | None:
    """`True`: the latest complete checkpoint in the run folder (None if there is none); a path: that
    checkpoint. With `clean` (the main process), the temporary folders of an interrupted save are removed."""
    if clean and run.path.is_dir():
        for p in run.clean_partial():
            log(f"removed incomplete checkpoint {p}")
    if resume is True:
        found = run.checkpoints()
        return found[-1] if found else None
    path = Path(resume)
    if not is_checkpoint(path):
        raise TrainingError(f"--resume {path}: not a complete checkpoint (no {STATE_FILE})")
    return path


def resume_from(run: RunFolder, resume: str | bool, load: Callable[[Path], None], log: Callable[[str], None],
                clean: bool = True) -> Path | None:
    """Call `load` on the checkpoint `resume` names (see find_resume) and return it. With `True`, a broken
    latest checkpoint is skipped with a warning for the one before it; a named one that is broken is an
    error."""
    path = find_resume(run, resume, log, clean)
    if resume is not True:  # a named checkpoint: find_resume checked it is there
        load(path)
        return path
    candidates = run.checkpoints()[::-1]  # newest first; none: start from step 0
    for i, path in enumerate(candidates):
        try:
            load(path)
            return path
        except BrokenCheckpoint as e:
            if i + 1 < len(candidates):
                log(f"warning: {e}; resuming from {candidates[i + 1].name} instead")
            else:
                raise BrokenCheckpoint(f"{e}; no earlier checkpoint in {run.path} to fall back to: train "
                                       f"again without --resume (with --overwrite)") from None
    return None
