"""train.py and predict.py run as a user runs them: subprocesses, exit status, stdout and stderr.

The contract for bad input: exit status 2, exactly one line on stderr (besides "warning:"/"note:"
lines) that names the file, line or key at fault, never a traceback, and nothing already written is
changed. Models are the tiny preset over vocab/zh.txt trained for a few steps, so no test downloads
anything or needs a GPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TRAIN, PREDICT = "train", "predict"  # the scripts at the repository root
TINY = ["--config", "tiny", "--vocab", str(ROOT / "vocab" / "zh.txt"), "--no-progress"]
QUERY = "三国人物诸葛[MASK]"
LONG = "好" * 200  # 200 tokens, more than the tiny preset's 128 positions
CORPUS = ["三国人物诸葛亮", "刘备关羽张飞", "曹操孙权周瑜", "诸葛亮草船借箭", "关羽过五关斩六将"]


def run(script: str, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / f"{script}.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one error line of a failed run, after checking the contract."""
    shown = f"\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 2, shown
    assert "Traceback" not in proc.stderr, shown
    lines = [line for line in proc.stderr.splitlines()
             if line.strip() and not line.startswith(("warning:", "note:"))]
    assert len(lines) == 1, shown
    return lines[0]


def assert_names(line: str, *parts: str) -> None:
    for part in parts:
        assert part in line, f"{part!r} not in {line!r}"


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def reviews(n: int, seed: int) -> list[dict]:
    """Two classes no model can miss: texts of only 好 (good) or only 坏 (bad), 2 to 12 characters."""
    import random

    rng = random.Random(seed)
    return [{"text": ("好" if i % 2 == 0 else "坏") * rng.randint(2, 12), "label": "good" if i % 2 == 0 else "bad"}
            for i in range(n)]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The user's current folder: data files and outputs, relative paths as a user writes them."""
    work = tmp_path_factory.mktemp("cli")
    write_jsonl(work / "corpus.jsonl", [{"text": t} for t in CORPUS])
    write_jsonl(work / "reviews.jsonl", reviews(40, seed=0))
    write_jsonl(work / "reviews_test.jsonl", reviews(20, seed=1))
    write_jsonl(work / "unseen_label.jsonl", [{"text": "好好好", "label": "good"}, {"text": "坏坏", "label": "meh"}])
    return work


@pytest.fixture(scope="module")
def mlm(work) -> tuple[subprocess.CompletedProcess, Path]:
    """A real tiny fill-mask model folder, 3 steps of training."""
    proc = run(TRAIN, *TINY, "--train", "corpus.jsonl", "--output", "mlm", "--max-steps", "3", "--log-every", "1",
               cwd=work)
    assert proc.returncode == 0, proc.stderr
    return proc, work / "mlm"


@pytest.fixture(scope="module")
def clf(work) -> tuple[subprocess.CompletedProcess, Path]:
    """A tiny classifier of 好 vs 坏 with 10% of the 40 training lines held out."""
    proc = run(TRAIN, "--task", "classify", *TINY, "--train", "reviews.jsonl", "--eval-split", "0.1",
               "--output", "clf", "--max-steps", "60", "--batch-size", "8", cwd=work)
    assert proc.returncode == 0, proc.stderr
    return proc, work / "clf"


# ------------------------------------------------------------------------------------- model folders


