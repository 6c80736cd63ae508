"""Sentiment accuracy on the same split: snownlp's Naive Bayes vs a minibert classifier.

snownlp's classifier is trained here on data/zh/sentiment_train.jsonl (not its bundled model,
which was trained on the whole corpus, test reviews included) and both are scored on
data/zh/sentiment_test.jsonl.

    python bench/sentiment_vs_snownlp.py --model output/sentiment
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from minibert import TextClassifier
from minibert.data import read_labelled
from minibert.trainer import classification_metrics


def snownlp_scores(train, test) -> tuple[list[str], float]:
    from snownlp.sentiment import Sentiment

    start = time.perf_counter()
    clf = Sentiment()
    clf.train([e.text for e in train if e.label == "neg"], [e.text for e in train if e.label == "pos"])
    return ["pos" if clf.classify(e.text) >= 0.5 else "neg" for e in test], time.perf_counter() - start


def metrics(pred: list[str], gold: list[str], labels: list[str]) -> dict:
    ids = {name: i for i, name in enumerate(labels)}
    return classification_metrics(torch.tensor([ids[x] for x in pred]), torch.tensor([ids[x] for x in gold]),
                                  len(labels))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data/zh"), help="folder from `make data`")
    ap.add_argument("--model", type=Path, default=None, help="a minibert classifier folder to score too")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    train = read_labelled(args.data / "sentiment_train.jsonl")
    test = read_labelled(args.data / "sentiment_test.jsonl")
    gold = [e.label for e in test]
    labels = sorted(set(gold))
    rows = {}
    pred, seconds = snownlp_scores(train, test)
    rows["snownlp Naive Bayes"] = {**metrics(pred, gold, labels), "seconds": round(seconds, 1)}
    if args.model:
        start = time.perf_counter()
        clf = TextClassifier.from_pretrained(args.model)
        pred = [r.label for r in clf([e.text for e in test])]
        rows[f"minibert ({args.model})"] = {**metrics(pred, gold, labels),
                                            "seconds": round(time.perf_counter() - start, 1)}
    print(f"train {len(train)} reviews, test {len(test)} reviews "
          f"(seconds: snownlp trains and predicts, minibert only predicts)\n")
    print("| classifier | accuracy | macro-F1 | seconds |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['seconds']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
