"""predict.py on files, and where models come from and what train.py leaves next to them.

--file in every format (.txt, .jsonl, .json, .csv, .tsv, pairs included, gold labels optional) to
--output .jsonl/.csv, checked record by record against the pipelines called directly; a failed run
leaves no file behind and the previous one intact. --model NAME found in a fake Hugging Face cache.
The model card train.py writes. The one-line error when a `pip install .` lacks the shipped files.
Models are the tiny preset over vocab/zh.txt, trained in this process for a few steps.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import PREDICT, ROOT, TINY_ARGS, TRAIN, call, write_jsonl
from test_cli import assert_names, error_line, file_hashes, reviews

from minibert import FillMask, TextClassifier, cli
from minibert.tasks import FEW_TEXTS

QUERY = "三国人物诸葛[MASK]"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("predict")
    # pairs: the label is the first text's character, whatever the second says
    pairs = [{**r, "text_pair": "好坏"[i % 3 == 0] * (1 + i % 4)} for i, r in enumerate(reviews(40, seed=0))]
    write_jsonl(work / "pairs.jsonl", pairs)
    write_jsonl(work / "corpus.jsonl", [{"text": t} for t in ["三国人物诸葛亮", "刘备关羽张飞", "曹操孙权周瑜"]])
    return work


@pytest.fixture(scope="module")
def clf(work) -> Path:
    proc = call(TRAIN, "--task", "classify", *TINY_ARGS, "--train", "pairs.jsonl", "--eval-split", "0.1",
                "--output", "clf", "--max-steps", "30", "--batch-size", "8", cwd=work)
    assert proc.returncode == 0, proc.stderr
    return work / "clf"


@pytest.fixture(scope="module")
def mlm(work) -> Path:
    proc = call(TRAIN, *TINY_ARGS, "--train", "corpus.jsonl", "--output", "mlm", "--max-steps", "2", cwd=work)
    assert proc.returncode == 0, proc.stderr
    return work / "mlm"


ROWS = [  # (text, pair, gold): gold "" is a row without a label
    ("好好好", "坏", "good"),
    ("坏坏,坏", "好好", "bad"),  # a comma: quoted in the CSV
    ("好好", "", ""),
    ('坏"坏', "坏", "bad"),  # a quote inside a field
]


def _check_classifications(folder: Path, records: list[dict], rows=ROWS) -> None:
    pipe = TextClassifier.from_pretrained(folder, device="cpu")
    direct = pipe([r[0] for r in rows], [r[1] or None for r in rows])
    assert len(records) == len(rows)
    for rec, (text, pair, gold), want in zip(records, rows, direct):
        assert rec["text"] == text and rec.get("text_pair", "") == pair
        assert rec.get("gold", "") == gold
        assert rec["prediction"] == want.label
        assert float(rec["score"]) == pytest.approx(want.score, abs=1e-5)
        for label, p in want.scores.items():
            got = rec["probabilities"][label] if "probabilities" in rec else rec[f"prob_{label}"]
            assert float(got) == pytest.approx(p, abs=1e-5)


def test_csv_file_with_pairs_to_csv(work, clf):
    with open(work / "in.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "sentence", "second", "label"])
        w.writerows([(i, text, pair, gold) for i, (text, pair, gold) in enumerate(ROWS)])
    proc = call(PREDICT, "--model", "clf", "--file", "in.csv", "--text-column", "sentence", "--pair-column", "second",
                "--output", "out/preds.csv", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "wrote 4 predictions to out/preds.csv"
    with open(work / "out" / "preds.csv", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["text", "text_pair", "prediction", "score", "prob_bad", "prob_good", "gold"]
        records = list(reader)
    _check_classifications(clf, records)


def test_jsonl_file_with_pairs_to_jsonl(work, clf):
    records = [{"text": t, **({"text_pair": p} if p else {}), **({"label": g} if g else {})} for t, p, g in ROWS]
    write_jsonl(work / "in.jsonl", records)
    proc = call(PREDICT, "--model", "clf", "--file", "in.jsonl", "--output", "preds.jsonl", cwd=work)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in (work / "preds.jsonl").read_text(encoding="utf-8").splitlines()]
    _check_classifications(clf, out)
    assert set(out[2]) == {"text", "text_pair", "prediction", "score", "probabilities"} - {"text_pair"}
    # the same file printed: a line per text, the pair after a tab
    shown = call(PREDICT, "--model", "clf", "--file", "in.jsonl", cwd=work)
    assert shown.returncode == 0, shown.stderr
    assert re.fullmatch(r"(good|bad)\t\d\.\d{4}\t好好好\t坏", shown.stdout.splitlines()[0])


def test_json_and_tsv_files_without_labels(work, clf):
    texts = ["好好", "坏坏坏"]
    (work / "in.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    (work / "in.tsv").write_text("text\n" + "\n".join(texts) + "\n", encoding="utf-8")
    for name in ("in.json", "in.tsv"):
        proc = call(PREDICT, "--model", "clf", "--file", name, "--output", name + ".jsonl", cwd=work)
        assert proc.returncode == 0, proc.stderr
        out = [json.loads(line) for line in (work / (name + ".jsonl")).read_text(encoding="utf-8").splitlines()]
        _check_classifications(clf, out, [(t, "", "") for t in texts])


def test_txt_file_of_fill_mask_texts(work, mlm):
    texts = [QUERY, "[MASK][MASK]是蜀汉丞相", "刘备[MASK]羽"]
    (work / "queries.txt").write_text("\n".join(texts) + "\n\n", encoding="utf-8")
    for suffix in ("jsonl", "csv"):
        proc = call(PREDICT, "--model", "mlm", "--file", "queries.txt", "--top-k", "3", "--output", f"fill.{suffix}",
                    cwd=work)
        assert proc.returncode == 0, proc.stderr
    direct = FillMask.from_pretrained(mlm, device="cpu")(texts, top_k=3)
    out = [json.loads(line) for line in (work / "fill.jsonl").read_text(encoding="utf-8").splitlines()]
    with open(work / "fill.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(out) == len(rows) == 3
    for rec, row, want in zip(out, rows, direct):
        assert rec["text"] == row["text"] == want.text
        assert rec["prediction"] == rec["filled"] == row["prediction"] == want.filled
        assert "[MASK]" not in rec["filled"] and "gold" not in rec
        assert [[c["token"] for c in m] for m in rec["candidates"]] == [[c.token for c in m.candidates]
                                                                        for m in want.masks]
        assert row["candidates"].count(" | ") == len(want.masks) - 1
        assert row["candidates"].split(" | ")[0].split()[::2] == [c.token for c in want.masks[0].candidates]


def test_word_targets_on_the_command_line(work, mlm):
    text = "三国人物[MASK][MASK][MASK]"
    proc = call(PREDICT, "--model", "mlm", "--targets", "诸葛亮,诸葛涛", text, cwd=work)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "PLL" in x)
    ranking = FillMask.from_pretrained(mlm, device="cpu")(text, targets=["诸葛亮", "诸葛涛"])[0].ranking
    assert line == "  targets by PLL (sum of log-probabilities):  " + "   ".join(
        f"{r.target} {r.score:.4f}" for r in ranking)
    wrong = call(PREDICT, "--model", "mlm", "--targets", "诸葛亮,孔明", text, cwd=work)
    assert_names(error_line(wrong), "'孔明' is 2 tokens", "3 consecutive [MASK]s")
    beam = call(PREDICT, "--model", "mlm", "--beam", "3", text, cwd=work)
    assert beam.returncode == 0, beam.stderr
    assert re.search(r"filled: 三国人物\S{3}   \(chain log-probability -\d+\.\d{4}\)", beam.stdout), beam.stdout
    assert_names(error_line(call(PREDICT, "--model", "mlm", "--beam", "0", text, cwd=work)), "--beam 0")


def test_a_failed_run_leaves_the_previous_output(work, mlm):
    """A text without [MASK] in the third batch: the error, and preds.jsonl as it was, no temporary file."""
    (work / "bad.txt").write_text(f"{QUERY}\n{QUERY}\n三国人物\n", encoding="utf-8")
    (work / "keep").mkdir()
    (work / "keep" / "preds.jsonl").write_text('{"old": true}\n', encoding="utf-8")
    before = file_hashes(work / "keep")
    proc = call(PREDICT, "--model", "mlm", "--file", "bad.txt", "--batch-size", "1", "--output", "keep/preds.jsonl",
                cwd=work)
    assert_names(error_line(proc), "text 3", "[MASK]")
    assert file_hashes(work / "keep") == before


@pytest.mark.parametrize("flags, expected", [
    (["--output", "preds.txt"], ["--output preds.txt", "'.txt'", ".jsonl", ".csv"]),
    (["--file", "texts.xml"], ["--file texts.xml", "'.xml'", ".csv", ".tsv"]),
])
def test_unknown_extensions(work, mlm, flags, expected):
    proc = call(PREDICT, "--model", "mlm", *flags, QUERY, cwd=work)
    assert_names(error_line(proc), *expected)
    assert not (work / "preds.txt").exists()


def test_a_pair_for_a_fill_mask_model(work, mlm):
    write_jsonl(work / "pair_query.jsonl", [{"text": QUERY}, {"text": QUERY, "text_pair": "好"}])
    proc = call(PREDICT, "--model", "mlm", "--file", "pair_query.jsonl", cwd=work)
    assert_names(error_line(proc), "pair_query.jsonl:2", "'text_pair'", "fill-mask")


def test_progress_bar_for_many_texts(work, clf):
    (work / "many.txt").write_text("好\n" * (FEW_TEXTS + 1), encoding="utf-8")
    shown = call(PREDICT, "--model", "clf", "--file", "many.txt", "--output", "many.jsonl", cwd=work)
    assert shown.returncode == 0, shown.stderr
    assert f"{FEW_TEXTS + 1}/{FEW_TEXTS + 1}" in shown.stderr
    quiet = call(PREDICT, "--model", "clf", "--file", "many.txt", "--output", "many.jsonl", "--no-progress", cwd=work)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    (work / "few.json").write_text(json.dumps(["好", "坏"]), encoding="utf-8")
    few = call(PREDICT, "--model", "clf", "--file", "few.json", "--output", "few.jsonl", cwd=work)
    assert few.returncode == 0 and few.stderr == "", few.stderr


def test_progress_bar_for_a_classifier_eval_of_many_texts(work, clf):
    write_jsonl(work / "many_eval.jsonl", [{"text": "好" * (1 + i % 5), "label": "good"}
                                           for i in range(FEW_TEXTS + 1)])
    shown = call(PREDICT, "--model", "clf", "--eval", "many_eval.jsonl", "--json", "--batch-size", "16", cwd=work)
    assert shown.returncode == 0, shown.stderr
    assert f"eval:   0%|          | 0/{FEW_TEXTS + 1}" in shown.stderr  # the bar clears itself when done
    quiet = call(PREDICT, "--model", "clf", "--eval", "many_eval.jsonl", "--json", "--batch-size", "16",
                 "--no-progress", cwd=work)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert json.loads(quiet.stdout) == json.loads(shown.stdout)  # batches of 16 or one call: the same numbers
    assert json.loads(shown.stdout)["examples"] == FEW_TEXTS + 1


# ------------------------------------------------------------------------------------- the model card


def test_train_writes_a_model_card(work, clf):
    card = (clf / "README.md").read_text(encoding="utf-8")
    assert_names(card, "pipeline_tag: text-classification", "| base model | new tiny model |",
                 "| task | classify (2 labels: bad, good) |", "`pairs.jsonl`:", "36 examples", "| training | 30 steps",
                 "| final metrics | ", "accuracy", "python predict.py --model clf")
    assert not list(clf.glob("*.tmp"))
    command = next(line for line in card.splitlines() if line.startswith("python predict.py --model clf --file"))
    assert command.split()[5:] == ["texts.jsonl", "--output", "predictions.jsonl"]


# ------------------------------------------------------------------------------------- models from the HF cache


def _snapshot(cache: Path, name: str, commit: str, src: Path) -> Path:
    folder = cache / ("models--" + name.replace("/", "--")) / "snapshots" / commit
    shutil.copytree(src, folder)
    return folder


def test_model_found_in_the_hugging_face_cache(work, mlm, tmp_path, monkeypatch):
    hub = tmp_path / "hf" / "hub"
    old = _snapshot(hub, "org/tiny-zh", "0" * 40, mlm)
    main = _snapshot(hub, "org/tiny-zh", "a" * 40, mlm)
    os.utime(old, (2e9, 2e9))  # the newest folder is not the one refs/main names
    (main.parents[1] / "refs").mkdir()
    (main.parents[1] / "refs" / "main").write_text("a" * 40, encoding="utf-8")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    proc = call(PREDICT, "--model", "org/tiny-zh", QUERY, cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"model: {main}"
    # without refs/main: the newest snapshot; $HF_HUB_CACHE before $HF_HOME
    (main.parents[1] / "refs" / "main").unlink()
    from minibert.files import find_model

    assert find_model("org/tiny-zh") == old
    other = _snapshot(tmp_path / "elsewhere", "tiny-zh", "b" * 40, mlm)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert find_model("tiny-zh") == other
    # train.py starts from it too
    trained = call(TRAIN, "--model", "tiny-zh", "--train", "corpus.jsonl", "--output", "from-cache", "--max-steps",
                   "1", "--no-progress", cwd=work)
    assert trained.returncode == 0, trained.stderr
    assert f"| base model | {other} |" in (work / "from-cache" / "README.md").read_text(encoding="utf-8")


def test_python_loaders_find_a_cached_model_by_name(mlm, tmp_path, monkeypatch):
    """from_pretrained of the models, the tokenizer and the pipelines take a Hub name as the CLIs do."""
    from minibert import BertForMaskedLM, FillMask, Tokenizer

    folder = _snapshot(tmp_path / "hub", "org/tiny-zh", "c" * 40, mlm)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    by_name = BertForMaskedLM.from_pretrained("org/tiny-zh")
    for a, b in zip(by_name.state_dict().values(), BertForMaskedLM.from_pretrained(folder).state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert Tokenizer.from_pretrained("org/tiny-zh").vocab_size == Tokenizer.from_pretrained(folder).vocab_size
    assert FillMask.from_pretrained("org/tiny-zh")(QUERY) == FillMask.from_pretrained(folder)(QUERY)
    with pytest.raises(FileNotFoundError, match="org/absent: model folder not found, and no Hugging Face model"):
        BertForMaskedLM.from_pretrained("org/absent")


@pytest.mark.parametrize("script", [PREDICT, TRAIN])
def test_a_model_in_no_folder_and_no_cache(work, tmp_path, monkeypatch, script):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    args = ["--model", "org/absent", QUERY] if script == PREDICT else \
        ["--model", "org/absent", "--train", "corpus.jsonl", "--output", "never", "--no-progress"]
    line = error_line(call(script, *args, cwd=work))
    assert_names(line, "org/absent", "not found", str(tmp_path / "empty-cache" / "models--org--absent"),
                 "huggingface-cli download org/absent", "pass a model folder")
    assert not (work / "never").exists()


# ------------------------------------------------------------------------------------- pip install . (no shipped files)


def test_without_the_shipped_files_the_default_job_says_what_to_pass(tmp_path, monkeypatch):
    """What `pip install .` gives: the package without models/, vocab/ and examples/ next to it."""
    missing = tmp_path / "site-packages"
    monkeypatch.setattr(cli.shipped, "SHIPPED_MODEL", missing / "models" / "zh-small")
    monkeypatch.setattr(cli.shipped, "DEMO_TRAIN", missing / "examples" / "three_kingdoms.json")
    monkeypatch.setattr(cli.shipped, "SHIPPED_VOCAB", missing / "vocab" / "zh.txt")
    assert_names(error_line(call(TRAIN, cwd=tmp_path)), "zh-small is not installed", "pip install .",
                 "pass --model DIR and --train FILE")
    assert_names(error_line(call(TRAIN, "--config", "tiny", "--train", "x.txt", "--output", "o", cwd=tmp_path)),
                 "zh.txt is not installed", "pass --vocab FILE")
    assert_names(error_line(call(PREDICT, QUERY, cwd=tmp_path)), "no model under output/", "pass --model DIR")
    assert not (tmp_path / "output").exists() and not (tmp_path / "o").exists()
    assert (ROOT / "models" / "zh-small").is_dir()  # the repository itself still has them
