"""train.py and predict.py as a user sees them: exit status, stdout and stderr.

The contract for bad input: exit status 2, exactly one line on stderr (besides "warning:"/"note:"
lines) that names the file, line or key at fault, never a traceback, and nothing already written is
changed. Most cases call the commands in this process (`call`, in the user's folder, stdout and
stderr captured): a subprocess would add only an interpreter start. A few run the scripts as a
user does (`run`): a training run, a prediction, one bad input each, Ctrl-C, the console scripts.
Models are the tiny preset over vocab/zh.txt trained for a few steps, so no test downloads
anything or needs a GPU.
"""

from __future__ import annotations

import dataclasses
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
from conftest import CORPUS, PREDICT, ROOT, TINY_ARGS, TRAIN, Result, call, run, write_jsonl

from minibert import cli
from minibert.tasks import TASKS
from minibert.trainer import TrainConfig

TINY = TINY_ARGS
QUERY = "三国人物诸葛[MASK]"
LONG = "好" * 200  # 200 tokens, more than the tiny preset's 128 positions


def error_line(proc: Result | subprocess.CompletedProcess) -> str:
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
def mlm(work) -> tuple[Result, Path]:
    """A real tiny fill-mask model folder, 3 steps of training."""
    proc = call(TRAIN, *TINY, "--train", "corpus.jsonl", "--output", "mlm", "--max-steps", "3", "--log-every", "1",
                cwd=work)
    assert proc.returncode == 0, proc.stderr
    return proc, work / "mlm"


