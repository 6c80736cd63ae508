"""What the benchmarks share: model shapes, device sync, memory readings, fresh-process probes, tables."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from minibert.config import BertConfig

ROOT = Path(__file__).resolve().parents[1]

# Model shapes compared in the benchmarks (HF config field names, so both libraries take them as is).
SHAPES: dict[str, dict] = {
    "zh-small": dict(vocab_size=8192, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=1024, max_position_embeddings=128),
    "bert-base-chinese": dict(vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072, max_position_embeddings=512),
}


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer read afterwards measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_ms(fns: dict[str, Callable[[], object]], rounds: int, reps: int, *, warmup: int = 1,
                   device: torch.device | None = None) -> dict[str, list[float]]:
    """Milliseconds per call of each variant, one reading per round: each round runs every variant
    `warmup` times untimed, then `reps` times timed, the variants' order rotated from round to round
    so that none always follows the same neighbour (drift of a shared machine falls on all alike).
    The caller picks the statistic (median or minimum) and says which."""
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            for _ in range(warmup):
                fns[name]()
            if device is not None:
                sync(device)
            start = time.perf_counter()
            for _ in range(reps):
                fns[name]()
            if device is not None:
                sync(device)
            times[name].append((time.perf_counter() - start) / reps * 1e3)
    return times


def flops_per_token(cfg: BertConfig, seq_len: int, mlm_fraction: float = 1.0) -> float:
    """Training FLOPs per token (forward + backward = 3x forward), counting matmuls only.

    mlm_fraction is the share of positions the MLM head runs on (1.0 dense, ~0.15 sparse); the last
    layer's queries, attention, output projection and feed-forward run on that share too (BertModel's
    `positions`; the padding of each row's queries to the fullest row's count is not counted).
    """
    C, L, FF, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, cfg.vocab_size
    key_value = 2 * 2 * C * C  # K and V projections
    query_attention = 2 * C * C + 2 * 2 * seq_len * C  # Q projection + QK^T and AV
    after_attention = 2 * (C * C + 2 * C * FF)  # output projection + feed-forward
    qkv_attention = key_value + query_attention
    last = key_value + (query_attention + after_attention) * mlm_fraction if L else 0
    head = 2 * (C * C + C * V) * mlm_fraction
    return 3 * (max(L - 1, 0) * (qkv_attention + after_attention) + last + head)


def counted_gflop(step: Callable[[], object]) -> float:
    """GFLOP of the matmuls one call of `step` runs (mm, addmm, bmm, attention), counted by
    torch.utils.flop_counter as it dispatches them, forward and backward: the work an implementation
    actually does, padding and unused logits included, where flops_per_token counts the work the loss
    needs. minibert's fp32 oneDNN linears are counted through F.linear (the same products) for this
    one call."""
    from torch.utils.flop_counter import FlopCounterMode

    from minibert import kernels

    onednn, kernels.ONEDNN_FP32 = kernels.ONEDNN_FP32, False
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            step()
    finally:
        kernels.ONEDNN_FP32 = onednn
    return counter.get_total_flops() / 1e9


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "cpu"


def environment(device: torch.device) -> dict:
    try:
        import transformers

        tf_version = transformers.__version__
    except ImportError:
        tf_version = None
    return {"torch": torch.__version__, "transformers": tf_version, "device": device_name(device),
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_average": os.getloadavg()}


def run_probe(code: str, timeout: float = 3600) -> dict:
    """Run `code` in a fresh Python process (repository root as cwd, bench/ importable) and return the
    JSON object it prints on its last stdout line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(ROOT),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"probe failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def step_parser(doc: str, rounds: int) -> argparse.ArgumentParser:
    """The flags of the scripts that time one pre-training step's parts (linear_floor.py,
    rest_floor.py): precision, model shape, the step's batch and masking, rounds, vocabulary."""
    from minibert.config import PRESETS

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--shape", default="zh-small", choices=sorted(PRESETS))
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--mask-prob", type=float, default=0.15)
    ap.add_argument("--rounds", type=int, default=rounds, help="timed calls per op (median)")
    ap.add_argument("--vocab", default=str(ROOT / "vocab" / "zh.txt"))
    return ap
