"""The Task seam: a task registered in TASKS reaches train.py and predict.py with no edit to the
command lines. `Shout`, registered for these tests only, trains as masked LM with an option of its
own, and predicts by shouting each text: its flags, its checks, its output and its --eval go
through the same code paths as fill-mask and classify."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from typing import ClassVar

import pytest
from conftest import CORPUS, PREDICT, TINY_ARGS, TRAIN, call, write_jsonl
from test_cli import assert_names, error_line

from minibert import cli
from minibert.config import option
from minibert.data.readers import read_texts
from minibert.tasks import TASKS, MaskedLM, Metric, PredictOptions, Predictor, TaskWords
from minibert.tasks.base import gold_column, with_inputs


@dataclass
class ShoutOptions(PredictOptions):
    exclaim: int = option(1, "shout: exclamation marks after each text")
    exclusive: ClassVar[tuple[str, ...]] = ("exclaim",)


@dataclass
class Shouted:
    text: str
    shout: str


class ShoutPredictor(Predictor):
    def default_inputs(self):
        raise ValueError("nothing to shout; give texts")

    def stream(self, items):
        size, marks = self.options.batch_size, "!" * self.options.exclaim
        return iter([[Shouted(e.text, e.text.upper() + marks) for e in items[s:s + size]]
                     for s in range(0, len(items), size)])

    def show(self, e, r):
        return f"{r.shout}\t({r.text})"

    def record(self, e, r):
        return with_inputs(e, {"prediction": r.shout})

    def columns(self, items):
        return ["text", "prediction"] + gold_column(items)

    def evaluate(self):
        return {"texts": len(read_texts(self.eval_file))}

    def report(self, metrics):
        return f"{self.eval_file}: {metrics['texts']} texts shouted"


@dataclass
class Shout(MaskedLM):
    name: ClassVar[str] = "shout"
    kind: ClassVar[str] = "shouting"
    words: ClassVar[TaskWords] = TaskWords(
        summary="fill-mask training, loudly", purpose="shouting", train_files=".txt",
        train_examples="  python train.py --task shout --train corpus.txt --output out/shout\n",
        predict_does="shout texts", predict_record="the text in capitals", predict_eval="a text file, counted",
        predict_examples="  python predict.py --task shout hello\n")
    # "errors" ends in neither "loss" nor "perplexity": only its declaration says that lower is better
    declared_metrics: ClassVar[tuple[Metric, ...]] = (*MaskedLM.declared_metrics, Metric("errors", False))
    finetune_defaults: ClassVar[dict[str, float]] = {"lr": 3e-4}
    exclusive: ClassVar[tuple[str, ...]] = ("volume",)
    predict_names: ClassVar[tuple[str, ...]] = ("shout",)
    predict_options: ClassVar[type] = ShoutOptions
    predictor: ClassVar[type] = ShoutPredictor

    volume: int = option(1, "how loud to train")


@pytest.fixture
def shout(monkeypatch, tmp_path):
    monkeypatch.setitem(TASKS, Shout.name, Shout)
    write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in CORPUS])
    return tmp_path


def helps(parser) -> dict[str, str]:
    return {a.option_strings[0] if a.option_strings else a.dest: a.help for a in parser._actions}


def test_the_flags_of_a_registered_task(shout):
    parser = cli.train_parser()
    train = helps(parser)
    assert "shout: fill-mask training, loudly" in train["--task"] and ".txt for shout" in train["--train"]
    assert train["--volume"] == "shout: how loud to train (default: 1)"
    assert "0.0003 for shout fine-tuning" in train["--lr"]
    assert "or shouting." in parser.description and "--task shout --train" in parser.epilog
    parser = cli.predict_parser()
    predict = helps(parser)
    (choices,) = [a.choices for a in parser._actions if a.dest == "task"]
    assert choices[:3] == ["fill-mask", "mlm", "classify"] and choices[-1] == "shout"
    assert predict["--exclaim"] == "shout: exclamation marks after each text (default: 1)"
    assert "the text in capitals (shout)" in predict["--output"] and "shout: a text file, counted" in predict["--eval"]
    assert "or shout texts, with a trained model" in parser.description and "--task shout hello" in parser.epilog


def test_a_registered_task_trains_and_predicts_through_the_command_lines(shout):
    proc = call(TRAIN, "--task", "shout", *TINY_ARGS, "--train", "corpus.jsonl", "--output", "out", "--max-steps",
                "1", "--volume", "3", cwd=shout)
    assert proc.returncode == 0, proc.stderr
    assert "training:  shout," in proc.stdout
    settings = json.loads((shout / "out" / "train_args.json").read_text(encoding="utf-8"))
    assert settings["task"] == "shout" and settings["volume"] == 3
    # its own option is refused with another task, and another task's with it
    assert_names(error_line(call(TRAIN, *TINY_ARGS, "--train", "corpus.jsonl", "--output", "o2", "--volume", "2",
                                 cwd=shout)), "--volume is for --task shout")
    assert_names(error_line(call(TRAIN, "--task", "shout", *TINY_ARGS, "--train", "corpus.jsonl", "--output", "o2",
                                 "--problem-type", "regression", cwd=shout)), "--problem-type is for --task classify")

    shown = call(PREDICT, "--model", "out", "--task", "shout", "--exclaim", "2", "hello", "world", cwd=shout)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == ["HELLO!!\t(hello)", "WORLD!!\t(world)"]
    as_json = call(PREDICT, "--model", "out", "--task", "shout", "--json", "hi", cwd=shout)
    assert json.loads(as_json.stdout) == {"text": "hi", "shout": "HI!"}
    write_jsonl(shout / "gold.jsonl", [{"text": "ab", "label": "AB!"}])
    written = call(PREDICT, "--model", "out", "--task", "shout", "--file", "gold.jsonl", "--output", "p.csv", cwd=shout)
    assert written.returncode == 0, written.stderr
    with open(shout / "p.csv", encoding="utf-8", newline="") as f:
        assert list(csv.DictReader(f)) == [{"text": "ab", "prediction": "AB!", "gold": "AB!"}]
    evaluated = call(PREDICT, "--model", "out", "--task", "shout", "--eval", "corpus.jsonl", cwd=shout)
    assert evaluated.stdout.strip() == f"corpus.jsonl: {len(CORPUS)} texts shouted"
    assert_names(error_line(call(PREDICT, "--model", "out", "--task", "shout", cwd=shout)), "nothing to shout")
    # the model folder says fill-mask: its own predict option is refused there
    assert_names(error_line(call(PREDICT, "--model", "out", "--exclaim", "3", "a[MASK]", cwd=shout)),
                 "--exclaim is for a shouting model")


def test_a_metric_is_better_the_way_its_task_declares():
    task = Shout()
    assert task.is_better({"errors": 1.0}, {"errors": 2.0}, "errors")
    assert not task.is_better({"accuracy": 0.1}, {"accuracy": 0.2}, "accuracy")
    assert task.check_metric("errors") == "errors"
    with pytest.raises(ValueError, match="--metric f1: not a metric of --task shout; use one of accuracy, "
                                         "eval_loss, perplexity, errors"):
        task.check_metric_name("f1")
