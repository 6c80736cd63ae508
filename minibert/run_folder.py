"""The layout of a training run's --output folder, in one place: every name the trainer, the CLI and the
plots read or write there, which folders are checkpoints, and what --overwrite removes.

    OUTPUT/
      config.json, model.safetensors, vocab.txt, ...   the final model (save_pretrained)
      checkpoint-N/          the model at step N, and trainer_state.pt to resume from it
      best/                  the model of the best evaluation (--metric)
      metrics.jsonl          a line per --log-every steps, one per evaluation, a summary at the end
      curves.png             metrics.jsonl drawn at the end (plots.py)
      tensorboard/           --report-to tensorboard: the same numbers as TensorBoard events
      train_args.json        every setting of the run, resolved
      README.md              the model card
      .minibert.lock         held while a run writes the folder (lock.py)
      .tmp-NAME/, .old-NAME/ folders being written or replaced: gone when a save completes

Imports no torch.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .lock import LOCK_NAME, OutputLock

CHECKPOINT_PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-"  # folders being written: .tmp-checkpoint-N, .tmp-best, .tmp-final
OLD_PREFIX = ".old-"  # the previous best/ while the new one is moved in
STATE_FILE = "trainer_state.pt"  # in checkpoint-N: optimizer, schedule, RNG, data position
BEST = "best"
METRICS = "metrics.jsonl"
CURVES = "curves.png"
TENSORBOARD = "tensorboard"
TRAIN_ARGS = "train_args.json"
MODEL_CARD = "README.md"
MODEL_CONFIG = "config.json"  # its presence says the folder holds a finished model

__all__ = ["BEST", "CHECKPOINT_PREFIX", "CURVES", "LOCK_NAME", "METRICS", "MODEL_CARD", "MODEL_CONFIG", "OLD_PREFIX",
           "STATE_FILE", "TENSORBOARD", "TMP_PREFIX", "TRAIN_ARGS", "RunFolder", "is_checkpoint", "list_checkpoints"]


def is_checkpoint(path: str | Path) -> bool:
    """A complete checkpoint folder: its trainer state is written last, so its presence means complete."""
    return (Path(path) / STATE_FILE).is_file()


def list_checkpoints(output: str | Path) -> list[Path]:
    """Complete checkpoint folders in `output`, oldest first."""
    found = []
    for p in Path(output).glob(CHECKPOINT_PREFIX + "*"):
        step = p.name[len(CHECKPOINT_PREFIX):]
        if p.is_dir() and step.isdigit() and is_checkpoint(p):
            found.append((int(step), p))
    return [p for _, p in sorted(found)]


class RunFolder:
    """The --output folder of a run: its paths by role, its checkpoints, its lock."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def curves(self) -> Path:
        return self.path / CURVES

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def train_args(self) -> Path:
        return self.path / TRAIN_ARGS

    @property
    def model_card(self) -> Path:
        return self.path / MODEL_CARD

    def checkpoint(self, step: int) -> Path:
        return self.path / f"{CHECKPOINT_PREFIX}{step}"

    def tmp(self, name: str) -> Path:
        """Where `name` (checkpoint-N, best, final) is written before it is moved into place."""
        return self.path / f"{TMP_PREFIX}{name}"

    def old(self, name: str) -> Path:
        """Where the folder `name` waits while its replacement is moved in."""
        return self.path / f"{OLD_PREFIX}{name}"

    def lock(self) -> OutputLock:
        """The folder's lock (lock.py), re-entrant: the CLI holds it from before it touches the folder, the
        trainer again around the loop."""
        return OutputLock(self.path)

    def checkpoints(self) -> list[Path]:
        return list_checkpoints(self.path) if self.path.is_dir() else []

    def prune_checkpoints(self, keep: int) -> None:
        """Remove all but the newest `keep` checkpoints."""
        for old in self.checkpoints()[:-keep or None]:
            shutil.rmtree(old, ignore_errors=True)

    def clean_partial(self) -> list[Path]:
        """Remove the folders an interrupted save left behind (.tmp-*), and put back a best/ that was being
        replaced when the run stopped. Returns the folders removed."""
        old_best = self.old(BEST)
        if old_best.is_dir():
            if self.best.is_dir():
                shutil.rmtree(old_best, ignore_errors=True)
            else:
                os.replace(old_best, self.best)
        removed = [p for p in self.path.glob(TMP_PREFIX + "*") if p.is_dir()]
        for p in removed:
            shutil.rmtree(p, ignore_errors=True)
        return removed

    def has_checkpoints(self) -> bool:
        """Any checkpoint folder, complete or not: a run was under way here."""
        return any(self.path.glob(CHECKPOINT_PREFIX + "*"))

    def holds_model(self) -> bool:
        """A finished model or a run's checkpoints: what --overwrite must be asked for before replacing."""
        return (self.path / MODEL_CONFIG).is_file() or self.has_checkpoints()

    def clear(self) -> None:
        """--overwrite: remove what an earlier run left that a new one would not replace file by file (its
        checkpoints, best/, records, partial saves), so nothing of it mixes into the new run's. The final
        model, train_args.json and README.md are replaced when the new run writes them."""
        stale = [*self.path.glob(CHECKPOINT_PREFIX + "*"), *self.path.glob(TMP_PREFIX + "*"),
                 *self.path.glob(OLD_PREFIX + "*"), self.best, self.tensorboard]
        for p in stale:
            shutil.rmtree(p, ignore_errors=True)
        for f in (self.metrics, self.curves):
            f.unlink(missing_ok=True)
