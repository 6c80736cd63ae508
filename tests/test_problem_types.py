"""The three classification problem types (config.json's problem_type): regression, single label with
class weights, multi-label. Their losses against transformers' and by hand, the readers' list labels,
the metrics by hand, and train.py -> folder -> predict.py / transformers round trips on tiny models."""

from __future__ import annotations

import csv
import json
import math
import random
import re
from pathlib import Path

import pytest
import torch
from conftest import PREDICT, ROOT, TINY_ARGS, TINY_SHAPE, TRAIN, assert_close_fp32, call, ids_batch, write_jsonl
from safetensors.torch import load_file
from test_cli import assert_names, error_line

from minibert import BertConfig, BertForSequenceClassification, TextClassifier
from minibert.data.readers import DataError, class_weights, read_labelled
from minibert.metrics import MultiLabelMetrics, multi_label_metrics
from minibert.model import Output
from minibert.tasks import SequenceClassification
from minibert.tokenizer import Tokenizer

MULTI, SINGLE = "multi_label_classification", "single_label_classification"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_vocab(ROOT / "vocab" / "zh.txt")


def perturbed(cfg: BertConfig) -> BertForSequenceClassification:
    """A random model whose weights are not near the init, so the logits differ clearly between inputs."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


# ------------------------------------------------------------------------------------- the losses


@pytest.mark.parametrize("problem", ["regression", SINGLE, MULTI])
def test_transformers_loads_each_problem_type_with_the_same_logits_and_loss(tmp_path, problem):
    transformers = pytest.importorskip("transformers")
    num_labels = 1 if problem == "regression" else 3
    id2label = None if problem == "regression" else {0: "a", 1: "b", 2: "c"}
    ours = perturbed(BertConfig(**TINY_SHAPE, vocab_size=90, num_labels=num_labels, id2label=id2label,
                                problem_type=problem))
    ours.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["problem_type"] == problem
    ref = transformers.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert ref.config.problem_type == problem
    labels = {"regression": torch.tensor([0.5, -1.0, 2.0, 3.5]), SINGLE: torch.tensor([0, 2, 1, 2]),
              MULTI: torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])}[problem]
    ids, mask = ids_batch(B=4)
    with torch.no_grad():
        r = ref(input_ids=ids, attention_mask=mask, labels=labels)
        o = ours(ids, mask, labels=labels)
    # fp32 through oneDNN here and MKL in transformers: logits and loss at most 3.1 ulps of the largest
    # apart on AMX and AVX2 kernels; 1e-5 of the largest is 84 (see assert_close_fp32).
    assert_close_fp32(o.logits, r.logits)
    assert_close_fp32(o.loss, r.loss)
    assert int(o.n_targets) == 4


def test_a_config_without_problem_type_is_inferred_as_transformers_does():
    assert BertConfig(num_labels=1).resolved_problem_type == "regression"
    assert BertConfig(num_labels=3).resolved_problem_type == SINGLE
    assert BertConfig(num_labels=1, problem_type=MULTI).resolved_problem_type == MULTI
    assert "problem_type" not in BertConfig().to_dict()  # as before, for folders that never had one
    with pytest.raises(ValueError, match="problem_type 'ranking' is not one of regression"):
        BertConfig(problem_type="ranking")
    # the loss without problem_type: by num_labels, then by the labels' dtype (float multi-hot: multi-label)
    model = perturbed(BertConfig(**TINY_SHAPE, vocab_size=90, num_labels=3))
    ids, mask = ids_batch(B=4)
    hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    with torch.no_grad():
        out = model(ids, mask, labels=hot)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, hot))


def test_class_weighted_loss_is_the_weighted_mean_by_hand():
    model = perturbed(BertConfig(**TINY_SHAPE, vocab_size=90, num_labels=3))
    w = torch.tensor([0.5, 2.0, 4.0])
    model.set_class_weights(w)
    ids, mask = ids_batch(B=4)
    labels = torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        out = model(ids, mask, labels=labels)
    log_p = out.logits.log_softmax(-1)
    ce = [-float(log_p[i, y]) for i, y in enumerate(labels.tolist())]
    weights = [0.5, 4.0, 2.0, 4.0]
    by_hand = sum(wi * c for wi, c in zip(weights, ce)) / sum(weights)
    assert float(out.loss) == pytest.approx(by_hand, rel=1e-5)
    assert float(out.n_targets) == pytest.approx(10.5)  # the sum of the weights: what the trainer averages over
    assert float(out.loss) == pytest.approx(float(torch.nn.CrossEntropyLoss(weight=w)(out.logits, labels)), rel=1e-6)
    assert "class_weights" not in model.state_dict()  # so no saved file carries them


def test_multi_label_positive_weights_are_bce_pos_weight_by_hand():
    model = perturbed(BertConfig(**TINY_SHAPE, vocab_size=90, num_labels=3, problem_type=MULTI))
    w = torch.tensor([0.5, 2.0, 4.0])
    model.set_class_weights(w)
    ids, mask = ids_batch(B=4)
    hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    with torch.no_grad():
        out = model(ids, mask, labels=hot)
    p = out.logits.sigmoid()
    by_hand = -(w * hot * p.log() + (1 - hot) * (1 - p).log()).mean()
    assert float(out.loss) == pytest.approx(float(by_hand), rel=1e-5)
    assert float(out.loss) == pytest.approx(float(torch.nn.BCEWithLogitsLoss(pos_weight=w)(out.logits, hot)), rel=1e-6)
    assert int(out.n_targets) == 4  # still a mean over the examples' labels
    model.set_class_weights(None)
    with torch.no_grad():
        assert float(model(ids, mask, labels=hot).loss) != pytest.approx(float(out.loss), rel=1e-3)


# ------------------------------------------------------------------------------------- class weights


def test_auto_class_weights_by_hand_for_an_imbalanced_file(tok, tmp_path):
    # 6 a, 3 b, 1 c: N = 10, K = 3, w_c = N / (K * n_c)
    rows = [{"text": "好" * (i + 1), "label": lab} for i, lab in enumerate("aaaaaabbbc")]
    train = write_jsonl(tmp_path / "t.jsonl", rows)
    task = SequenceClassification(class_weights="auto")
    data = task.load(tok, BertConfig(**TINY_SHAPE, vocab_size=tok.vocab_size), 16, train)
    assert task.weights == pytest.approx([10 / 18, 10 / 9, 10 / 3])
    assert sum(task.weights[f["label"]] for f in data.train) / len(data.train) == pytest.approx(1.0)
    assert "class weights: a 0.556, b 1.11, c 3.33" in data.note
    assert "class_weights" not in json.dumps(data.config.to_dict())
    batch = task.collator(tok)(data.train[:4])  # a a a a
    assert task.count_targets(batch) == pytest.approx(4 * 10 / 18)
    model = BertForSequenceClassification(data.config)
    task.setup_model(model)
    torch.testing.assert_close(model.class_weights, torch.tensor([10 / 18, 10 / 9, 10 / 3]))


def test_auto_positive_weights_by_hand_for_a_multi_label_file(tok, tmp_path):
    # N = 8 examples; a on 2, b on 6, c on all 8: w = (N - n) / n, 1 for a label every example has
    labels = [["a", "b", "c"], ["a", "c"]] + [["b", "c"]] * 5 + [["c"]]
    rows = [{"text": "好" * (i + 1), "label": lab} for i, lab in enumerate(labels)]
    task = SequenceClassification(class_weights="auto")
    train = write_jsonl(tmp_path / "m.jsonl", rows)
    data = task.load(tok, BertConfig(**TINY_SHAPE, vocab_size=tok.vocab_size), 16, train)
    assert task.problem == MULTI
    assert task.weights == pytest.approx([6 / 2, 2 / 6, 1.0])
    assert "positive-label weights: a 3, b 0.333, c 1" in data.note
    batch = task.collator(tok)(data.train[:4])
    assert task.count_targets(batch) == 4  # the mean over the examples, weighted or not


def test_class_weights_file(tmp_path):
    label2id = {"a": 0, "b": 1, "c": 2}
    good = tmp_path / "w.json"
    good.write_text('{"c": 3, "a": 0.5}')
    assert class_weights(str(good), [0, 1, 2], label2id) == [0.5, 1.0, 3.0]  # b left out: 1
    for content, expected in (('{"d": 2}', ["w.json", "'d' does not occur in the training labels"]),
                              ('{"a": 0}', ["w.json", "weight of 'a' is 0", "positive"]),
                              ('{"a": -1.5}', ["w.json", "-1.5"]), ('{"a": "2"}', ["w.json", '"2"']),
                              ("[1, 2]", ["w.json", "expected a JSON object"])):
        good.write_text(content)
        with pytest.raises(DataError) as e:
            class_weights(str(good), [0, 1, 2], label2id)
        assert_names(str(e.value), *expected)


@pytest.mark.parametrize("content, extra, expected", [
    ('{"bad": 2, "nope": 1}', [], ["weights.json", "'nope' does not occur in the training labels"]),
    ('{"bad": -2}', [], ["weights.json", "positive"]),
    (None, ["--class-weights", "missing.json"], ["missing.json", "not found"]),
    ('{"bad": 2}', ["--problem-type", "regression"], ["--class-weights is for classification", "regression"]),
    ('{"bad": 2}', ["--task", "mlm"], ["--class-weights is for --task classify"]),
])
def test_class_weights_errors_are_one_line(tmp_path, content, extra, expected):
    write_jsonl(tmp_path / "t.jsonl", [{"text": "好好", "label": "good"}, {"text": "坏坏", "label": "bad"}] * 2)
    if content is not None:
        (tmp_path / "weights.json").write_text(content)
    if extra[:1] == ["--problem-type"]:  # labels that fit regression
        write_jsonl(tmp_path / "t.jsonl", [{"text": "好好", "label": 1}, {"text": "坏坏", "label": 2}])
    args = extra if extra[:1] == ["--class-weights"] else ["--class-weights", "weights.json", *extra]
    proc = call(TRAIN, "--task", "classify", *TINY_ARGS, "--train", "t.jsonl", "--output", "out", "--max-steps", "1",
                *args, cwd=tmp_path)  # a second --task (mlm) replaces the first
    assert_names(error_line(proc), *expected)
    assert not (tmp_path / "out" / "config.json").exists()


# ------------------------------------------------------------------------------------- reading list labels


def test_read_multi_label_json_and_csv(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"text": "a", "label": ["sports", "politics"]},
                                              {"text": "b", "label": []}, {"text": "c", "label": ["x", 3, "x"]}])
    assert [e.label for e in read_labelled(path)] == [("sports", "politics"), (), ("x", "3")]
    csv = tmp_path / "m.csv"
    csv.write_text("text,label\nfirst,sports|politics\nsecond,\nthird, x | \n", encoding="utf-8")
    assert [e.label for e in read_labelled(csv, label_sep="|")] == [("sports", "politics"), (), ("x",)]
    csv.write_text("text,label\nfirst,sports|politics\n", encoding="utf-8")
    assert read_labelled(csv)[0].label == "sports|politics"  # without --label-sep a cell is one label


def test_mixing_list_and_single_labels_names_the_line(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"text": "a", "label": ["x"]}, {"text": "b", "label": ["y"]},
                                              {"text": "c", "label": "x"}])
    with pytest.raises(DataError) as e:
        read_labelled(path)
    assert_names(str(e.value), "m.jsonl:3:", "label is a single label", "line 1 is a list")
    path = write_jsonl(tmp_path / "n.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": ["y"]}])
    with pytest.raises(DataError, match=r"n\.jsonl:2: label is a list, but the label on line 1 is a single label"):
        read_labelled(path)
    path = write_jsonl(tmp_path / "e.jsonl", [{"text": "a", "label": ["x", ""]}])
    with pytest.raises(DataError, match=r"e\.jsonl:1: label is empty"):
        read_labelled(path)


def test_problem_type_from_the_flag_the_folder_or_the_labels(tok, tmp_path):
    cfg = BertConfig(**TINY_SHAPE, vocab_size=tok.vocab_size)
    ints = write_jsonl(tmp_path / "i.jsonl", [{"text": "好", "label": 1}, {"text": "坏", "label": 5}])
    task = SequenceClassification()
    assert task.load(tok, cfg, 16, ints).config.problem_type == SINGLE  # integers alone: classes
    # a regression model fine-tuned on integer scores stays a regression: its folder says so
    regression_cfg = BertConfig(**TINY_SHAPE, vocab_size=tok.vocab_size, num_labels=1, problem_type="regression")
    data = task.load(tok, regression_cfg, 16, ints)
    assert task.problem == "regression" and data.config.num_labels == 1 and [f["label"] for f in data.train] == [1, 5]
    assert data.note == ", regression (problem_type from the model's config.json)"
    data = SequenceClassification(problem_type=SINGLE).load(tok, regression_cfg, 16, ints)
    assert data.config.problem_type == SINGLE and data.config.label2id == {"1": 0, "5": 1}
    # single labels under multi-label: a set of one each
    data = SequenceClassification(problem_type=MULTI).load(tok, cfg, 16, ints)
    assert [f["label"].tolist() for f in data.train] == [[1.0, 0.0], [0.0, 1.0]]
    lists = write_jsonl(tmp_path / "l.jsonl", [{"text": "好", "label": ["a", "b"]}, {"text": "坏", "label": []}])
    data = SequenceClassification().load(tok, cfg, 16, lists)
    assert data.config.problem_type == MULTI and data.note == ", multi-label, labels: a, b"
    assert [f["label"].tolist() for f in data.train] == [[1.0, 1.0], [0.0, 0.0]]
    single_cfg = BertConfig(**TINY_SHAPE, vocab_size=tok.vocab_size, problem_type=SINGLE)
    with pytest.raises(DataError, match=rf"l\.jsonl:1: label is a list .* --problem-type {MULTI}"):
        SequenceClassification().load(tok, single_cfg, 16, lists)
    fractions = write_jsonl(tmp_path / "f.jsonl", [{"text": "好", "label": 4.5}, {"text": "坏", "label": 1}])
    with pytest.raises(DataError, match="regression targets, but the model's config.json says single_label"):
        SequenceClassification().load(tok, single_cfg, 16, fractions)
    with pytest.raises(DataError, match=r"l\.jsonl:1: label is a list \(multi-label\), but the problem type is "
                                        r"regression \(--problem-type\)"):
        SequenceClassification(problem_type="regression").load(tok, cfg, 16, lists)
    names = write_jsonl(tmp_path / "n.jsonl", [{"text": "好", "label": 2}, {"text": "坏", "label": "bad"}])
    with pytest.raises(DataError, match=r"n\.jsonl:2: label 'bad' is not a number, but the problem type is regression"):
        SequenceClassification(problem_type="regression").load(tok, cfg, 16, names)


# ------------------------------------------------------------------------------------- metrics


def test_multi_label_metrics_by_hand():
    labels = ["a", "b", "c"]
    gold = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    pred = torch.tensor([[1, 0, 0], [0, 0, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool)
    m = multi_label_metrics(pred, gold, labels)
    # a: tp 2 fp 0 fn 0; b: tp 1 fp 1 fn 1; c: tp 1 fp 0 fn 0 -> micro 2*4 / (2*4 + 1 + 1)
    assert m["exact_match"] == pytest.approx(2 / 4)  # rows 2 and 4 (the empty set counts)
    assert m["micro_f1"] == pytest.approx(8 / 10)
    assert m["per_label"]["b"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_label"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert m["macro_f1"] == pytest.approx((1 + 0.5 + 1) / 3)
    # from logits, with the threshold: sigmoid(0.2) = 0.55 is above 0.5 and not above 0.6
    metrics = MultiLabelMetrics(labels, threshold=0.6)
    logits = torch.tensor([[3.0, 0.2, -3.0], [-3.0, -3.0, -3.0], [3.0, 3.0, 3.0], [-3.0, 3.0, -3.0]])
    metrics.update(Output(logits, torch.tensor(0.3), torch.tensor(4)), {"labels": gold.float()})
    result = metrics.result()
    assert result["exact_match"] == pytest.approx(2 / 4) and result["eval_loss"] == pytest.approx(0.3)
    assert result["per_label"]["b"]["precision"] == 0.5 and result["examples"] == 4


# ------------------------------------------------------------------------------------- round trips


def model_logits(folder: Path, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ours, transformers') fp32 logits of the saved model on texts."""
    transformers = pytest.importorskip("transformers")
    tok = Tokenizer.from_pretrained(folder)
    ours = BertForSequenceClassification.from_pretrained(folder).eval()
    ref = transformers.BertForSequenceClassification.from_pretrained(folder).eval()
    batch = tok(texts)
    with torch.no_grad():
        return ours(**batch).logits, ref(**batch).logits