@pytest.fixture(scope="module")
def clf(work) -> tuple[Result, Path]:
    """A tiny classifier of 好 vs 坏 with 10% of the 40 training lines held out."""
    proc = call(TRAIN, "--task", "classify", *TINY, "--train", "reviews.jsonl", "--eval-split", "0.1",
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
])
def test_broken_model_folder(work, mlm, script, case, expected):
    folder = f"broken-{case.replace(' ', '-')}-{script}"
    _break_model(case, mlm[1], work / folder)
    if script == PREDICT:
        proc = call(PREDICT, "--model", folder, QUERY, cwd=work)
    else:
        proc = call(TRAIN, "--model", folder, "--train", "corpus.jsonl", "--output", folder + "-out",
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
    proc = call(TRAIN, *TINY, "--train", name, "--output", out, "--max-steps", "1", cwd=work)
    assert_names(error_line(proc), *expected)
    assert not (work / out).exists()


@pytest.mark.slow
def test_scripts_exit_2_with_one_line_for_bad_input(work, mlm):
    """What the in-process tests cannot show: the exit status and stderr of the real processes."""
    (work / "gbk.txt").write_bytes("好\n".encode() + "坏\n".encode("gbk"))
    train = run(TRAIN, *TINY, "--train", "gbk.txt", "--output", "out-gbk", "--max-steps", "1", cwd=work)
    assert_names(error_line(train), "minibert-train: error:", "gbk.txt:2", "UTF-8")
    assert not (work / "out-gbk").exists()
    predict = run(PREDICT, "--model", "no-such-model", QUERY, cwd=work)
    assert_names(error_line(predict), "minibert-predict: error:", "no-such-model", "not found")


@pytest.mark.parametrize("script", [TRAIN, PREDICT])
def test_eval_label_unseen_in_training(work, clf, script):
    if script == TRAIN:
        proc = call(TRAIN, "--task", "classify", *TINY, "--train", "reviews.jsonl", "--eval", "unseen_label.jsonl",
                    "--output", "out-unseen", "--max-steps", "1", cwd=work)
        assert not (work / "out-unseen").exists()
    else:
        proc = call(PREDICT, "--model", "clf", "--eval", "unseen_label.jsonl", cwd=work)
    assert_names(error_line(proc), "unseen_label.jsonl:2", "'meh'")


# ------------------------------------------------------------------------------------- fill-mask input


def test_text_without_mask(work, mlm):
    assert_names(error_line(call(PREDICT, "--model", "mlm", "三国人物", cwd=work)), "text 1", "[MASK]")


def test_long_text_truncated_with_warning_when_the_mask_survives(work, mlm):
    # --batch-size 1: the long text is in the second batch, and must still be called text 2
    proc = call(PREDICT, "--model", "mlm", "--batch-size", "1", QUERY, "[MASK]" + LONG, cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "warning: text 2 was truncated to 128 tokens" in proc.stderr.splitlines()
    assert proc.stdout.count("filled:") == 2


def test_long_text_is_an_error_when_truncation_cuts_the_mask(work, mlm):
    proc = call(PREDICT, "--model", "mlm", "--batch-size", "1", QUERY, LONG + "[MASK]", cwd=work)
    assert_names(error_line(proc), "text 2", "128 positions", "[MASK]")


def test_target_not_in_vocabulary(work, mlm):
    proc = call(PREDICT, "--model", "mlm", "--targets", "亮,notatoken", QUERY, cwd=work)
    assert_names(error_line(proc), "'notatoken'", "vocabulary")


def test_classify_with_a_fill_mask_model(work, mlm):
    proc = call(PREDICT, "--model", "mlm", "--task", "classify", "好", cwd=work)
    assert_names(error_line(proc), "mlm", "not a classification model", "--task classify")


def test_texts_file_not_utf8(work, mlm):
    (work / "queries.txt").write_bytes(f"{QUERY}\n".encode() + "坏[MASK]\n".encode("gbk"))
    proc = call(PREDICT, "--model", "mlm", "--file", "queries.txt", cwd=work)
    assert_names(error_line(proc), "queries.txt:2", "not valid UTF-8")


# ------------------------------------------------------------------------------------- flags


@pytest.mark.parametrize("script", [TRAIN, PREDICT])
def test_unknown_task(work, script):
    proc = call(script, "--task", "foo", cwd=work)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "invalid choice: 'foo'" in proc.stderr.splitlines()[-1]


@pytest.mark.parametrize("script, flags, expected", [
    (TRAIN, ["--log-every", "0"], ["--log-every 0"]),
    (TRAIN, ["--keep-checkpoints", "0"], ["--keep-checkpoints 0"]),
    (TRAIN, ["--device", "gpu"], ["--device gpu", "not a device"]),
    (TRAIN, ["--eval-split", "1.5"], ["--eval-split 1.5"]),
    (TRAIN, ["--pack", "--group-texts"], ["--pack", "--group-texts"]),
    (TRAIN, ["--pack", "--task", "classify"], ["--pack", "--task mlm"]),
    (PREDICT, ["--batch-size", "0"], ["--batch-size"]),
    (PREDICT, ["--device", "gpu"], ["--device gpu"]),
    # model selection
    (TRAIN, ["--metric", "macro_f1", "--eval-split", "0.2"],
     ["--metric macro_f1", "--task mlm", "accuracy, eval_loss, perplexity"]),
    (TRAIN, ["--metric", "accuracy"], ["--metric accuracy", "--eval FILE"]),
    (TRAIN, ["--patience", "2", "--eval-every", "1"], ["--patience 2", "--eval FILE"]),
    (TRAIN, ["--patience", "2", "--eval-split", "0.2"], ["--patience 2", "--eval-every"]),
    (TRAIN, ["--patience", "-1"], ["--patience -1", "at least 0"]),
    (TRAIN, ["--bf16-weights", "--precision", "fp32"], ["--bf16-weights", "--precision bf16"]),
    (PREDICT, ["--eval", "corpus.jsonl", "--confusion-png", "c.png"], ["--confusion-png", "classification"]),
])
def test_bad_flag_value(work, mlm, script, flags, expected):
    if script == TRAIN:
        proc = call(TRAIN, *TINY, "--train", "corpus.jsonl", "--output", "out-flags", "--max-steps", "1", *flags,
                    cwd=work)
        assert not (work / "out-flags").exists()
    else:
        proc = call(PREDICT, "--model", "mlm", *flags, QUERY, cwd=work)
    assert_names(error_line(proc), *expected)


# ------------------------------------------------------------------------------------- output folder


@pytest.mark.parametrize("resume", [False, True])
def test_output_holding_a_model_needs_overwrite(work, mlm, resume):
    # --resume with no checkpoint would start from step 0: it must not replace the finished model either
    out = work / f"finished-{resume}"
    shutil.copytree(mlm[1], out)
    before = file_hashes(out)
    proc = call(TRAIN, *TINY, "--train", "corpus.jsonl", "--output", out.name, "--max-steps", "1",
                *(["--resume"] if resume else []), cwd=work)
    assert_names(error_line(proc), out.name, "--overwrite")
    assert file_hashes(out) == before


@pytest.mark.parametrize("path", ["mlm", "no-such-checkpoint"])
def test_resume_from_something_that_is_not_a_checkpoint(work, mlm, path):
    proc = call(TRAIN, *TINY, "--train", "corpus.jsonl", "--output", "out-resume", "--max-steps", "1",
                "--resume", path, cwd=work)
    assert_names(error_line(proc), f"--resume {path}", "trainer_state.pt")
    assert not (work / "out-resume").exists()


# ------------------------------------------------------------------------------------- declared once

# train.py's flags that are no field of TrainConfig or of a task: where the model and the data come
# from, the run's dropout, and what to do with an output folder that holds a model.
CLI_ONLY = {"task", "model", "config", "vocab", "dropout", "dropout_in_config", "train", "eval", "eval_split",
            "overwrite", "resume"}
# Flags whose default depends on the job (the default job, from scratch, mlm or classify), and
# --max-length, whose TrainConfig field records the length the run used.
JOB_DEFAULTS = {"output", "epochs", "batch_size", "lr", "max_length"}


def test_flags_are_the_config_fields():
    parser = cli.train_parser()
    flags = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}
    fields = {f.name: f for cls in (TrainConfig, *TASKS.values()) for f in dataclasses.fields(cls) if f.init}
    assert set(flags) - CLI_ONLY == set(fields), "a field without a flag, or a flag without a field"
    assert not CLI_ONLY & set(fields)
    for name, f in fields.items():
        assert f.metadata.get("help"), f"{name} has no help text next to its field"
        if name not in JOB_DEFAULTS:
            assert flags[name].default == f.default, name
    for task in TASKS.values():  # an option two tasks share must mean the same in both
        for f in dataclasses.fields(task):
            if f.init:
                assert (f.default, f.metadata["help"]) == (fields[f.name].default, fields[f.name].metadata["help"])


def test_train_args_json_holds_the_resolved_settings(work, mlm):
    settings = json.loads((mlm[1] / "train_args.json").read_text(encoding="utf-8"))
    dests = {a.dest for a in cli.train_parser()._actions if a.option_strings and a.dest != "help"}
    assert dests <= set(settings)
    # the job's defaults filled in: from scratch (lr 1e-3), not the default job (3 epochs of batch 32)
    assert settings["lr"] == cli.train.SCRATCH_LR and settings["epochs"] == 3 and settings["batch_size"] == 32
    assert settings["task"] == "mlm" and settings["max_steps"] == 3 and settings["max_length"] == 128
    assert settings["train"] == "corpus.jsonl" and settings["output"] == "mlm" and settings["progress"] is False
    assert settings["vocab"] == str(ROOT / "vocab" / "zh.txt") and settings["adam_betas"] == [0.9, 0.999]


def test_help_lists_every_flag(work):
    for script, parser in ((TRAIN, cli.train_parser()), (PREDICT, cli.predict_parser())):
        proc = call(script, "--help", cwd=work)
        assert proc.returncode == 0, proc.stderr
        flags = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
        assert len(flags) > 5
        for flag in flags:
            assert flag in proc.stdout, f"{script}.py --help does not mention {flag}"


@pytest.mark.slow
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


# ------------------------------------------------------------------------------------- what works


def test_train_prints_settings_and_where_the_model_went(work, mlm):
    proc, folder = mlm
    out = proc.stdout
    assert_names(out, "model:", "new tiny model", "BertForMaskedLM", "data:", "corpus.jsonl", f"{len(CORPUS)} examples",
                 "training:", "3 steps", "hardware:", "precision", "output:", "saved the model to mlm after 3 steps")
    assert re.search(r"^hardware:\s+(cpu|cuda\S*), precision (fp32|bf16|fp16)", out, re.M), out
    assert {"config.json", "model.safetensors", "vocab.txt", "train_args.json"} <= {p.name for p in folder.iterdir()}


@pytest.mark.slow
def test_scripts_train_then_fill_mask_json(work):
    """`python train.py`, then `python predict.py --json` on the model it saved, as separate processes."""
    trained = run(TRAIN, *TINY, "--train", "corpus.jsonl", "--output", "by-script", "--max-steps", "2", cwd=work)
    assert trained.returncode == 0, trained.stderr
    assert_names(trained.stdout, "saved the model to by-script after 2 steps")
    proc = run(PREDICT, "--model", "by-script", "--json", "--top-k", "3", QUERY, "[MASK][MASK]亮", cwd=work)
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
    ev = call(PREDICT, "--model", "clf", "--eval", "reviews_test.jsonl", "--json", cwd=work)
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(ev.stdout)
    assert metrics["examples"] == 20 and metrics["accuracy"] >= 0.9, metrics
    every = call(PREDICT, "--model", "clf", "--all", "好好好", "坏坏坏坏", cwd=work)
    assert every.returncode == 0, every.stderr
    scores = [line for line in every.stdout.splitlines() if line.startswith("  ")]
    assert len(scores) == 2 and all(re.search(r"bad \d\.\d{4}\s+good \d\.\d{4}", s) for s in scores), every.stdout


def test_pack_trains_on_packed_rows(work):
    proc = call(TRAIN, *TINY, "--train", "corpus.jsonl", "--output", "packed", "--max-steps", "2", "--pack",
                "--eval-split", "0.2", cwd=work)
    assert proc.returncode == 0, proc.stderr
    # 5 lines, 1 held out: the other 4 (9 to 10 tokens each) fit one 128-token row
    assert_names(proc.stdout, "corpus.jsonl: 1 examples", "4 sequences packed into 1 rows", "eval: 1 examples",
                 "saved the model to packed after 2 steps")
    assert json.loads((work / "packed" / "train_args.json").read_text(encoding="utf-8"))["pack"] is True


@pytest.mark.slow
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_a_checkpoint_that_resume_continues(work, sig, status):
    """Ctrl-C and SIGTERM (timeout, schedulers, container stops): a checkpoint, one line, 128 + signal.
    While the run goes on, a second run on the same --output is refused at once, naming the first."""
    out = f"interrupted-{sig.name}"
    args = [*TINY, "--train", "corpus.jsonl", "--output", out, "--save-every", "1000000",
            "--log-every", "1"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, "--max-steps", "1000000"], cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = work / out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    try:
        while not (metrics.is_file() and metrics.stat().st_size > 0):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no log line within 120 s"
            time.sleep(0.05)
        second = call(TRAIN, *args, "--max-steps", "5", "--resume", cwd=work)
        assert re.fullmatch(rf"minibert-train: error: {out}: another run \(process {proc.pid}, started "
                            r"[-0-9: ]+\) is writing this folder; wait for it to finish, stop it, or choose "
                            r"another --output", error_line(second))
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    shown = f"\nstdout:\n{stdout}\nstderr:\n{stderr}"
    assert proc.returncode == status, shown
    assert not (work / out / ".minibert.lock").exists(), shown  # released on the way out
    assert "Traceback" not in stderr, shown
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(("warning:", "note:"))]
    assert len(lines) == 1, shown
    found = re.search(r"checkpoint saved to (\S*checkpoint-(\d+))", lines[0])
    assert found, shown
    step = int(found.group(2))
    checkpoint = work / out / f"checkpoint-{step}"
    assert (checkpoint / "trainer_state.pt").is_file() and (checkpoint / "model.safetensors").is_file()
    assert os.path.samefile(work / found.group(1), checkpoint)

    resumed = call(TRAIN, *args, "--max-steps", str(step + 2), "--resume", cwd=work)
    assert resumed.returncode == 0, resumed.stderr
    assert_names(resumed.stdout, f"resumed from {Path(out) / f'checkpoint-{step}'} at step {step}",
                 f"saved the model to {out} after {step + 2} steps")


