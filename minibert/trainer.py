"""The training loop: precision, accumulation, clipping, evaluation, logging, early stopping, DDP.

One optimizer step, top to bottom (`Trainer.step`):
    get k micro-batches -> count their targets (all ranks) -> for each: autocast forward ->
    loss * n_i / N -> backward (gradient sync on the last one only) -> unscale -> clip ->
    AdamW step -> schedule step -> zero grads.

Around the steps (`Trainer.train`): evaluation every --eval-every steps (or at the end of each epoch)
and at the end, with --patience N stopping after N evaluations in a row without improvement of
--metric; a log record every --log-every steps; a checkpoint every --save-every steps. What is written
at those points besides checkpoints and the final model (best/, metrics.jsonl, curves.png, TensorBoard
events) is done by callbacks (callbacks.py). Elsewhere: the settings (train_config.py), checkpoints,
resume and the RNG state (train_state.py), SIGINT/SIGTERM (signals.py), the output folder's names and
its lock (run_folder.py).
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from .callbacks import Callback, default_callbacks
from .data.sampler import LengthGroupedSampler, feature_lengths
from .metrics import evaluate, summary_numbers
from .optim import AdamW, LossScaler, make_schedule, param_groups
from .run_folder import STATE_FILE, RunFolder, list_checkpoints
from .runtime import BF16Copy, allow_tf32, autocast, resolve_device, resolve_precision, reuse_freed_memory
from .signals import Interrupted, Signals
from .train_config import EPOCH, TrainConfig
from .train_state import (
    BrokenCheckpoint,
    Saver,
    TrainingError,
    file_signature,
    load_checkpoint,
    resume_from,
    set_seed,
    trainer_state,
)

if TYPE_CHECKING:
    from .tasks import Task

# With the names train.py and the tests import from here that now live in modules of their own.
__all__ = ["EPOCH", "STATE_FILE", "BrokenCheckpoint", "Callback", "Interrupted", "TrainConfig", "Trainer",
           "TrainingError", "file_signature", "list_checkpoints"]


class Trainer:
    """Trains `model` for `task` (tasks.py), which says what the loss averages over, how evaluation is
    measured and which evaluation picks `best/`.

    train_data / eval_data: lists of features (dicts with at least `input_ids`); `collate` turns a
    list of features into a batch of tensors with `labels`; `eval_collate` likewise for
    evaluation (for MLM, a masking collator with a fixed seed, so every evaluation masks the
    same tokens). `tokenizer` is saved with the model. `callbacks` run after the ones the settings ask
    for (callbacks.py).
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, task: Task, train_data: list[dict], collate: Callable,
                 eval_data: list[dict] | None = None, eval_collate: Callable | None = None, tokenizer=None,
                 log: Callable[[str], None] = print, data_signature: dict | None = None,
                 callbacks: list[Callback] | None = None):
        self.cfg = cfg
        self.task = task
        self.callbacks = [*default_callbacks(cfg), *(callbacks or [])]
        self.rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.is_main = self.rank == 0
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        allow_tf32(self.device)
        reuse_freed_memory(self.device)
        task.setup_model(model)
        self.model = model.to(self.device)
        self.train_data, self.collate = train_data, collate
        self.eval_data, self.eval_collate = eval_data, eval_collate or collate
        self.eval_collate_state = self.eval_collate.state_dict() if hasattr(self.eval_collate, "state_dict") else None
        self.log = log if self.is_main else (lambda *_: None)
        self.run = RunFolder(cfg.output)
        self.signals = Signals(self._say)
        self.saver = Saver(self.run, self.model, tokenizer, self.signals, cfg.keep_checkpoints)

        lengths = feature_lengths(train_data)
        self.sampler = LengthGroupedSampler(lengths, cfg.batch_size, seed=cfg.seed, num_replicas=self.world,
                                            rank=self.rank)
        # What a resumed run must share with the one that wrote the checkpoint: the batch stream
        # position means nothing with other batches or other blocks of text.
        self.run_signature = {"task": task.name, "examples": len(train_data), "tokens": int(self.sampler.lengths.sum()),
                              "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum,
                              "max_length": cfg.max_length, "world_size": self.world, **(data_signature or {})}
        if len(self.sampler) == 0:
            raise TrainingError(f"the training data ({len(train_data)} examples) gives no batch on this process")
        self.steps_per_epoch = math.ceil(len(self.sampler) / cfg.grad_accum)
        self.total_steps = cfg.max_steps if cfg.max_steps else self.steps_per_epoch * cfg.epochs
        self.metric = task.check_metric(cfg.metric)  # what picks best/ and what --patience watches
        if cfg.patience and not eval_data:
            raise TrainingError(f"--patience {cfg.patience} needs evaluation data: add --eval FILE or --eval-split")

        self.optimizer = AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.adam_betas,
                               eps=cfg.adam_eps)
        self.schedule = make_schedule(cfg.schedule, self.optimizer, self.total_steps, cfg.warmup)
        self.scaler = LossScaler(enabled=self.precision == "fp16")

        # --bf16-weights: forward and backward run on a bf16 copy (runtime.BF16Copy). Checkpoints,
        # evaluation and the saved model read the fp32 model, which the optimizer updates.
        self.bf16_copy: BF16Copy | None = None
        if cfg.bf16_weights:
            if self.precision != "bf16":
                raise TrainingError(f"--bf16-weights needs bf16 precision, not {self.precision}: add --precision bf16 "
                                    f"(or drop --bf16-weights)")
            if self.world > 1:
                raise TrainingError("--bf16-weights runs in one process: drop it or train with one process")
            self.bf16_copy = BF16Copy(self.model)

        self.ddp = None
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.forward = (self.bf16_copy.module if self.bf16_copy is not None
                        else self.ddp if self.ddp is not None else self.model)
        if cfg.compile:
            self.forward = torch.compile(self.forward)

        self.step_count = 0
        self.tokens_seen = 0  # real (non-padding) tokens trained on so far, all ranks
        self.position = (0, 0)  # (epoch, next micro-batch in that epoch)
        self.best: dict | None = None
        self.evals_since_best = 0  # evaluations in a row without improvement, for --patience
        self.stop_reason: str | None = None  # set when --patience ends training early
        self.last_eval: dict | None = None
        self.first_bad_step = torch.tensor(-1, device=self.device)  # first step whose loss was inf/nan
        self.last_checkpoint: Path | None = None  # written by this process

    # ------------------------------------------------------------------ data

    def micro_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """The endless stream of training micro-batches, from the saved position on."""
        epoch, start = self.position
        while True:
            self.sampler.set_epoch(epoch)
            if start == 0 and hasattr(self.collate, "set_epoch"):  # mid-epoch, the restored stream goes on
                self.collate.set_epoch(epoch)
            # From the saved position on: the order is computed from the lengths, no batch before it is drawn.
            for i, batch in enumerate(self.sampler.batches(start), start):
                self.position = (epoch, i + 1)
                yield self.collate([self.train_data[j] for j in batch])
            epoch, start = epoch + 1, 0
            self.position = (epoch, 0)

    # ------------------------------------------------------------------ one optimizer step

    def accumulate(self, micro: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Forward and backward over the micro-batches, leaving in .grad the gradient of the mean
        loss over all their targets (on all ranks), as if they were one batch."""
        self.model.train()
        if self.bf16_copy is not None:
            self.bf16_copy.module.train()
        counts = torch.tensor(float(sum(self.task.count_targets(b) for b in micro)), device=self.device)
        if self.world > 1:
            dist.all_reduce(counts)
        n_total = counts.clamp(min=1)
        step_loss = torch.zeros((), device=self.device)
        for i, batch in enumerate(micro):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            last = i == len(micro) - 1
            sync = nullcontext() if (self.ddp is None or last) else self.ddp.no_sync()
            with sync:
                with autocast(self.device, self.precision) if self.bf16_copy is None else nullcontext():
                    out = self.forward(**batch)
                # Sum of per-target losses over N targets of the whole step: the objective does not
                # depend on how the targets fall into micro-batches. DDP averages gradients over
                # ranks, so multiplying by the world size turns that average into the sum.
                loss = out.loss * out.n_targets / n_total
                self.scaler.scale(loss * self.world).backward()
            if self.bf16_copy is not None:
                self.bf16_copy.add_grads()
            step_loss += loss.detach()
        if self.world > 1:
            dist.all_reduce(step_loss)
        return step_loss

    def step(self, micro: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """One optimizer step over `micro` (this rank's micro-batches). Returns the step's loss,
        a device tensor averaged over every target of every micro-batch on every rank."""
        step_loss = self.accumulate(micro)
        found_inf = self.scaler.unscale_(self.optimizer)
        if not found_inf:
            if self.cfg.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
            self.optimizer.step()
            if self.bf16_copy is not None:
                self.bf16_copy.refresh()
        self.scaler.update(found_inf)
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        if self.precision != "fp16":  # fp16 overflow is the scaler's business, not divergence
            bad = ~torch.isfinite(step_loss) & (self.first_bad_step < 0)
            self.first_bad_step = torch.where(bad, torch.tensor(self.step_count, device=self.device),
                                              self.first_bad_step)
        return step_loss

    def check_finite(self) -> None:
        bad = int(self.first_bad_step)
        if bad >= 0:
            raise TrainingError(
                f"the loss became inf/nan at step {bad}; nothing was saved after it. Lower --lr, "
                f"keep --max-grad-norm on, or use --precision fp32"
            )

    # ------------------------------------------------------------------ the loop

    def train(self, resume: str | bool | None = None, on_start: Callable[[], None] | None = None) -> dict:
        """Train to the last step and save; `resume` as in `resume()`. on_start: called once the run
        is known to go ahead (after a resume was accepted), before the first step."""
        if not self.is_main:
            return self._train(resume, on_start)
        with self.run.lock():
            return self._train(resume, on_start)

    def _train(self, resume: str | bool | None, on_start: Callable[[], None] | None) -> dict:
        cfg = self.cfg
        set_seed(cfg.seed)
        self.run.path.mkdir(parents=True, exist_ok=True)
        if resume:
            path = self.resume(resume)
            if path is not None:
                self.log(f"resumed from {path} at step {self.step_count}")
            else:
                self.log(f"no checkpoint in {self.run.path}; starting from step 0")
        if on_start is not None:
            on_start()
        bar = tqdm(total=self.total_steps, initial=self.step_count, disable=not (cfg.progress and self.is_main),
                   dynamic_ncols=True)
        stream = self.micro_batches()
        start, tokens, window_tokens, window_start = time.perf_counter(), 0, 0, time.perf_counter()
        window_loss = torch.zeros((), device=self.device)
        window_steps, last = 0, {}
        try:
            self._hook("on_train_begin")
            with self.signals.handled():
                try:
                    while self.step_count < self.total_steps:
                        micro = [next(stream) for _ in range(cfg.grad_accum)]
                        n_tok = sum(int(b["attention_mask"].sum()) for b in micro) * self.world
                        window_loss += self.step(micro)
                        tokens += n_tok
                        self.tokens_seen += n_tok
                        window_tokens += n_tok
                        window_steps += 1
                        bar.update(1)
                        evaluated = self.is_eval_step()
                        if evaluated:
                            self.run_eval()
                        stop = evaluated and self.should_stop()
                        if self.step_count % cfg.log_every == 0 or self.step_count == self.total_steps or stop:
                            self.check_finite()  # .item() only here: it waits for the device
                            now = time.perf_counter()
                            last = {"step": self.step_count, "tokens": self.tokens_seen,
                                    "loss": float(window_loss) / window_steps,
                                    "lr": self.schedule.get_last_lr()[0],
                                    "tokens_per_s": window_tokens / max(now - window_start, 1e-9)}
                            bar.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{last['lr']:.2e}",
                                            tok_s=f"{last['tokens_per_s']:.0f}")
                            self._hook("on_log", last)
                            window_loss.zero_()
                            window_steps, window_tokens, window_start = 0, 0, now
                        if cfg.save_every and self.step_count % cfg.save_every == 0:
                            self.save_checkpoint()
                        if stop:
                            break
                    self.check_finite()
                    elapsed = time.perf_counter() - start
                    bar.close()
                    final_eval = None
                    if self.eval_data:  # after an early stop, the evaluation that stopped it is the final one
                        final_eval = self.last_eval if self.stop_reason else self.run_eval()
                    if self.is_main:
                        self.saver.model_to(self.run.path)
                except KeyboardInterrupt as e:
                    bar.close()
                    self.signals.stopping = True  # further signals wait for this save and are then ignored
                    signum = getattr(e, "signum", signal.SIGINT)
                    path = self.last_checkpoint  # a signal that waited for a checkpoint save finds it done
                    if path != self.run.checkpoint(self.step_count):
                        path = self.save_checkpoint()
                    raise Interrupted(f"{signal.Signals(signum).name}: stopped at step {self.step_count}; "
                                      f"checkpoint saved to {path}; continue with --resume", signum) from None
        except BaseException:
            self._hook("on_train_end", None)
            raise
        finally:
            bar.close()
        summary = {"steps": self.step_count, "seconds": round(elapsed, 2),
                   "tokens_per_s": round(tokens / max(elapsed, 1e-9), 1), "final_train_loss": last.get("loss"),
                   "eval": final_eval, "best_eval": self.best, "output": str(self.run.path),
                   "metric": self.metric if self.best else None,
                   "best_step": self.best["step"] if self.best else None,
                   "best_value": self.best[self.metric] if self.best else None,
                   "stopped": self.stop_reason or f"reached the last step ({self.total_steps})"}
        self._hook("on_train_end", summary)
        return summary

    def _hook(self, event: str, *args) -> None:
        """Call `event` on every callback in order, on the main process only: one writer per file."""
        if self.is_main:
            for callback in self.callbacks:
                getattr(callback, event)(self, *args)

    def _say(self, message: str) -> None:
        """self.log, with any progress bar cleared first and redrawn below the line."""
        with tqdm.external_write_mode():
            self.log(message)

    # ------------------------------------------------------------------ evaluation

    def evaluate(self) -> dict:
        if self.eval_collate_state is not None:  # the same masks at every evaluation
            self.eval_collate.load_state_dict(self.eval_collate_state)
        return evaluate(self.model, self.eval_data, self.eval_collate, self.cfg.batch_size * 2, self.device,
                        self.task.metrics(self.model.config), self.precision,
                        progress=self.cfg.progress and self.is_main)

    def is_eval_step(self) -> bool:
        """An evaluation during training after this step (the last step's comes after the loop)."""
        every = self.steps_per_epoch if self.cfg.eval_every == EPOCH else self.cfg.eval_every
        return bool(self.eval_data) and bool(every) and self.step_count % every == 0 \
            and self.step_count < self.total_steps

    def run_eval(self) -> dict:
        """Evaluate and track the best --metric so far; the callbacks record it (best/ when it improved,
        metrics.jsonl with every number); one line with the summary numbers."""
        self.check_finite()  # a model whose loss diverged is neither measured nor saved as best/
        metrics = self.evaluate()
        metrics["step"] = self.step_count
        metrics["tokens"] = self.tokens_seen
        improved = self.task.is_better(metrics, self.best, self.metric)
        if improved:
            self.best = dict(metrics)
            self.evals_since_best = 0
        else:
            self.evals_since_best += 1
        self.last_eval = metrics
        self._hook("on_evaluate", metrics, improved)
        self._say("eval @ step {}: {}".format(self.step_count, ", ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary_numbers(metrics).items())))
        return metrics

    def should_stop(self) -> bool:
        """--patience: whether the evaluations since the best one are that many (the same answer on every rank)."""
        stop = bool(self.cfg.patience) and self.evals_since_best >= self.cfg.patience
        if self.world > 1:  # rank 0 decides, so that float noise never lets the ranks part ways
            flag = torch.tensor(int(stop), device=self.device)
            dist.broadcast(flag, 0)
            stop = bool(flag)
        if stop:
            self.stop_reason = (f"early stop at step {self.step_count}: {self.metric} did not improve for "
                                f"{self.evals_since_best} evaluations (--patience {self.cfg.patience})")
            self._say(self.stop_reason)
        return stop

    # ------------------------------------------------------------------ checkpoints (train_state.py)

    def save_checkpoint(self) -> Path | None:
        """checkpoint-STEP in the output folder, from the main process (the others return None)."""
        self.check_finite()
        if not self.is_main:
            return None
        with self.signals.critical():  # a signal during the save is raised once it is recorded here
            self.last_checkpoint = self.saver.checkpoint(self.step_count, trainer_state(self))
            self._hook("on_save", self.last_checkpoint)
        return self.last_checkpoint

    def resume(self, resume: str | bool) -> Path | None:
        """Load the checkpoint `resume` names: True, the latest complete one in the output folder (None when
        there is none), falling back past broken ones with a warning; a path, that one (train_state.resume_from)."""
        return resume_from(self.run, resume, partial(load_checkpoint, self), self.log, clean=self.is_main)
