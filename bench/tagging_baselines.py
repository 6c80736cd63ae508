"""People's Daily NER and word segmentation: the classical baselines on the splits the minibert taggers
are scored on.

- CRF (sklearn-crfsuite, L-BFGS with L1 + L2) on character window features, trained here on
  ner_train.jsonl (PER / LOC / ORG, IOB2) and on cws_train.jsonl (BMES); entity P/R/F1 per type on
  ner_test.jsonl, word P/R/F1 and OOV recall (words absent from cws_train) on cws_test.jsonl.
- jieba (default dictionary, HMM for unknown words) and pkuseg (spacy-pkuseg's code) as segmenters on
  cws_test.jsonl, used as shipped: they are not trained here.

Everything is scored with minibert.metrics (entity_metrics, segmentation_metrics), as the fine-tuned
models are. Needs the bench extra (`pip install -e ".[bench]"`) and `make data`.

Unfair advantages: the test split is People's Daily of January 1998, and the shipped segmenters'
resources were built from People's Daily text, so they may have seen the test lines.
- jieba: its author said that dict.txt (the word frequencies it segments with) was counted from the
  segmented 1998 People's Daily plus novels segmented with ICTCLAS (jieba issue #7 on GitHub, "模型的
  数据是如何生成的？", as relayed by hankcs.com's "几个开源分词系统所使用标注集的来源"); no file in the
  package says which months.
- pkuseg: its README calls the model in its PyPI package "混合数据集训练的通用模型" (a general model
  trained on a mixed data set) without listing the corpora, and reports it on PKU (92.68 F1), whose
  SIGHAN 2005 training set has 1,826,448 characters (the bakeoff's instructions): the size of this
  January 1998 corpus, so very likely the same text. Whether PKU's training set went into the mixed
  model is not stated; here its recall of the test words absent from cws_train is nearly its recall
  of the others (91.5% against 94.8%; the CRF's 74.3% against 97.0%), as if it had seen them.
The output repeats these notes (shorter).

pkuseg's model: spacy-pkuseg (the fork that installs on current Python) ships no model and downloads
its default ("spacy_ontonotes") from GitHub on first use, which cannot happen on a machine without
internet. pkuseg itself does not install here (Python 3.11: PyPI has no wheel for it, and the sdist's
setup.py imports numpy before pip has installed the build requirements), but that sdist carries the
original default ("mixed") model, which spacy-pkuseg reads as it is. Point --pkuseg-model at it:

    pip download pkuseg==0.0.25 --no-deps --no-build-isolation -d /tmp/pkuseg   # needs numpy installed
    tar xzf /tmp/pkuseg/pkuseg-0.0.25.tar.gz -C /tmp/pkuseg pkuseg-0.0.25/pkuseg/models/default

    python bench/tagging_baselines.py --pkuseg-model /tmp/pkuseg/pkuseg-0.0.25/pkuseg/models/default \\
        --json bench/results/tagging_baselines.json
    python bench/tagging_baselines.py --grid   # pick c1/c2 per task on the dev splits first
    python bench/tagging_baselines.py --skip-crf --model models/zh-small-ner --model models/zh-small-cws

--model adds fine-tuned minibert taggers (their "train" time is loading; fine-tuning is timed by train.py).
With the CRF in the same run, each minibert tagger is compared with the CRF of its task by a paired
bootstrap over the test sentences (2,000 resamples): the F1 difference, its standard error and 95%
interval ("paired" in the JSON). The standard error of a difference on the same sentences is smaller
than that of either F1 alone, since what both get right or wrong cancels.

Without --pkuseg-model the pkuseg row is skipped with the reason printed, unless spacy-pkuseg's own
default model is already in its cache (~/.pkuseg or $PKUSEG_HOME).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import time
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from pathlib import Path

import numpy as np

from minibert.data.tagging import bmes_to_words, read_tagged
from minibert.metrics import entity_metrics, segmentation_metrics

# The best pair of GRID for both tasks on the dev splits (--grid, every 8th training sentence, 100
# iterations): NER F1 87.3 (the others 86.3-86.7), segmentation 93.0 (90.2-92.7).
DEFAULT_C1, DEFAULT_C2 = 0.05, 0.01
GRID = [(0.0, 0.01), (0.05, 0.01), (0.05, 0.1), (0.2, 0.01)]


@dataclass
class Split:
    """One tagged test (or dev) file: characters and gold tags per sentence, and for segmentation the
    training split's words, which OOV recall is relative to."""

    task: str  # "ner" or "cws"
    chars: list[list[str]]
    tags: list[list[str]]
    train_words: set[str] | None = None


