"""TrainConfig: how to train, one field per train.py flag, checked when it is made. Imports no torch."""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass

from .config import option

EPOCH = "epoch"  # --eval-every epoch
TENSORBOARD_INSTALL = "pip install 'minibert[tensorboard]'"


def parse_every(text: str) -> int | str:
    """--eval-every: a number of steps, or "epoch"."""
    if text == EPOCH:
        return EPOCH
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r}: give a number of steps or 'epoch'") from None


def parse_betas(text: str) -> tuple[float, float]:
    """"0.9,0.999" -> (0.9, 0.999), both in [0, 1)."""
    try:
        b1, b2 = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r}: give two numbers, e.g. 0.9,0.999") from None
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"{text!r}: both betas must be in [0, 1)")
    return b1, b2


@dataclass
class TrainConfig:
    """How to train; train.py makes a flag of each field (config.option holds its help text)."""

    output: str = option("output", "folder for the model, checkpoints and metrics.jsonl")
    epochs: int = option(3, "passes over the data (ignored when --max-steps is set)")
    max_steps: int | None = option(None, "optimizer steps to run; overrides --epochs")
    batch_size: int = option(32, "sequences per micro-batch per process")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    lr: float = option(5e-5, "peak learning rate")
    weight_decay: float = option(0.01, "AdamW decoupled weight decay, not applied to biases and LayerNorms")
    adam_betas: tuple[float, float] = option((0.9, 0.999), "AdamW beta1,beta2", type=parse_betas, metavar="B1,B2")
    adam_eps: float = option(1e-6, "AdamW epsilon")
    warmup: float = option(0.1, "warm-up: a fraction of all steps (< 1) or a number of steps (>= 1)")
    schedule: str = option("linear", "learning-rate schedule after warm-up", choices=("linear", "cosine", "constant"))
    max_grad_norm: float = option(1.0, "clip the global gradient norm to this, 0 = off")
    precision: str = option("auto", "auto: on GPUs bf16 autocast (fp16 where bf16 is missing); on CPUs bf16 only "
                            "with native bf16 (AMX/AVX512-BF16), else fp32", choices=("auto", "fp32", "bf16", "fp16"))
    seed: int = option(0, "seed for init, data order and masking")
    max_length: int | None = option(None, "tokens per sequence, longer texts are truncated (tag: read in overlapping "
                                    "windows); recorded so that "
                                    "--resume can check it continues the same run")
    eval_every: int | str = option(0, "evaluate every N steps, or 'epoch': at the end of every epoch; 0 = only "
                                   "at the end", type=parse_every, metavar="N|epoch")
    metric: str | None = option(None, "the evaluation number that picks best/ and that --patience watches; "
                                "each task declares its numbers and which way is better", metavar="NAME")
    patience: int = option(0, "early stopping: stop after N evaluations in a row without improvement of --metric; "
                           "needs evaluation data and --eval-every. 0 = off", metavar="N")
    save_every: int = option(0, "checkpoint every N steps, 0 = only the final model")
    keep_checkpoints: int = option(2, "keep the last K checkpoint folders")
    accept_changed_run: bool = option(False, "let --resume continue although the training file, task, batch "
                                      "size or max length differ from the checkpoint's run (the data position "
                                      "is then only approximate)")
    log_every: int = option(10, "steps between metrics.jsonl lines and progress-bar updates")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    bf16_weights: bool = option(False, "with bf16 precision: run the passes on a bf16 copy of the model (weights and "
                                "activations bf16, no autocast) refreshed after each optimizer step, which updates "
                                "the fp32 weights as always; about 1.1x faster on CPUs with native bf16 "
                                "(BENCHMARKS.md), losses within bf16 rounding of autocast's")
    compile: bool = option(False, "torch.compile the model: pays off on GPUs for runs of many steps; on CPU the "
                           "compile time rarely pays back")
    progress: bool = option(True, "show progress bars (training, evaluation, tokenizing large files)")
    plot: bool = option(True, "write curves.png (training loss, learning rate and eval metrics against step) at the "
                        "end; needs matplotlib: pip install 'minibert[plot]'")
    report_to: str = option("none", "tensorboard: also write the training loss, learning rate, tokens/s and eval "
                            "metrics as TensorBoard events into OUTPUT/tensorboard (tensorboard --logdir "
                            "OUTPUT/tensorboard); needs pip install 'minibert[tensorboard]'",
                            choices=("none", "tensorboard"))

    def __post_init__(self) -> None:
        """One-line ValueErrors naming the flag, for values no run can use (here)."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"{_flag(f.name)} {getattr(self, f.name)}: use one of {', '.join(choices)}")
        least = {"batch_size": 1, "grad_accum": 1, "log_every": 1, "keep_checkpoints": 1, "save_every": 0,
                 "patience": 0}
        if self.eval_every != EPOCH:
            if not isinstance(self.eval_every, int):
                raise ValueError(f"--eval-every {self.eval_every}: give a number of steps or '{EPOCH}'")
            least["eval_every"] = 0
        if self.max_steps:  # None or 0: --epochs decides
            least["max_steps"] = 1
        else:
            least["epochs"] = 1
        for name, low in least.items():
            if getattr(self, name) < low:
                raise ValueError(f"{_flag(name)} {getattr(self, name)}: must be at least {low}"
                                 + (" (or give --max-steps)" if name == "epochs" else ""))
        if self.patience and not self.eval_every:
            raise ValueError(f"--patience {self.patience} needs evaluations during training: add --eval-every N or "
                             f"--eval-every {EPOCH}")
        # Found without importing it: a config is made before the data is read, and must stay cheap.
        if self.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
            raise ValueError(f"--report-to tensorboard: tensorboard is not installed; {TENSORBOARD_INSTALL}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