# ------------------------------------------------------------------------------------- evaluation reports


def test_classify_eval_prints_the_report_and_the_confusion_matrix(work, clf):
    proc = call(PREDICT, "--model", "clf", "--eval", "reviews_test.jsonl", cwd=work)
    assert proc.returncode == 0, proc.stderr
    as_json = call(PREDICT, "--model", "clf", "--eval", "reviews_test.jsonl", "--json", cwd=work)
    m = json.loads(as_json.stdout)
    assert m["labels"] == ["bad", "good"] and list(m["report"]) == ["bad", "good"]
    assert [r["support"] for r in m["report"].values()] == [10, 10]  # reviews(20): 10 of each
    assert sum(map(sum, m["confusion"])) == 20 and [sum(row) for row in m["confusion"]] == [10, 10]
    (bad_bad, bad_good), (good_bad, good_good) = m["confusion"]
    assert m["report"]["good"]["recall"] == good_good / 10 and m["accuracy"] == (bad_bad + good_good) / 20
    lines = proc.stdout.splitlines()
    assert lines[0] == (f"reviews_test.jsonl: 20 examples, accuracy {m['accuracy']:.4f}, "
                        f"macro-F1 {m['macro_f1']:.4f}")
    assert lines[1] == "label  precision  recall      f1  support"
    for line, (name, r) in zip(lines[2:4], m["report"].items(), strict=True):
        assert line.split() == [name, f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}",
                                str(r["support"])]
    assert lines[5] == "confusion matrix (rows: true label, columns: predicted)"
    assert [line.split() for line in lines[6:9]] == [["bad", "good"], ["bad", str(bad_bad), str(bad_good)],
                                                     ["good", str(good_bad), str(good_good)]]