def read_split(path: Path, task: str) -> tuple[list[list[str]], list[list[str]]]:
    """(characters, tags) per sentence of ner_*.jsonl (IOB2) or cws_*.jsonl (BMES)."""
    sentences = read_tagged(path, scheme="IOB2" if task == "ner" else "BMES")
    return [s.tokens for s in sentences], [s.tags for s in sentences]


# --- CRF features --------------------------------------------------------------------------------

@cache
def char_type(ch: str) -> str:
    if ch in ("<s>", "</s>"):
        return ch
    name = unicodedata.name(ch, "")
    if unicodedata.category(ch) == "Nd":  # ASCII and full-width digits alike (the newspaper uses both)
        return "digit"
    if "LATIN" in name:
        return "latin"
    if unicodedata.category(ch)[0] in "PS":
        return "punct"
    if "CJK" in name:
        return "cjk"
    return "other"


def char_features(chars: list[str]) -> list[list[str]]:
    """Per character: itself, its neighbours at ±1 and ±2, the four adjacent bigrams in that window and
    the one that skips it, its type and its neighbours', and BOS / EOS at the sentence edges. Binary
    features (a string each), as crfsuite takes them."""
    pad = ["<s>", "<s>", *chars, "</s>", "</s>"]
    types = [char_type(c) for c in pad]
    out = []
    for i in range(len(chars)):
        a, b, c, d, e = pad[i:i + 5]  # c-2, c-1, c0, c+1, c+2
        feats = ["bias", f"c0={c}", f"c-1={b}", f"c+1={d}", f"c-2={a}", f"c+2={e}",
                 f"c-2c-1={a}{b}", f"c-1c0={b}{c}", f"c0c+1={c}{d}", f"c+1c+2={d}{e}", f"c-1c+1={b}{d}",
                 f"t0={types[i + 2]}", f"t-1t0t+1={types[i + 1]}|{types[i + 2]}|{types[i + 3]}"]
        if i == 0:
            feats.append("BOS")
        if i == len(chars) - 1:
            feats.append("EOS")
        out.append(feats)
    return out


def train_crf(chars: list[list[str]], tags: list[list[str]], c1: float, c2: float, max_iterations: int):
    import sklearn_crfsuite

    # all_possible_transitions: learn negative weights for transitions the training data never shows
    # (O -> I-PER, S -> M), so that decoding avoids ill-formed tag sequences.
    crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=c1, c2=c2, max_iterations=max_iterations,
                               all_possible_transitions=True)
    # A generator: the features of 1.8M characters as Python lists would take gigabytes; crfsuite keeps
    # its own compact copy.
    crf.fit((char_features(s) for s in chars), tags)
    return crf


class Stopwatch:
    """Wall-clock and this process's CPU seconds of each step: on a CPU shared with other jobs the wall
    clock runs slow, the CPU time is what the step costs an idle core."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.times[f"{name}_s"] = round(wall - self._wall, 1)
        self.times[f"{name}_cpu_s"] = round(cpu - self._cpu, 1)
        self._wall, self._cpu = wall, cpu


def crf_run(train: tuple, test: Split, c1: float, c2: float, max_iterations: int) -> tuple[dict, list[list[str]]]:
    clock = Stopwatch()
    crf = train_crf(*train, c1=c1, c2=c2, max_iterations=max_iterations)
    clock.lap("train")
    pred = [crf.predict_single(char_features(s)) for s in test.chars]
    clock.lap("predict")
    log = crf.training_log_
    return {**score_tagger(pred, test), **clock.times, "c1": c1, "c2": c2, "iterations": len(log.iterations),
            "max_iterations": max_iterations, "features": log.featgen_num_features}, pred


# --- scoring -------------------------------------------------------------------------------------

def score_tagger(pred_tags: list[list[str]], split: Split) -> dict:
    """Any tagger's predicted tags, one list per sentence of `split`, scored as minibert's fine-tuned
    models are: entity P/R/F1 (strict IOB2) for NER, word P/R/F1 and OOV recall for segmentation. A
    minibert TokenClassifier's tags on split.chars go here as they are."""
    if len(pred_tags) != len(split.tags) or any(len(p) != len(g) for p, g in zip(pred_tags, split.tags)):
        raise ValueError("pred_tags must have one tag per character of every sentence of the split")
    if split.task == "ner":
        return entity_metrics(split.tags, pred_tags, scheme="IOB2")
    return score_words([bmes_to_words(c, t) for c, t in zip(split.chars, pred_tags)], split)


