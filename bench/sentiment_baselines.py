"""Sentiment accuracy on one split: snownlp's Naive Bayes, character 1-3-gram TF-IDF + logistic
regression, and a fine-tuned minibert classifier side by side.

Both classical baselines are trained here on data/zh/sentiment_train.jsonl (not snownlp's bundled
model, which was trained on the whole corpus, test reviews included); everything is scored on
data/zh/sentiment_test.jsonl. The TF-IDF baseline needs scikit-learn (`pip install -e ".[bench]"`).

    python bench/sentiment_baselines.py --model runs/sentiment
    python bench/sentiment_baselines.py --model runs/s0 --model runs/s1 --model runs/s2  # + their mean
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from minibert import TextClassifier
from minibert.data import read_labelled
from minibert.metrics import classification_metrics


def snownlp_predict(train, test) -> list[str]:
    from snownlp.sentiment import Sentiment

    clf = Sentiment()
    clf.train([e.text for e in train if e.label == "neg"], [e.text for e in train if e.label == "pos"])
    return ["pos" if clf.classify(e.text) >= 0.5 else "neg" for e in test]


def tfidf_lr_scores(train, test) -> list[dict[str, float]]:
    """Each test text's probability per label: character 1-3-grams (spaces of the segmentation
    ignored), sublinear TF, L2 logistic regression with C picked by 5-fold cross-validation on the
    training split only."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline

    unspaced = lambda texts: [t.replace(" ", "") for t in texts]  # noqa: E731
    clf = make_pipeline(TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2),
                        LogisticRegressionCV(Cs=[1, 3, 10, 30], cv=5, max_iter=2000))
    with warnings.catch_warnings():  # scikit-learn's notices about future defaults, not about this fit
        warnings.simplefilter("ignore", FutureWarning)
        clf.fit(unspaced([e.text for e in train]), [e.label for e in train])
    proba = clf.predict_proba(unspaced([e.text for e in test]))  # (N, labels), columns in classes_ order
    return [dict(zip(clf.classes_, map(float, row))) for row in proba]


def mean_scores(*runs: list[dict[str, float]]) -> list[dict[str, float]]:
    """Each text's probability per label, averaged over several classifiers' outputs on the same texts."""
    return [{k: sum(run[i][k] for run in runs) / len(runs) for k in runs[0][i]} for i in range(len(runs[0]))]


def best(scores: dict[str, float]) -> str:
    return max(scores, key=scores.get)


def metrics(pred: list[str], gold: list[str], labels: list[str]) -> dict:
    ids = {name: i for i, name in enumerate(labels)}
    return classification_metrics(torch.tensor([ids[x] for x in pred]), torch.tensor([ids[x] for x in gold]),
                                  len(labels))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data/zh"), help="folder from `make data`")
    ap.add_argument("--model", type=Path, action="append", default=[],
                    help="a minibert classifier folder to score too (repeatable)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    train = read_labelled(args.data / "sentiment_train.jsonl")
    test = read_labelled(args.data / "sentiment_test.jsonl")
    gold = [e.label for e in test]
    labels = sorted(set(gold))
    rows = {}
    tfidf = None  # TF-IDF's probabilities, for the averaged rows
    for name, predict in (("snownlp Naive Bayes", snownlp_predict),
                          ("char 1-3-gram TF-IDF + logistic regression", tfidf_lr_scores)):
        start = time.perf_counter()
        try:
            pred = predict(train, test)
        except ImportError as e:
            print(f"skipped {name}: {e.name} is not installed (pip install -e \".[bench,data]\")")
            continue
        if predict is tfidf_lr_scores:
            tfidf, pred = pred, [best(s) for s in pred]
        rows[name] = {**metrics(pred, gold, labels), "seconds": round(time.perf_counter() - start, 1)}
    every = []  # each model's probabilities, for the ensemble rows
    for model in args.model:
        start = time.perf_counter()
        clf = TextClassifier.from_pretrained(model)
        scores = [r.scores for r in clf([e.text for e in test])]
        every.append(scores)
        rows[f"minibert ({model})"] = {**metrics([best(s) for s in scores], gold, labels),
                                       "seconds": round(time.perf_counter() - start, 1)}
        if tfidf is not None and set(scores[0]) == set(tfidf[0]):
            # The two make different mistakes: the mean of their probabilities, as one more row.
            rows[f"mean of minibert ({model}) and TF-IDF probabilities"] = {
                **metrics([best(s) for s in mean_scores(scores, tfidf)], gold, labels), "seconds": ""}
    if len(every) > 1 and all(set(s[0]) == set(every[0][0]) for s in every):
        # Models fine-tuned with different seeds (or recipes) make partly different mistakes too.
        mean = mean_scores(*every)
        rows[f"mean of the {len(every)} minibert models' probabilities"] = {
            **metrics([best(s) for s in mean], gold, labels), "seconds": ""}
        if tfidf is not None and set(mean[0]) == set(tfidf[0]):
            rows["mean of that and TF-IDF's probabilities"] = {
                **metrics([best(s) for s in mean_scores(mean, tfidf)], gold, labels), "seconds": ""}
    print(f"train {len(train)} reviews, test {len(test)} reviews "
          f"(seconds: the baselines train and predict, minibert only predicts)\n")
    print("| classifier | accuracy | macro-F1 | seconds |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['seconds']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
