"""Device and precision rules: what `auto` picks, and the one-line refusals."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from minibert import runtime


def test_auto_device_and_named_devices():
    assert runtime.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert runtime.resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^--device gpu: not a device; use auto, cpu, cuda or cuda:N$"):
        runtime.resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda: no CUDA GPU is available; use --device cpu"):
            runtime.resolve_device("cuda")


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    assert runtime.resolve_precision("auto", torch.device("cpu")) == expected


def test_precision_refusals_and_autocast():
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="--precision fp16 needs a CUDA GPU"):
        runtime.resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="--precision fp8: use fp32, bf16, fp16 or auto"):
        runtime.resolve_precision("fp8", cpu)
    assert isinstance(runtime.autocast(cpu, "fp32"), nullcontext)
    with runtime.autocast(cpu, "bf16"):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.bfloat16
