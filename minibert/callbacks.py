"""What a run writes besides its checkpoints and final model, as callbacks of the training loop.

A callback overrides the hooks it needs; the trainer calls each hook on the main process only, on
every callback in order, with itself as the first argument:

    on_train_begin(trainer)                    the run goes ahead (a resume was accepted), before step 1
    on_log(trainer, record)                    every --log-every steps, the last and a stopping step:
                                               {"step", "tokens", "loss", "lr", "tokens_per_s"}
    on_evaluate(trainer, metrics, improved)    after each evaluation; improved: --metric beat the best so
                                               far, which makes it the new best/
    on_save(trainer, path)                     checkpoint-N was written
    on_train_end(trainer, summary)             the run's summary; None when an error or a signal ended it

The built-in ones, in the order the trainer calls them (`default_callbacks`): best/, metrics.jsonl,
curves.png (--plot), TensorBoard events (--report-to tensorboard). best/ comes first, so that an
evaluation whose model could not be saved is not recorded as if it had been; curves.png after
metrics.jsonl, which it draws once the summary is in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .metrics import summary_numbers
from .run_folder import CURVES
from .train_config import TrainConfig

if TYPE_CHECKING:
    from .trainer import Trainer

class Callback:
    """The hooks of the module docstring, each doing nothing."""

    def on_train_begin(self, trainer: Trainer) -> None:
        pass

    def on_log(self, trainer: Trainer, record: dict) -> None:
        pass

    def on_evaluate(self, trainer: Trainer, metrics: dict, improved: bool) -> None:
        pass

    def on_save(self, trainer: Trainer, path: Path) -> None:
        pass

    def on_train_end(self, trainer: Trainer, summary: dict | None) -> None:
        pass


class SaveBest(Callback):
    """best/: the model of the best evaluation so far, replaced atomically whenever --metric improves."""

    def on_evaluate(self, trainer: Trainer, metrics: dict, improved: bool) -> None:
        if improved:
            trainer.saver.model_to(trainer.run.best)


class MetricsFile(Callback):
    """metrics.jsonl: a line per log record, one per evaluation ({"eval": every number, a classifier's
    per-class report and confusion matrix too}) and the summary at the end. Appended to, so that a resumed
    run goes on in the same file; flushed at each line, so that it can be watched while the run goes on."""

    def __init__(self):
        self.file = None

    def on_train_begin(self, trainer: Trainer) -> None:
        self.file = trainer.run.metrics.open("a", encoding="utf-8")

    def on_log(self, trainer: Trainer, record: dict) -> None:
        self._write(record)

    def on_evaluate(self, trainer: Trainer, metrics: dict, improved: bool) -> None:
        self._write({"eval": metrics})

    def on_train_end(self, trainer: Trainer, summary: dict | None) -> None:
        if self.file is None:  # a callback before this one failed to begin
            return
        if summary is not None:
            self._write({"summary": summary})
        self.file.close()
        self.file = None

    def _write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()


class Curves(Callback):
    """curves.png at the end of a run, drawn from metrics.jsonl (plots.py). The model is saved by then: a
    missing matplotlib or a picture that fails is one line in the log, never a failed run."""

    def on_train_end(self, trainer: Trainer, summary: dict | None) -> None:
        if summary is None:
            return
        from .plots import PlotUnavailable, plot_run

        try:
            path = plot_run(trainer.run.path)
        except PlotUnavailable as e:
            trainer.log(f"{CURVES} skipped: {e}")
        except (OSError, ValueError) as e:
            trainer.log(f"{CURVES} not written: {e}")
        else:
            trainer.log(f"wrote {path}")


class TensorBoard(Callback):
    """--report-to tensorboard: the numbers of metrics.jsonl as TensorBoard scalars in OUTPUT/tensorboard,
    against the step: train/loss, train/lr and train/tokens_per_s at each log record, eval/NAME for each
    number of an evaluation's summary (eval/eval_loss, eval/accuracy, ...). A resumed run adds an event
    file next to the earlier ones. TrainConfig has checked that tensorboard is installed."""

    TRAIN = ("loss", "lr", "tokens_per_s")

    def __init__(self):
        self.writer = None

    def on_train_begin(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only for the runs that ask

        self.writer = SummaryWriter(log_dir=str(trainer.run.tensorboard))

    def on_log(self, trainer: Trainer, record: dict) -> None:
        for name in self.TRAIN:
            self.writer.add_scalar(f"train/{name}", record[name], record["step"])

    def on_evaluate(self, trainer: Trainer, metrics: dict, improved: bool) -> None:
        for name, value in summary_numbers(metrics).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"eval/{name}", value, metrics["step"])

    def on_save(self, trainer: Trainer, path: Path) -> None:
        self.writer.flush()  # on disk what the checkpoint a resume would continue from has seen

    def on_train_end(self, trainer: Trainer, summary: dict | None) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def default_callbacks(cfg: TrainConfig) -> list[Callback]:
    """The callbacks `cfg` asks for, in the order of the module docstring."""
    return [SaveBest(), MetricsFile(), *([Curves()] if cfg.plot else []),
            *([TensorBoard()] if cfg.report_to == "tensorboard" else [])]