def read_rows(folder):
    return [json.loads(line) for line in (folder / "scores.jsonl").read_text(encoding="utf-8").splitlines()]


def test_regression_round_trip_predicts_the_value(tmp_path):
    rng = random.Random(0)
    rows = [{"text": ("好" if i % 2 == 0 else "坏") * rng.randint(2, 8), "label": 4.5 if i % 2 == 0 else 1.5}
            for i in range(40)]
    write_jsonl(tmp_path / "scores.jsonl", rows)
    # from scratch: 60 steps at lr 3e-3 separate the two kinds of text (measured 3.9 and 1.4)
    proc = call(TRAIN, "--task", "classify", *TINY_ARGS, "--train", "scores.jsonl", "--output", "reg",
                "--max-steps", "60", "--batch-size", "8", "--lr", "3e-3", "--warmup", "0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_names(proc.stdout, "40 examples", ", regression;")
    saved = json.loads((tmp_path / "reg" / "config.json").read_text())
    assert saved["problem_type"] == "regression" and saved["num_labels"] == 1
    texts = ["好好好", "坏坏坏坏", "好好好好好"]
    ours, ref = model_logits(tmp_path / "reg", texts)
    assert_close_fp32(ours, ref)  # as in the first test; measured at most 0.6 ulps of the largest apart
    pred = call(PREDICT, "--model", "reg", "--json", *texts, cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr
    results = [json.loads(line) for line in pred.stdout.splitlines()]
    assert [set(r) for r in results] == [{"text", "value"}] * 3  # a value, no label nor score
    for r, logit in zip(results, ours[:, 0].tolist()):
        assert abs(r["value"] - logit) < 1e-5, (r, logit)
    values = [r["value"] for r in results]
    # trained toward the targets: 好 texts above 坏 ones, and closer than any constant (variance 2.25)
    assert values[0] - values[1] > 1.0 and values[2] - values[1] > 1.0, values
    mse = sum((v - t) ** 2 for v, t in zip(values, [4.5, 1.5, 4.5])) / 3
    assert mse < 2.25, values
    plain = call(PREDICT, "--model", "reg", "好好好", cwd=tmp_path)
    assert re.fullmatch(r"-?\d+\.\d{4}\t好好好", plain.stdout.splitlines()[-1]), plain.stdout
    ev = call(PREDICT, "--model", "reg", "--eval", "scores.jsonl", cwd=tmp_path)
    assert re.search(r"scores\.jsonl: 40 examples, mean squared error \d+\.\d{4}", ev.stdout), ev.stdout + ev.stderr
    # --output: the value as the prediction, the gold score beside it; no label columns
    written = call(PREDICT, "--model", "reg", "--file", "scores.jsonl", "--output", "reg.csv", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    with open(tmp_path / "reg.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["text", "prediction", "gold"] and [r["text"] for r in rows] == [r["text"] for r in
                                                                                         read_rows(tmp_path)]
    direct = TextClassifier.from_pretrained(tmp_path / "reg", device="cpu")([r["text"] for r in rows])
    assert [float(r["prediction"]) for r in rows] == pytest.approx([d.value for d in direct], abs=1e-5)
    assert [float(r["gold"]) for r in rows] == [r["label"] for r in read_rows(tmp_path)]


def test_a_folder_without_problem_type_and_one_output_predicts_a_value(tmp_path, tok):
    model = perturbed(BertConfig(**TINY_SHAPE, vocab_size=tok.vocab_size, num_labels=1))
    model.save_pretrained(tmp_path, tokenizer=tok)
    assert "problem_type" not in json.loads((tmp_path / "config.json").read_text())
    result = TextClassifier.from_pretrained(tmp_path, device="cpu")(["好好"])[0]
    with torch.no_grad():
        logit = float(model(**tok(["好好"])).logits[0, 0])
    assert not hasattr(result, "label") and result.value == pytest.approx(logit, abs=1e-5)


def test_multi_label_round_trip(tmp_path):
    rng = random.Random(0)
    kinds = [("好{}坏", ["good"]), ("快{}坏", ["fast"]), ("好{}快", ["good", "fast"]), ("坏{}", [])]
    rows = []
    for i in range(24):
        text, labels = kinds[i % 4]
        rows.append({"text": text.format("坏" * rng.randint(0, 3)), "label": labels})
    write_jsonl(tmp_path / "tags.jsonl", rows)
    (tmp_path / "tags.csv").write_text("text,label\n好坏,good\n好快,good|fast\n坏坏,\n", encoding="utf-8")
    proc = call(TRAIN, "--task", "classify", *TINY_ARGS, "--train", "tags.jsonl", "--eval", "tags.jsonl",
                "--output", "ml", "--max-steps", "6", "--batch-size", "8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_names(proc.stdout, "multi-label, labels: fast, good", "exact_match", "micro_f1", "macro_f1")
    assert "per_label" not in proc.stdout  # per-label numbers go to metrics.jsonl
    evals = [json.loads(line)["eval"] for line in (tmp_path / "ml" / "metrics.jsonl").read_text().splitlines()
             if "eval" in json.loads(line)]
    assert set(evals[-1]["per_label"]) == {"fast", "good"}
    folder = tmp_path / "ml"
    assert json.loads((folder / "config.json").read_text())["problem_type"] == MULTI
    transformers = pytest.importorskip("transformers")
    assert transformers.BertForSequenceClassification.from_pretrained(folder).config.problem_type == MULTI
    texts = ["好坏", "好快", "坏坏坏"]
    ours, ref = model_logits(folder, texts)
    assert_close_fp32(ours, ref)  # as in the first test; measured at most 2.2 ulps of the largest apart
    for threshold in ("0.5", "0.3"):
        pred = call(PREDICT, "--model", "ml", "--json", "--threshold", threshold, *texts, cwd=tmp_path)
        assert pred.returncode == 0, pred.stderr
        probs = ref.sigmoid()
        names = ["fast", "good"]  # the label ids: sorted names
        for r, p in zip(map(json.loads, pred.stdout.splitlines()), probs.tolist()):
            assert isinstance(r["labels"], list) and set(r["labels"]) == {n for n, v in zip(names, p)
                                                                          if v > float(threshold)}
            assert r["scores"] == pytest.approx(dict(zip(names, p)), abs=1e-5)
    plain = call(PREDICT, "--model", "ml", "--threshold", "0.001", "好快", cwd=tmp_path)
    assert re.fullmatch(r"(fast|good) \d\.\d{4}, (fast|good) \d\.\d{4}\t好快", plain.stdout.splitlines()[-1]), \
        plain.stdout
    none = call(PREDICT, "--model", "ml", "--threshold", "0.999", "好快", cwd=tmp_path)
    assert none.stdout.splitlines()[-1] == "(none)\t好快", none.stdout
    ev = call(PREDICT, "--model", "ml", "--eval", "tags.csv", "--label-sep", "|", "--json", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(ev.stdout)
    assert metrics["examples"] == 3 and {"exact_match", "micro_f1", "macro_f1", "per_label"} <= set(metrics)
    assert 0 <= metrics["exact_match"] <= 1 and not math.isnan(metrics["micro_f1"])
    # --output: the predicted set and every label's probability, the gold set beside them
    out = call(PREDICT, "--model", "ml", "--file", "tags.csv", "--label-sep", "|", "--threshold", "0.3",
               "--output", "tags.out.jsonl", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in (tmp_path / "tags.out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["gold"] for r in records] == [["good"], ["good", "fast"], []]
    direct = TextClassifier.from_pretrained(folder, device="cpu")([r["text"] for r in records], threshold=0.3)
    for r, d in zip(records, direct, strict=True):
        assert r["prediction"] == d.labels and r["probabilities"] == pytest.approx(d.scores, abs=1e-6)
    call(PREDICT, "--model", "ml", "--file", "tags.csv", "--label-sep", "|", "--output", "tags.out.csv", cwd=tmp_path)
    with open(tmp_path / "tags.out.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["text", "prediction", "prob_fast", "prob_good", "gold"] and rows[1]["gold"] == "good|fast"
    bad = call(PREDICT, "--model", "ml", "--threshold", "1.5", "好", cwd=tmp_path)
    assert_names(error_line(bad), "--threshold 1.5")


def test_class_weights_train_and_are_saved_nowhere_inference_reads(tmp_path):
    write_jsonl(tmp_path / "t.jsonl", [{"text": "好好", "label": "good"}] * 3 + [{"text": "坏坏", "label": "bad"}])
    proc = call(TRAIN, "--task", "classify", *TINY_ARGS, "--train", "t.jsonl", "--eval", "t.jsonl", "--output", "w",
                "--max-steps", "2", "--batch-size", "2", "--grad-accum", "2", "--class-weights", "auto", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_names(proc.stdout, "class weights: bad 2, good 0.667", "final eval: eval_loss")
    assert json.loads((tmp_path / "w" / "train_args.json").read_text())["weights"] == pytest.approx([2, 2 / 3])
    for folder in (tmp_path / "w", tmp_path / "w" / "best"):
        assert "weight" not in (folder / "config.json").read_text()
        assert not any("class_weights" in k for k in load_file(folder / "model.safetensors"))
    write_jsonl(tmp_path / "m.jsonl", [{"text": "好好", "label": ["good", "fast"]}, {"text": "坏坏", "label": ["bad"]},
                                       {"text": "好快", "label": ["good"]}])
    multi = call(TRAIN, "--task", "classify", *TINY_ARGS, "--train", "m.jsonl", "--eval", "m.jsonl", "--output", "mw",
                 "--max-steps", "2", "--class-weights", "auto", cwd=tmp_path)
    assert multi.returncode == 0, multi.stderr
    assert_names(multi.stdout, "multi-label", "positive-label weights: bad 2, fast 2, good 0.5",
                 "final eval: eval_loss")
