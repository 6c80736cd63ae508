"""The shipped default: models/zh-small, vocab/zh.txt and the Three Kingdoms demo, end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from minibert import BertForMaskedLM, FillMask, Tokenizer
from minibert.data import read_texts

MODEL = ROOT / "models" / "zh-small"
QUERY = "三国人物诸葛[MASK]"


def run(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_shipped_model_files_and_vocab():
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"):
        assert (MODEL / name).is_file(), name
    assert (MODEL / "model.safetensors").stat().st_size < 25e6
    cfg = json.loads((MODEL / "config.json").read_text())
    assert cfg["architectures"] == ["BertForMaskedLM"]
    tok = Tokenizer.from_pretrained(MODEL)
    model = BertForMaskedLM.from_pretrained(MODEL)
    assert tok.vocab_size == model.bert.embeddings.word.num_embeddings == cfg["vocab_size"]
    # the model's vocabulary is the one shipped in vocab/
    assert (MODEL / "vocab.txt").read_text(encoding="utf-8") == (ROOT / "vocab" / "zh.txt").read_text(encoding="utf-8")


def test_shipped_model_matches_transformers():
    transformers = pytest.importorskip("transformers")
    ref = transformers.AutoModelForMaskedLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(MODEL)
    ours = BertForMaskedLM.from_pretrained(MODEL).eval()
    texts = ["三国人物诸葛[MASK]", "今天天气很好，我们去公园散步。", "这家酒店的服务[MASK]好"]
    enc = hf_tok(texts, padding=True, return_tensors="pt")
    assert enc["input_ids"].tolist() == Tokenizer.from_pretrained(MODEL)(texts)["input_ids"].tolist()
    with torch.no_grad():
        r = ref(**enc).logits
        o = ours(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).logits
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(o[real], r[real], atol=1e-4, rtol=0)


# Completions checked by hand once and pinned: each must be in the shipped model's top 5. The model
# is weak (14% held-out masked-token accuracy, see README), so this is the one common phrase it
# completes; "经济发[MASK]" -> 展 or "服务很[MASK]" -> 好 are not in its top 5.
COMMON = [
    ("中华人民共和[MASK]", "国"),
]


@pytest.mark.parametrize("text,expected", COMMON)
def test_shipped_model_completes_common_phrases(text, expected):
    fill = FillMask.from_pretrained(MODEL, device="cpu")
    top5 = [c.token for c in fill(text)[0].masks[0].candidates]
    assert expected in top5, top5


def test_three_kingdoms_example_is_all_in_vocabulary():
    tok = Tokenizer.from_pretrained(MODEL)
    texts = read_texts(ROOT / "examples" / "three_kingdoms.json")
    assert len(texts) >= 40 and sum("诸葛涛" in t for t in texts) >= 30
    for t in texts:
        assert tok.unk_token_id not in tok.encode(t).ids, t


def test_demo_cloze_fine_tuning_end_to_end(tmp_path):
    """The default job as a user runs it: 涛 is not the top completion before fine-tuning and is after."""
    before = run("predict.py", "--model", str(MODEL), "--json", QUERY)
    assert before.returncode == 0, before.stderr
    top_before = json.loads(before.stdout)["masks"][0]["candidates"][0]["token"]
    assert top_before != "涛"

    out = tmp_path / "three_kingdoms"
    trained = run(str(ROOT / "train.py"), "--output", str(out), "--no-progress", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "saved the model to" in trained.stdout

    after = run("predict.py", "--model", str(out), "--json", QUERY)
    assert after.returncode == 0, after.stderr
    top_after = json.loads(after.stdout)["masks"][0]["candidates"][0]
    assert top_after["token"] == "涛", after.stdout
