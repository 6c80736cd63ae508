"""The repository's files that the default jobs use; a `pip install .` has the package only."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_MODEL = ROOT / "models" / "zh-small"
DEMO_TRAIN = ROOT / "examples" / "three_kingdoms.json"
SHIPPED_VOCAB = ROOT / "vocab" / "zh.txt"