def _break_model(case: str, src: Path, dst: Path) -> None:
    if case == "missing":
        return
    shutil.copytree(src, dst)
    if case == "no config":
        (dst / "config.json").unlink()
    elif case == "no weights":
        (dst / "model.safetensors").unlink()
    elif case == "no vocab":
        (dst / "vocab.txt").unlink()
        (dst / "tokenizer.json").unlink()
    elif case == "config not JSON":
        lines = (dst / "config.json").read_text(encoding="utf-8").splitlines()
        lines[2] = '  "hidden_size" 64,'  # the colon is missing on line 3
        (dst / "config.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif case == "weights do not match":
        cfg = json.loads((dst / "config.json").read_text(encoding="utf-8"))
        cfg["intermediate_size"] = 96  # the weights hold 128
        (dst / "config.json").write_text(json.dumps(cfg), encoding="utf-8")


@pytest.mark.parametrize("script, case, expected", [
    (PREDICT, "missing", ["not found"]),
    (PREDICT, "no config", ["config.json"]),
    (PREDICT, "no weights", ["model.safetensors"]),
    (PREDICT, "no vocab", ["vocab.txt"]),
    (PREDICT, "config not JSON", ["config.json:3", "not valid JSON"]),
    (PREDICT, "weights do not match", ["intermediate.dense", "config.json"]),
    (TRAIN, "missing", ["not found"]),
    (TRAIN, "weights do not match", ["intermediate.dense", "config.json"]),
], ids=lambda v: Path(v).stem if isinstance(v, str) and v.endswith(".py") else None)
def test_broken_model_folder(work, mlm, script, case, expected):
    folder = f"broken-{case.replace(' ', '-')}-{script}"
    _break_model(case, mlm[1], work / folder)
    if script == PREDICT:
        proc = run(PREDICT, "--model", folder, QUERY, cwd=work)
    else:
        proc = run(TRAIN, "--model", folder, "--train", "corpus.jsonl", "--output", folder + "-out",
                   "--max-steps", "1", "--no-progress", cwd=work)
        assert not (work / (folder + "-out")).exists()
    assert_names(error_line(proc), folder, *expected)


# ------------------------------------------------------------------------------------- training data


@pytest.mark.parametrize("name, content, expected", [
    ("missing.jsonl", None, ["missing.jsonl", "not found"]),
    ("empty.jsonl", b"", ["empty.jsonl", "empty"]),
    ("malformed.jsonl", '{"text": "好"}\n{"text": "坏"\n'.encode(), ["malformed.jsonl:2", "JSON"]),
    ("no_text.jsonl", '{"text": "好"}\n{"txt": "坏"}\n'.encode(), ["no_text.jsonl:2", "'text'"]),
    ("gbk.jsonl", '{"text": "好"}\n'.encode() + '{"text": "坏"}\n'.encode("gbk"), ["gbk.jsonl:2", "UTF-8"]),
], ids=["missing", "empty", "malformed", "no-text-field", "not-utf8"])
def test_bad_training_file(work, name, content, expected):
    if content is not None:
        (work / name).write_bytes(content)
    out = "out-" + name.replace(".", "-")
    proc = run(TRAIN, *TINY, "--train", name, "--output", out, "--max-steps", "1", cwd=work)
    assert_names(error_line(proc), *expected)
    assert not (work / out).exists()


@pytest.mark.parametrize("script", [TRAIN, PREDICT])
def test_eval_label_unseen_in_training(work, clf, script):
    if script == TRAIN:
        proc = run(TRAIN, "--task", "classify", *TINY, "--train", "reviews.jsonl", "--eval", "unseen_label.jsonl",
                   "--output", "out-unseen", "--max-steps", "1", cwd=work)
        assert not (work / "out-unseen").exists()
    else:
        proc = run(PREDICT, "--model", "clf", "--eval", "unseen_label.jsonl", cwd=work)
    assert_names(error_line(proc), "unseen_label.jsonl:2", "'meh'")


# ------------------------------------------------------------------------------------- fill-mask input


def test_text_without_mask(work, mlm):
    assert_names(error_line(run(PREDICT, "--model", "mlm", "三国人物", cwd=work)), "text 1", "[MASK]")


def test_long_text_truncated_with_warning_when_the_mask_survives(work, mlm):
    # --batch-size 1: the long text is in the second batch, and must still be called text 2
    proc = run(PREDICT, "--model", "mlm", "--batch-size", "1", QUERY, "[MASK]" + LONG, cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "warning: text 2 was truncated to 128 tokens" in proc.stderr.splitlines()
    assert proc.stdout.count("filled:") == 2


def test_long_text_is_an_error_when_truncation_cuts_the_mask(work, mlm):
    proc = run(PREDICT, "--model", "mlm", "--batch-size", "1", QUERY, LONG + "[MASK]", cwd=work)
    assert_names(error_line(proc), "text 2", "128 positions", "[MASK]")


def test_target_not_in_vocabulary(work, mlm):
    proc = run(PREDICT, "--model", "mlm", "--targets", "亮,notatoken", QUERY, cwd=work)
    assert_names(error_line(proc), "'notatoken'", "vocabulary")


def test_classify_with_a_fill_mask_model(work, mlm):
    proc = run(PREDICT, "--model", "mlm", "--task", "classify", "好", cwd=work)
    assert_names(error_line(proc), "mlm", "not a classification model", "--task classify")


# ------------------------------------------------------------------------------------- flags


@pytest.mark.parametrize("script", [TRAIN, PREDICT])
def test_unknown_task(work, script):
    proc = run(script, "--task", "foo", cwd=work)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "invalid choice: 'foo'" in proc.stderr.splitlines()[-1]


@pytest.mark.parametrize("script, flags, expected", [
    (TRAIN, ["--log-every", "0"], ["--log-every 0"]),
    (TRAIN, ["--keep-checkpoints", "0"], ["--keep-checkpoints 0"]),
    (PREDICT, ["--batch-size", "0"], ["--batch-size"]),
    (PREDICT, ["--device", "gpu"], ["--device gpu"]),
])
def test_bad_flag_value(work, mlm, script, flags, expected):
    if script == TRAIN:
        proc = run(TRAIN, *TINY, "--train", "corpus.jsonl", "--output", "out-flags", "--max-steps", "1", *flags,
                   cwd=work)
        assert not (work / "out-flags").exists()
    else:
        proc = run(PREDICT, "--model", "mlm", *flags, QUERY, cwd=work)
    assert_names(error_line(proc), *expected)


# ------------------------------------------------------------------------------------- output folder


@pytest.mark.parametrize("resume", [False, True])
def test_output_holding_a_model_needs_overwrite(work, mlm, resume):
    # --resume with no checkpoint would start from step 0: it must not replace the finished model either
    out = work / f"finished-{resume}"
    shutil.copytree(mlm[1], out)
    before = file_hashes(out)
    proc = run(TRAIN, *TINY, "--train", "corpus.jsonl", "--output", out.name, "--max-steps", "1",
               *(["--resume"] if resume else []), cwd=work)
    assert_names(error_line(proc), out.name, "--overwrite")
    assert file_hashes(out) == before


@pytest.mark.parametrize("path", ["mlm", "no-such-checkpoint"])
def test_resume_from_something_that_is_not_a_checkpoint(work, mlm, path):
    proc = run(TRAIN, *TINY, "--train", "corpus.jsonl", "--output", "out-resume", "--max-steps", "1",
               "--resume", path, cwd=work)
    assert_names(error_line(proc), f"--resume {path}", "trainer_state.pt")
    assert not (work / "out-resume").exists()


# ------------------------------------------------------------------------------------- what works


def test_help_lists_every_flag(work):
    from minibert.cli import predict_parser, train_parser

    for script, parser in ((TRAIN, train_parser()), (PREDICT, predict_parser())):
        proc = run(script, "--help", cwd=work)
        assert proc.returncode == 0, proc.stderr
        flags = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
        assert len(flags) > 5
        for flag in flags:
            assert flag in proc.stdout, f"{script}.py --help does not mention {flag}"


@pytest.mark.parametrize("name, args", [("minibert-train", ["--help"]), ("minibert-predict", ["--model", "nope"])])
def test_console_scripts(work, name, args):
    script = Path(sys.executable).parent / name
    if not script.is_file():
        pytest.skip(f"{name} is not installed next to {sys.executable} (pip install -e .)")
    proc = subprocess.run([str(script), *args], cwd=work, capture_output=True, text=True, timeout=300)
    if args == ["--help"]:
        assert proc.returncode == 0 and "--task" in proc.stdout, proc.stderr
    else:
        assert_names(error_line(proc), "minibert-predict: error:", "nope", "not found")


def test_train_prints_settings_and_where_the_model_went(work, mlm):
    proc, folder = mlm
    out = proc.stdout
    assert_names(out, "model:", "new tiny model", "BertForMaskedLM", "data:", "corpus.jsonl", f"{len(CORPUS)} examples",
                 "training:", "3 steps", "hardware:", "precision", "output:", "saved the model to mlm after 3 steps")
    assert re.search(r"^hardware:\s+(cpu|cuda\S*), precision (fp32|bf16|fp16)", out, re.M), out
    assert {"config.json", "model.safetensors", "vocab.txt"} <= {p.name for p in folder.iterdir()}


def test_fill_mask_json(work, mlm):
    proc = run(PREDICT, "--model", "mlm", "--json", "--top-k", "3", QUERY, "[MASK][MASK]亮", cwd=work)
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["text"] for r in results] == [QUERY, "[MASK][MASK]亮"]
    assert [len(r["masks"]) for r in results] == [1, 2]
    for r in results:
        assert "[MASK]" not in r["filled"]
        for m in r["masks"]:
            scores = [c["score"] for c in m["candidates"]]
            assert len(scores) == 3 and all(0 <= s <= 1 for s in scores) and scores == sorted(scores, reverse=True)
            assert all(isinstance(c["token"], str) and c["token"] for c in m["candidates"])


def test_classify_round_trip(work, clf):
    proc, _ = clf
    # --eval-split 0.1 of 40 lines: 36 to train on, 4 held out, and the labels read from the file
    assert_names(proc.stdout, "reviews.jsonl: 36 examples", "labels: bad, good", "eval: 4 examples",
                 "saved the model to clf after 60 steps")
    ev = run(PREDICT, "--model", "clf", "--eval", "reviews_test.jsonl", "--json", cwd=work)
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(ev.stdout)
    assert metrics["examples"] == 20 and metrics["accuracy"] >= 0.9, metrics
    every = run(PREDICT, "--model", "clf", "--all", "好好好", "坏坏坏坏", cwd=work)
    assert every.returncode == 0, every.stderr
    scores = [line for line in every.stdout.splitlines() if line.startswith("  ")]
    assert len(scores) == 2 and all(re.search(r"bad \d\.\d{4}\s+good \d\.\d{4}", s) for s in scores), every.stdout


def test_ctrl_c_saves_a_checkpoint_that_resume_continues(work):
    args = [*TINY, "--train", "corpus.jsonl", "--output", "interrupted", "--save-every", "1000000",
            "--log-every", "1"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, "--max-steps", "1000000"], cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = work / "interrupted" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    try:
        while not (metrics.is_file() and metrics.stat().st_size > 0):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no log line within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    shown = f"\nstdout:\n{stdout}\nstderr:\n{stderr}"
    assert proc.returncode == 130, shown
    assert "Traceback" not in stderr, shown
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(("warning:", "note:"))]
    assert len(lines) == 1, shown
    found = re.search(r"checkpoint saved to (\S*checkpoint-(\d+))", lines[0])
    assert found, shown
    step = int(found.group(2))
    checkpoint = work / "interrupted" / f"checkpoint-{step}"
    assert (checkpoint / "trainer_state.pt").is_file() and (checkpoint / "model.safetensors").is_file()
    assert os.path.samefile(work / found.group(1), checkpoint)

    resumed = run(TRAIN, *args, "--max-steps", str(step + 2), "--resume", cwd=work)
    assert resumed.returncode == 0, resumed.stderr
    assert_names(resumed.stdout, f"resumed from {Path('interrupted') / f'checkpoint-{step}'} at step {step}",
                 f"saved the model to interrupted after {step + 2} steps")