def score_words(pred_words: list[list[str]], split: Split) -> dict:
    gold = [bmes_to_words(c, t) for c, t in zip(split.chars, split.tags)]
    for i, (p, c) in enumerate(zip(pred_words, split.chars)):
        if "".join(p) != "".join(c):
            raise ValueError(f"sentence {i}: the segmenter's words do not spell the sentence: {p[:10]}")
    return segmentation_metrics(gold, pred_words, train_words=split.train_words)


# --- fine-tuned minibert taggers ------------------------------------------------------------------

def minibert_run(folder: Path, ner: Split, cws: Split, batch_size: int) -> tuple[str, dict, list[list[str]]]:
    """A fine-tuned TokenClassifier on the test split its tags fit (B/M/E/S: segmentation, else NER), each
    word decoded as predict.py --eval decodes it. -> (task, scores, predicted tags)."""
    from minibert import TokenClassifier

    clock = Stopwatch()
    pipe = TokenClassifier.from_pretrained(folder, device="cpu")
    clock.lap("train")
    split = cws if pipe.segmenter else ner
    pred = pipe.tag_words(split.chars, batch_size=batch_size)
    clock.lap("predict")
    return split.task, {**score_tagger(pred, split), **clock.times}, pred


# --- paired comparison ----------------------------------------------------------------------------

def sentence_counts(pred_tags: list[list[str]], split: Split) -> np.ndarray:
    """(sentences, 3): each sentence's correct, predicted and gold entities (NER) or words (segmentation)."""
    rows = []
    for chars, gold, pred in zip(split.chars, split.tags, pred_tags):
        if split.task == "ner":
            m = entity_metrics([gold], [pred], scheme="IOB2")
            rows.append((m["correct_entities"], m["pred_entities"], m["gold_entities"]))
        else:
            m = segmentation_metrics([bmes_to_words(chars, gold)], [bmes_to_words(chars, pred)])
            rows.append((m["correct_words"], m["pred_words"], m["gold_words"]))
    return np.array(rows, dtype=np.float64)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, samples: int = 2000, seed: int = 0) -> dict:
    """F1(a) - F1(b) for two taggers' sentence_counts on the same sentences, and its spread over `samples`
    resamples of the sentences with replacement (both taggers on the same resample, so what the two get
    right or wrong together cancels; Koehn 2004's paired bootstrap)."""
    def f1(c: np.ndarray) -> np.ndarray:  # c (..., 3) summed counts -> micro F1 = 2 correct / (pred + gold)
        return 2 * c[..., 0] / np.maximum(c[..., 1] + c[..., 2], 1)

    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(a), size=(samples, len(a)))
    diffs = f1(a[picks].sum(1)) - f1(b[picks].sum(1))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"difference": float(f1(a.sum(0)) - f1(b.sum(0))), "standard_error": float(diffs.std(ddof=1)),
            "interval_95": [float(lo), float(hi)], "share_a_higher": float((diffs > 0).mean()),
            "samples": samples, "sentences": len(a)}


# --- shipped segmenters ----------------------------------------------------------------------------

def jieba_run(test: Split) -> dict:
    import jieba

    jieba.setLogLevel(logging.WARNING)  # its "Building prefix dict" notices, not results
    clock = Stopwatch()
    jieba.initialize()
    clock.lap("train")  # loading its dictionary: what it has instead of training
    pred = [jieba.lcut("".join(s), HMM=True) for s in test.chars]
    clock.lap("predict")
    return {**score_words(pred, test), **clock.times}


def pkuseg_model_cached() -> bool:
    home = Path(os.path.expanduser(os.getenv("PKUSEG_HOME", "~/.pkuseg")))
    return (home / "spacy_ontonotes.zip").exists()


def pkuseg_run(test: Split, model: Path | None) -> dict:
    import spacy_pkuseg

    clock = Stopwatch()
    seg = spacy_pkuseg.pkuseg(model_name=str(model)) if model else spacy_pkuseg.pkuseg()
    clock.lap("train")  # loading its model
    pred = [seg.cut("".join(s)) for s in test.chars]
    clock.lap("predict")
    return {**score_words(pred, test), **clock.times}


# --- the run -------------------------------------------------------------------------------------

def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {os.cpu_count()} logical CPUs"


