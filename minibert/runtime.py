"""Where and in what precision the model runs: the one place these rules live.

Used by the trainer, the pipelines, the CLI and the benchmarks, so that `--device auto` and
`--precision auto` mean the same thing everywhere.
"""

from __future__ import annotations

import copy
import os
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """`auto`: this process's GPU (its LOCAL_RANK under torchrun), else the CPU. Otherwise the named
    device, checked to exist here: torch's own errors for a missing GPU are tracebacks."""
    name = str(name)
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if dist.is_available() and dist.is_initialized():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cuda")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                         f"numbered from 0")
    return device


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (AMX or AVX512-BF16). Elsewhere (AVX2-only
    CPUs) bf16 autocast is emulated and many times slower than fp32 (BENCHMARKS.md), so `auto`
    must not pick it there."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto`: bf16 on GPUs that have it (else fp16) and on CPUs with native bf16, else fp32."""
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if name not in PRECISIONS:
        raise ValueError(f"--precision {name}: use fp32, bf16, fp16 or auto")
    if name == "fp16" and device.type != "cuda":
        raise ValueError("--precision fp16 needs a CUDA GPU; on CPU use bf16 (or fp32)")
    return name


def autocast(device: torch.device, precision: str):
    """The forward pass's context: autocast to bf16/fp16 (weights stay fp32), nothing for fp32."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


class BF16Copy:
    """A copy of `model` with bf16 parameters for the forward and backward passes, the fp32 model
    staying the truth: no autocast, so weights and activations are bf16 end to end (losses are
    computed in fp32 from upcast logits). After each backward `add_grads` adds the copy's
    gradients to the fp32 model's .grad (summed in fp32 over micro-batches); the optimizer updates
    the fp32 weights and `refresh` copies them back. Buffers (e.g. class weights) stay as they were.
    """

    def __init__(self, model: torch.nn.Module):
        self.module = copy.deepcopy(model)
        for w in self.module.parameters():  # tied weights are one Parameter: converted once, still tied
            w.data = w.data.to(torch.bfloat16)
        self.pairs = list(zip(model.parameters(), self.module.parameters()))

    @torch.no_grad()
    def add_grads(self) -> None:
        for p, w in self.pairs:
            if w.grad is None:
                continue
            if p.grad is None:
                p.grad = w.grad.to(p.dtype)
            else:
                p.grad.add_(w.grad)
            w.grad = None

    @torch.no_grad()
    def refresh(self) -> None:
        for p, w in self.pairs:
            w.copy_(p)


def allow_tf32(device: torch.device) -> None:
    """On GPUs, let fp32 matmuls use TF32 tensor cores: ~8x the fp32 rate at a 10-bit mantissa."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters
_reusing = False


def reuse_freed_memory(device: torch.device) -> bool:
    """For CPU work on Linux with glibc: keep the memory of freed tensors in the process for the
    next step instead of returning it to the system. By default glibc serves blocks over 32 MB
    with fresh mmap pages and gives the heap's free top back over 64 MB, so every training step
    page-faults (and the kernel zero-fills) its largest activations and gradients again; with
    mmap only above 1 GB and no trimming below 1 GB a step reuses the previous step's pages
    (BENCHMARKS.md, "Page faults"). The resident size then stays near the peak until the process
    ends. Process-wide and idempotent; MINIBERT_MALLOC=default leaves glibc's settings alone.
    Returns whether the settings are in force."""
    global _reusing
    if _reusing or device.type != "cpu" or os.environ.get("MINIBERT_MALLOC", "").lower() == "default":
        return _reusing
    try:
        import ctypes

        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return False
    _reusing = bool(mallopt(M_MMAP_THRESHOLD, 1 << 30) and mallopt(M_TRIM_THRESHOLD, 1 << 30)
                    and mallopt(M_TOP_PAD, 64 << 20))
    return _reusing