def test_training_records_the_report_and_names_the_best_step(work, clf):
    proc, folder = clf
    evals = [line for line in proc.stdout.splitlines() if line.startswith(("eval @ step", "final eval:"))]
    assert len(evals) >= 2 and all("report" not in line and "confusion" not in line and "labels" not in line
                                   for line in evals)  # one line each, the summary numbers only
    assert_names(proc.stdout, "best:      step 60, accuracy", "stopped:   reached the last step (60)")
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    ev = [r["eval"] for r in records if "eval" in r][-1]
    assert set(ev["report"]) == {"bad", "good"} and sum(map(sum, ev["confusion"])) == 4  # the 4 held out
    assert records[-1]["summary"]["best_step"] == 60 and records[-1]["summary"]["metric"] == "accuracy"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "curves.png skipped" in proc.stdout
    else:
        data = (folder / "curves.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_eval_every_epoch_and_metric_flags(work):
    # 36 training lines in batches of 8: 5 steps an epoch
    proc = call(TRAIN, "--task", "classify", *TINY, "--train", "reviews.jsonl", "--eval-split", "0.1",
                "--output", "clf-epochs", "--epochs", "2", "--batch-size", "8", "--eval-every", "epoch",
                "--metric", "macro_f1", "--no-plot", cwd=work)
    assert proc.returncode == 0, proc.stderr
    steps = [line.split(":")[0] for line in proc.stdout.splitlines() if line.startswith("eval @ step")]
    assert steps == ["eval @ step 5", "eval @ step 10"]
    best = r"^best:      step (5|10), macro_f1 \d\.\d{4} \(clf-epochs/best\)$"
    assert re.search(best, proc.stdout, re.M), proc.stdout
    assert not (work / "clf-epochs" / "curves.png").exists()


def test_confusion_png(work, clf, monkeypatch):
    pytest.importorskip("matplotlib")
    proc = call(PREDICT, "--model", "clf", "--eval", "reviews_test.jsonl", "--confusion-png", "confusion.png",
                cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "wrote confusion.png"
    data = (work / "confusion.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the extra were not installed
    proc = call(PREDICT, "--model", "clf", "--eval", "reviews_test.jsonl", "--confusion-png", "none.png", cwd=work)
    assert_names(error_line(proc), "--confusion-png needs matplotlib", "pip install 'minibert[plot]'")
    assert not (work / "none.png").exists()