def grid_search(train: tuple, dev: Split, every: int, max_iterations: int) -> dict:
    """Dev-split F1 for each (c1, c2) of GRID, trained on every `every`-th training sentence (the whole
    split for each point would take an hour on 2 cores; a stride rather than the first lines, which are
    the first days of the month)."""
    results = {}
    for c1, c2 in GRID:
        r, _ = crf_run((train[0][::every], train[1][::every]), dev, c1, c2, max_iterations)
        results[f"c1={c1} c2={c2}"] = r
        print(f"  {dev.task} dev, c1={c1} c2={c2}: F1 {r['f1']:.4f} ({r['iterations']} iterations, "
              f"{r['train_s']} s, {r['train_cpu_s']} CPU s)", flush=True)
    return results


def counts(ner: Split, cws: Split) -> dict:
    gold_words = [w for c, t in zip(cws.chars, cws.tags) for w in bmes_to_words(c, t)]
    entity_types: dict[str, int] = {}
    for tags in ner.tags:
        for tag in tags:
            if tag.startswith("B-"):
                entity_types[tag[2:]] = entity_types.get(tag[2:], 0) + 1
    return {"ner_test_sentences": len(ner.chars), "ner_test_chars": sum(map(len, ner.chars)),
            "ner_test_entities": entity_types,
            "cws_test_sentences": len(cws.chars), "cws_test_chars": sum(map(len, cws.chars)),
            "cws_test_words": len(gold_words),
            "cws_test_oov_words": sum(w not in cws.train_words for w in gold_words)}


NOTES = {
    "jieba": "dictionary counted from the 1998 People's Daily (its author, jieba issue #7): may have seen "
             "the test lines",
    "pkuseg": "pip model 'trained on a mixed data set' (its README), reported on the People's Daily PKU "
              "benchmark: in-domain, possibly trained on the test lines",
}


def seconds(r: dict, step: str) -> str:
    return f"{r[f'{step}_s']} ({r[f'{step}_cpu_s']})"


def print_tables(results: dict) -> None:
    c = results["counts"]
    print(f"\nCPU: {results['cpu']}")
    print(f"NER test: {c['ner_test_sentences']} sentences, {c['ner_test_chars']} characters, "
          f"{sum(c['ner_test_entities'].values())} entities {c['ner_test_entities']}")
    print(f"segmentation test: {c['cws_test_sentences']} sentences, {c['cws_test_chars']} characters, "
          f"{c['cws_test_words']} words, {c['cws_test_oov_words']} of them not in cws_train")
    types = sorted(c["ner_test_entities"])
    print("\nseconds: wall clock (CPU seconds of this process); for jieba and pkuseg, train = loading")
    print("\n| NER | P | R | F1 | " + " | ".join(f"{t} F1" for t in types) + " | train s | predict s |")
    print("|---" * (6 + len(types)) + "|")
    for name, r in results["ner"].items():
        per_type = " | ".join(f"{r['per_type'][t]['f1']:.4f}" if t in r["per_type"] else "" for t in types)
        print(f"| {name} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {per_type} | "
              f"{seconds(r, 'train')} | {seconds(r, 'predict')} |")
    # IV recall beside OOV recall: a segmenter that never saw the test words finds the OOV ones far less often.
    print("\n| segmentation | P | R | F1 | OOV recall | IV recall | train s | predict s |\n"
          "|---|---|---|---|---|---|---|---|")
    for name, r in results["cws"].items():
        print(f"| {name} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['oov_recall']:.4f} | "
              f"{r['iv_recall']:.4f} | {seconds(r, 'train')} | {seconds(r, 'predict')} |")
    for name, note in results["notes"].items():
        print(f"note, {name}: {note}")


