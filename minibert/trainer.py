"""The training loop: precision, accumulation, clipping, evaluation, logging, checkpoints, resume, DDP.

One optimizer step, top to bottom (`Trainer.step`):
    get k micro-batches -> count their targets (all ranks) -> for each: autocast forward ->
    loss * n_i / N -> backward (gradient sync on the last one only) -> unscale -> clip ->
    AdamW step -> schedule step -> zero grads.

Evaluation (every --eval-every steps, or at the end of each epoch, and at the end) saves `best/` when
the chosen metric (--metric, default the task's) improves; with --patience N training stops after N
evaluations in a row without improvement. metrics.jsonl gets a line per --log-every steps, one per
evaluation ({"eval": ...}, classifiers with their per-class report and confusion matrix) and a
summary: the best step and its metric, and why training stopped. At the end curves.png plots it
(plots.py, needs matplotlib).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import CheckpointError, convert_from_hf, pickled_global, read_weights
from .data.sampler import LengthGroupedSampler
from .metrics import evaluate, summary_numbers
from .optim import AdamW, LossScaler, make_schedule, param_groups
from .run_folder import STATE_FILE, RunFolder, is_checkpoint, list_checkpoints
from .runtime import BF16Copy, allow_tf32, autocast, resolve_device, resolve_precision, reuse_freed_memory
from .train_config import EPOCH, TrainConfig, parse_betas, parse_every

if TYPE_CHECKING:
    from .tasks import Task

# Names that moved to modules of their own (run_folder.py, train_config.py); train.py imports them from here.
__all__ = ["EPOCH", "STATE_FILE", "BrokenCheckpoint", "Interrupted", "TrainConfig", "Trainer", "TrainingError",
           "file_signature", "list_checkpoints", "parse_betas", "parse_every"]

STATE_KEYS = ("step", "position", "optimizer", "schedule", "scaler", "rng", "collate", "best")


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what to change."""


class BrokenCheckpoint(TrainingError):
    """A checkpoint folder whose files are truncated, corrupted or incomplete."""


class Interrupted(KeyboardInterrupt):
    """Training was stopped by SIGINT (Ctrl-C) or SIGTERM (timeout, schedulers, container stops) after
    saving a checkpoint. exit_status is the shell's convention for death by that signal: 128 + its
    number (130, 143)."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)
        self.exit_status = 128 + self.signum


class _Signal(KeyboardInterrupt):
    """Raised by the trainer's signal handler between steps; becomes Interrupted once saved."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


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


