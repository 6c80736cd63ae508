"""Pictures: curves.png from metrics.jsonl, the confusion matrix, and what happens without matplotlib."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, write_jsonl

from minibert.plots import PlotUnavailable, main, plot_confusion, plot_run, read_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    # a figure with axes, lines and text is tens of kB; an empty or blank one is far smaller
    assert data[:8] == PNG_SIGNATURE and len(data) > 10_000, (path, len(data))


def write_metrics(folder: Path) -> Path:
    """A metrics.jsonl as the trainer writes it: a record per step, three evaluations, a summary;
    steps 3 and 4 twice, as after a resume from a checkpoint at step 2."""
    folder.mkdir(parents=True, exist_ok=True)
    records = [{"step": s, "tokens": 100 * s, "loss": 3 / s, "lr": 1e-3 * (1 - s / 7), "tokens_per_s": 1e3}
               for s in (1, 2, 3, 4, 3, 4, 5, 6)]
    records[4:4] = [{"eval": {"eval_loss": 2.0, "accuracy": 0.5, "macro_f1": 0.4, "examples": 4, "step": 2,
                              "report": {}, "confusion": [[1, 1], [1, 1]]}}]
    records += [{"eval": {"eval_loss": e, "accuracy": a, "macro_f1": a, "examples": 4, "step": s}}
                for s, e, a in ((4, 1.5, 0.75), (6, 1.2, 1.0))]
    records.append({"summary": {"steps": 6, "metric": "accuracy", "best_step": 6, "best_value": 1.0}})
    return write_jsonl(folder / "metrics.jsonl", records)


def test_read_metrics_keeps_the_last_record_of_a_step(tmp_path):
    train, evals, summary = read_metrics(write_metrics(tmp_path))
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6] and [e["step"] for e in evals] == [2, 4, 6]
    assert summary["best_step"] == 6


def test_curves_and_confusion_png(tmp_path):
    pytest.importorskip("matplotlib")
    write_metrics(tmp_path / "run")
    assert plot_run(tmp_path / "run") == tmp_path / "run" / "curves.png"
    assert_png(tmp_path / "run" / "curves.png")
    path = plot_confusion([[5, 1, 0], [2, 7, 1], [0, 0, 9]], ["好", "坏", "neutral"], tmp_path / "c" / "confusion.png")
    assert_png(path)


def test_python_m_minibert_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    write_metrics(tmp_path / "run")
    assert main([str(tmp_path / "run"), "--out", str(tmp_path / "run.png")]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'run.png'}\n"
    assert_png(tmp_path / "run.png")
    assert main([str(tmp_path / "no-run")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "metrics.jsonl: not found" in err[0]


def test_without_matplotlib_training_finishes_and_says_how_to_get_curves(tmp_path, monkeypatch, minilm_tokenizer):
    from minibert import BertForMaskedLM, MaskedLM, MaskingCollator, TrainConfig, Trainer
    from minibert.data import tokenize_texts

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    write_metrics(tmp_path / "run")
    with pytest.raises(PlotUnavailable, match=r"pip install 'minibert\[plot\]'"):
        plot_run(tmp_path / "run")

    tok = minilm_tokenizer
    features = tokenize_texts(tok, ["the cat sat on the mat", "a dog ran"] * 4, max_length=16)
    logs: list[str] = []
    torch.manual_seed(0)
    cfg = TrainConfig(output=str(tmp_path / "out"), max_steps=2, batch_size=4, device="cpu", precision="fp32",
                      progress=False)
    Trainer(BertForMaskedLM(tiny_config(tok.vocab_size)), cfg, MaskedLM(), features, MaskingCollator(tok),
            tokenizer=tok, log=logs.append).train()
    assert (tmp_path / "out" / "model.safetensors").is_file() and not (tmp_path / "out" / "curves.png").exists()
    assert logs == ["curves.png skipped: matplotlib is not installed; pip install 'minibert[plot]'"]
    summary = json.loads((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()[-1])["summary"]
    assert summary["steps"] == 2 and summary["stopped"] == "reached the last step (2)"