def paired_comparisons(preds: dict[str, dict[str, list]], splits: dict[str, Split]) -> dict:
    """Each minibert tagger against each CRF of its task (both run in this invocation): the paired
    bootstrap of their F1 difference, printed and returned."""
    out: dict[str, dict] = {}
    for task, taggers in preds.items():
        for a in (n for n in taggers if n.startswith("minibert")):
            for b in (n for n in taggers if n.startswith("CRF")):
                split = splits[task]
                r = paired_bootstrap(sentence_counts(taggers[a], split), sentence_counts(taggers[b], split))
                out.setdefault(task, {})[f"{a} - {b}"] = r
                lo, hi = r["interval_95"]
                print(f"paired bootstrap, {task}: {a} - {b}: F1 difference {100 * r['difference']:+.2f} points, "
                      f"standard error {100 * r['standard_error']:.2f}, "
                      f"95% interval [{100 * lo:+.2f}, {100 * hi:+.2f}], "
                      f"{a} higher in {100 * r['share_a_higher']:.1f}% of {r['samples']} resamples of "
                      f"{r['sentences']} sentences")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path("data/zh"), help="folder from `make data`")
    ap.add_argument("--c1", type=float, default=DEFAULT_C1, help="CRF L1 penalty (ignored with --grid)")
    ap.add_argument("--c2", type=float, default=DEFAULT_C2, help="CRF L2 penalty (ignored with --grid)")
    # Trained on a quarter of the corpus (a random split made while the real splits did not exist yet),
    # held-out F1 per label stopped rising by iteration 60-100 (NER) and 50-60 (segmentation); 100 keeps
    # each full fit to about 4 CPU minutes.
    ap.add_argument("--max-iterations", type=int, default=100,
                    help="L-BFGS iterations per CRF (each is one pass over the 1.8M training characters)")
    ap.add_argument("--grid", action="store_true",
                    help="choose c1/c2 per task on the dev split from a small grid before the final fits")
    ap.add_argument("--grid-every", type=int, default=8,
                    help="each grid point trains on every N-th training sentence")
    ap.add_argument("--pkuseg-model", type=Path, default=None,
                    help="a pkuseg model folder (features.pkl, weights.npz); see above for the pip-shipped one")
    ap.add_argument("--skip-crf", action="store_true", help="only the shipped segmenters (seconds, not minutes)")
    ap.add_argument("--model", type=Path, action="append", default=[],
                    help="a fine-tuned minibert tagger folder, scored on the NER or segmentation test split "
                         "(by its tags); repeatable")
    ap.add_argument("--batch-size", type=int, default=32, help="--model: windows per forward pass")
    ap.add_argument("--json", type=Path, default=None, help="also write every number here")
    args = ap.parse_args()

    d = args.data_dir
    ner_train, cws_train = read_split(d / "ner_train.jsonl", "ner"), read_split(d / "cws_train.jsonl", "cws")
    train_words = {w for c, t in zip(*cws_train) for w in bmes_to_words(c, t)}
    ner_test = Split("ner", *read_split(d / "ner_test.jsonl", "ner"))
    cws_test = Split("cws", *read_split(d / "cws_test.jsonl", "cws"), train_words=train_words)
    results = {"cpu": cpu_name(), "counts": counts(ner_test, cws_test), "ner": {}, "cws": {}, "grid": {},
               "notes": {}}
    print(f"CPU: {results['cpu']}; train: {len(ner_train[0])} NER / {len(cws_train[0])} segmentation sentences",
          flush=True)

    preds: dict[str, dict[str, list]] = {"ner": {}, "cws": {}}  # task -> tagger -> predicted tags
    for folder in args.model:
        task, scores, preds[task][f"minibert {folder}"] = minibert_run(folder, ner_test, cws_test, args.batch_size)
        results[task][f"minibert {folder}"] = scores
        print(f"minibert {folder}: {task} F1 {scores['f1']:.4f}", flush=True)

    if not args.skip_crf:
        for task, train, test in (("ner", ner_train, ner_test), ("cws", cws_train, cws_test)):
            c1, c2 = args.c1, args.c2
            if args.grid:
                dev = Split(task, *read_split(d / f"{task}_dev.jsonl", task), train_words=train_words)
                results["grid"][task] = grid_search(train, dev, args.grid_every, args.max_iterations)
                best = max(results["grid"][task].values(), key=lambda r: r["f1"])
                c1, c2 = best["c1"], best["c2"]
            print(f"CRF {task}: c1={c1} c2={c2}, at most {args.max_iterations} iterations", flush=True)
            name = f"CRF (c1={c1}, c2={c2})"
            results[task][name], preds[task][name] = crf_run(train, test, c1, c2, args.max_iterations)

    results["cws"][f"jieba {version('jieba')} (default dictionary, HMM)"] = jieba_run(cws_test)
    results["notes"]["jieba"] = NOTES["jieba"]
    if args.pkuseg_model or pkuseg_model_cached():
        model = args.pkuseg_model.name if args.pkuseg_model else "spacy_ontonotes"
        name = f"pkuseg ({model} model, read by spacy-pkuseg {version('spacy-pkuseg')})"
        results["cws"][name] = pkuseg_run(cws_test, args.pkuseg_model)
        results["notes"]["pkuseg"] = NOTES["pkuseg"]
    else:
        results["notes"]["pkuseg"] = ("skipped: spacy-pkuseg ships no model and would download one; pass "
                                      "--pkuseg-model (see the docstring for the one in pkuseg's PyPI sdist)")

    print_tables(results)
    results["paired"] = paired_comparisons(preds, {"ner": ner_test, "cws": cws_test})
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
