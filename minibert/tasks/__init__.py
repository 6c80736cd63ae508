"""The jobs minibert trains for, one module each, and the registry that the trainer and the command
lines look tasks up in. base.py says what a task answers for; adding a task means writing a module
and adding its class to TASKS."""

from __future__ import annotations

from ..config import BertConfig
from .base import FEW_TEXTS, Metric, PredictOptions, Predictor, Task, TaskData, TaskWords, split
from .classify import SequenceClassification
from .mlm import MaskedLM
from .tag import TokenClassification

TASKS: dict[str, type[Task]] = {task.name: task for task in (MaskedLM, SequenceClassification, TokenClassification)}
DEFAULT_TASK = MaskedLM.name  # train.py's default job fine-tunes the shipped fill-mask model


def saved_task(config: BertConfig) -> type[Task]:
    """The task a saved model was trained for, by the class in its config.json (masked LM when none is
    named: a bare encoder checkpoint fine-tunes as a fill-mask model)."""
    for task in TASKS.values():
        if config.architectures and task.model_class.__name__ in config.architectures:
            return task
    return MaskedLM


__all__ = ["DEFAULT_TASK", "FEW_TEXTS", "TASKS", "MaskedLM", "Metric", "PredictOptions", "Predictor",
           "SequenceClassification", "Task", "TaskData", "TaskWords", "TokenClassification", "saved_task", "split"]