class Trainer:
    """Trains `model` for `task` (tasks.py), which says what the loss averages over, how evaluation is
    measured and which evaluation picks `best/`.

    train_data / eval_data: lists of features (dicts with at least `input_ids`); `collate` turns a
    list of features into a batch of tensors with `labels`; `eval_collate` likewise for
    evaluation (for MLM, a masking collator with a fixed seed, so every evaluation masks the
    same tokens). `tokenizer` is saved with the model.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, task: Task, train_data: list[dict], collate: Callable,
                 eval_data: list[dict] | None = None, eval_collate: Callable | None = None, tokenizer=None,
                 log: Callable[[str], None] = print, data_signature: dict | None = None):
        self.cfg = cfg
        self.task = task
        self.rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.is_main = self.rank == 0
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        allow_tf32(self.device)
        reuse_freed_memory(self.device)
        task.setup_model(model)
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.train_data, self.collate = train_data, collate
        self.eval_data, self.eval_collate = eval_data, eval_collate or collate
        self.eval_collate_state = self.eval_collate.state_dict() if hasattr(self.eval_collate, "state_dict") else None
        self.log = log if self.is_main else (lambda *_: None)
        self.output = Path(cfg.output)
        self.run = RunFolder(self.output)

        lengths = [len(f["input_ids"]) for f in train_data]
        self.sampler = LengthGroupedSampler(lengths, cfg.batch_size, seed=cfg.seed, num_replicas=self.world,
                                            rank=self.rank)
        # What a resumed run must share with the one that wrote the checkpoint: the batch stream
        # position means nothing with other batches or other blocks of text.
        self.run_signature = {"task": task.name, "examples": len(train_data), "tokens": sum(lengths),
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
        self._saving = False  # a save in progress: signals wait for it (see _critical)
        self._pending_signal: int | None = None
        self._stopping = False
        self.last_checkpoint: Path | None = None  # written by this process

    # ------------------------------------------------------------------ data

    def micro_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """The endless stream of training micro-batches, from the saved position on."""
        epoch, start = self.position
        while True:
            self.sampler.set_epoch(epoch)
            if start == 0 and hasattr(self.collate, "set_epoch"):  # mid-epoch, the restored stream goes on
                self.collate.set_epoch(epoch)
            batches = list(self.sampler)
            for i in range(start, len(batches)):
                self.position = (epoch, i + 1)
                yield self.collate([self.train_data[j] for j in batches[i]])
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

    def _say(self, message: str) -> None:
        """self.log, with any progress bar cleared first and redrawn below the line."""
        with tqdm.external_write_mode():
            self.log(message)

    # ------------------------------------------------------------------ signals

    @contextmanager
    def _signals(self):
        """While training: SIGINT and SIGTERM stop the loop (a checkpoint is saved, then Interrupted is
        raised). Only the main thread can install handlers; elsewhere Ctrl-C stays Python's."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._saving:  # never abandon a save half-way: stop once it is complete
                self._pending_signal = signum
                self._say(f"{signal.Signals(signum).name}: finishing the save in progress, then stopping")
                return
            raise _Signal(signum)

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    @contextmanager
    def _critical(self):
        """A save that a signal must not cut short: a signal that arrives meanwhile is raised after it."""
        outer, self._saving = self._saving, True
        try:
            yield
        finally:
            self._saving = outer
        if not outer and self._pending_signal is not None and not self._stopping:
            signum, self._pending_signal = self._pending_signal, None
            raise _Signal(signum)

    # ------------------------------------------------------------------ checkpoints

    def _write_error(self, what: str, error: OSError, needed: int) -> TrainingError:
        """A one-line error for a failed write: the folder, the reason, the space it needs, what is safe."""
        try:
            free = f", {_size(shutil.disk_usage(self.output).free)} free"
        except OSError:
            free = ""
        found = self.run.checkpoints()
        safe = f"; {found[-1].name} is intact and --resume continues from it" if found else ""
        return TrainingError(f"{self.output}: could not write {what} ({error.strerror or error}); it needs about "
                             f"{_size(needed)}{free}{safe}")

    def _model_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.model.state_dict().values())

    def save_checkpoint(self) -> Path | None:
        """Write output/checkpoint-STEP atomically: into a temporary folder, then renamed. A write error
        (a full disk) removes the partial folder and leaves every earlier checkpoint as it was."""
        self.check_finite()
        if not self.is_main:
            return None
        final = self.run.checkpoint(self.step_count)
        tmp = self.run.tmp(final.name)
        with self._critical():
            shutil.rmtree(tmp, ignore_errors=True)
            state = {
                "step": self.step_count,
                "tokens_seen": self.tokens_seen,
                "position": list(self.position),
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": capture_rng(),
                "collate": self.collate.state_dict() if hasattr(self.collate, "state_dict") else None,
                "best": self.best,
                "evals_since_best": self.evals_since_best,
                "config": asdict(self.cfg),
                "data": self.run_signature,
            }
            try:
                self.model.save_pretrained(tmp, tokenizer=self.tokenizer)
                torch.save(state, tmp / STATE_FILE)
            except OSError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                # weights in the file's dtype, plus AdamW's two fp32 moments per parameter
                raise self._write_error(final.name, e, 3 * self._model_bytes()) from None
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            self.last_checkpoint = final
            self.run.prune_checkpoints(self.cfg.keep_checkpoints)
        return final

    def save_model(self, dest: Path) -> None:
        """save_pretrained into `dest` (the output folder or best/) so that a failed write leaves the
        model that was there intact: written into a temporary folder first, then moved in."""
        what = "the final model" if dest == self.output else f"{dest.name}/"
        tmp = self.run.tmp('final' if dest == self.output else dest.name)
        with self._critical():
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                self.model.save_pretrained(tmp, tokenizer=self.tokenizer)
            except OSError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                raise self._write_error(what, e, self._model_bytes()) from None
            if dest == self.output:  # the folder holds more (checkpoints, metrics): move file by file
                for f in tmp.iterdir():
                    os.replace(f, dest / f.name)
                tmp.rmdir()
            else:
                old = self.run.old(dest.name)
                if dest.exists():
                    os.replace(dest, old)
                os.replace(tmp, dest)
                shutil.rmtree(old, ignore_errors=True)

    def check_same_run(self, path: Path, saved: dict | None) -> None:
        if saved is None:  # a checkpoint written before signatures were recorded
            return
        now = self.run_signature
        diff = [f"{k} {_short(saved[k])} -> {_short(now[k])}" for k in now if k in saved and saved[k] != now[k]]
        if not diff:
            return
        if self.cfg.accept_changed_run:
            self.log(f"warning: --resume {path}: continuing a different run ({', '.join(diff)}), as "
                     f"--accept-changed-run asks")
            return
        raise TrainingError(
            f"--resume {path}: this run differs from the one that wrote the checkpoint ({', '.join(diff)}); "
            f"to start a new phase from its weights use --model {path} with a new --output, or pass "
            f"--accept-changed-run")

    def read_checkpoint(self, path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
        """(trainer state, weights) of a checkpoint folder, checked complete before anything is applied.

        A state file that carries objects other than tensors and plain data is refused (TrainingError:
        the code in it never runs); a truncated or corrupted one raises BrokenCheckpoint."""
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
            weights, _ = convert_from_hf(read_weights(path), self.model, source=str(path))
        except CheckpointError as e:
            raise BrokenCheckpoint(str(e)) from None
        return state, weights

    def load_checkpoint(self, path: Path) -> None:
        state, weights = self.read_checkpoint(path)
        self.check_same_run(path, state.get("data"))
        self.model.load_state_dict(weights)
        if self.bf16_copy is not None:
            self.bf16_copy.refresh()
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        if state["collate"] is not None and hasattr(self.collate, "load_state_dict"):
            self.collate.load_state_dict(state["collate"])
        self.step_count = state["step"]
        self.tokens_seen = state.get("tokens_seen", 0)
        self.position = tuple(state["position"])
        self.best = state["best"]
        self.evals_since_best = state.get("evals_since_best", 0)

    def find_resume(self, resume: str | bool) -> Path | None:
        """`True`: the latest complete checkpoint in the output folder (None if there is none);
        a path: that checkpoint. Temporary folders of an interrupted save are removed."""
        if self.is_main and self.output.is_dir():
            for p in self.run.clean_partial():
                self.log(f"removed incomplete checkpoint {p}")
        if resume is True:
            found = self.run.checkpoints()
            return found[-1] if found else None
        path = Path(resume)
        if not is_checkpoint(path):
            raise TrainingError(f"--resume {path}: not a complete checkpoint (no {STATE_FILE})")
        return path

    def resume(self, resume: str | bool) -> Path | None:
        """Load the checkpoint `resume` names (see find_resume). With `True`, a broken latest checkpoint
        is skipped with a warning for the one before it; a named one that is broken is an error."""
        path = self.find_resume(resume)
        if resume is not True:  # a named checkpoint: find_resume checked it is there
            self.load_checkpoint(path)
            return path
        candidates = self.run.checkpoints()[::-1]  # newest first; none: start from step 0
        for i, path in enumerate(candidates):
            try:
                self.load_checkpoint(path)
                return path
            except BrokenCheckpoint as e:
                if i + 1 < len(candidates):
                    self.log(f"warning: {e}; resuming from {candidates[i + 1].name} instead")
                else:
                    raise BrokenCheckpoint(f"{e}; no earlier checkpoint in {self.output} to fall back to: train "
                                           f"again without --resume (with --overwrite)") from None
        return None

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
        self.output.mkdir(parents=True, exist_ok=True)
        if resume:
            path = self.resume(resume)
            if path is not None:
                self.log(f"resumed from {path} at step {self.step_count}")
            else:
                self.log(f"no checkpoint in {self.output}; starting from step 0")
        if on_start is not None:
            on_start()
        metrics_file = self.run.metrics.open("a", encoding="utf-8") if self.is_main else None
        bar = tqdm(total=self.total_steps, initial=self.step_count, disable=not (cfg.progress and self.is_main),
                   dynamic_ncols=True)
        stream = self.micro_batches()
        start, tokens, window_tokens, window_start = time.perf_counter(), 0, 0, time.perf_counter()
        window_loss = torch.zeros((), device=self.device)
        window_steps, last = 0, {}
        try:
            with self._signals():
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
                            self.run_eval(metrics_file)
                        stop = evaluated and self.should_stop()
                        if self.step_count % cfg.log_every == 0 or self.step_count == self.total_steps or stop:
                            self.check_finite()
                            now = time.perf_counter()
                            last = {"step": self.step_count, "tokens": self.tokens_seen,
                                    "loss": float(window_loss) / window_steps,
                                    "lr": self.schedule.get_last_lr()[0],
                                    "tokens_per_s": window_tokens / max(now - window_start, 1e-9)}
                            bar.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{last['lr']:.2e}",
                                            tok_s=f"{last['tokens_per_s']:.0f}")
                            if metrics_file:
                                metrics_file.write(json.dumps(last) + "\n")
                                metrics_file.flush()
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
                        final_eval = self.last_eval if self.stop_reason else self.run_eval(metrics_file)
                    if self.is_main:
                        self.save_model(self.output)
                except KeyboardInterrupt as e:
                    bar.close()
                    self._stopping = True  # further signals wait for this save and are then ignored
                    signum = getattr(e, "signum", signal.SIGINT)
                    path = self.last_checkpoint  # a signal that waited for a checkpoint save finds it done
                    if path != self.run.checkpoint(self.step_count):
                        path = self.save_checkpoint()
                    raise Interrupted(f"{signal.Signals(signum).name}: stopped at step {self.step_count}; "
                                      f"checkpoint saved to {path}; continue with --resume", signum) from None
        except BaseException:
            if metrics_file:
                metrics_file.close()
            raise
        finally:
            bar.close()
        summary = {"steps": self.step_count, "seconds": round(elapsed, 2),
                   "tokens_per_s": round(tokens / max(elapsed, 1e-9), 1), "final_train_loss": last.get("loss"),
                   "eval": final_eval, "best_eval": self.best, "output": str(self.output),
                   "metric": self.metric if self.best else None,
                   "best_step": self.best["step"] if self.best else None,
                   "best_value": self.best[self.metric] if self.best else None,
                   "stopped": self.stop_reason or f"reached the last step ({self.total_steps})"}
        if metrics_file:
            metrics_file.write(json.dumps({"summary": summary}) + "\n")
            metrics_file.close()
        if self.is_main and self.cfg.plot:
            self.plot_curves()
        return summary

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

    def plot_curves(self) -> None:
        """curves.png from metrics.jsonl; without matplotlib one line says how to get it."""
        from .plots import PlotUnavailable, plot_run

        try:
            path = plot_run(self.output)
        except PlotUnavailable as e:
            self.log(f"curves.png skipped: {e}")
        except (OSError, ValueError) as e:  # the model is saved: a picture that fails must not fail the run
            self.log(f"curves.png not written: {e}")
        else:
            self.log(f"wrote {path}")

    def run_eval(self, metrics_file) -> dict:
        """Evaluate, save best/ if --metric improved, log the summary numbers in one line and every number
        (the classification report too) in metrics.jsonl."""
        self.check_finite()  # a model whose loss diverged is neither measured nor saved as best/
        metrics = self.evaluate()
        metrics["step"] = self.step_count
        metrics["tokens"] = self.tokens_seen
        if self.task.is_better(metrics, self.best, self.metric):
            self.best = dict(metrics)
            self.evals_since_best = 0
            if self.is_main:
                self.save_model(self.run.best)
        else:
            self.evals_since_best += 1
        self.last_eval = metrics
        if metrics_file:
            metrics_file.write(json.dumps({"eval": metrics}) + "\n")
            metrics_file.flush()
        self._say("eval @ step {}: {}".format(self.step_count, ", ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary_numbers(metrics).items())))
        return metrics
