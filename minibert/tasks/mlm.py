"""Masked LM: fill-mask training (tokens hidden at random and predicted) and predict.py's fill-mask side."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.distributed as dist

from ..checkpoint import from_pretrained
from ..config import BertConfig, option
from ..data.collators import MaskingCollator, PackingCollator
from ..data.features import load_mlm_features, pack_features
from ..data.readers import DataError, Example
from ..data.token_cache import TokenCache, cached_features, prepare_cache, uses_token_cache
from ..metrics import MaskedLMMetrics, evaluate
from ..model import BertForMaskedLM
from ..pipelines import FillMask, FillResult
from ..runtime import resolve_device
from ..tokenizer import Tokenizer
from .base import Metric, PredictOptions, Predictor, Task, TaskData, TaskWords, gold_column, split, with_inputs

TRAIN_EXAMPLES = """\
  # cloze fine-tuning of your own checkpoint
  python train.py --task mlm --model path/to/bert --train train.json --output out/mlm
  # pre-training from scratch with whole-word masking on a segmented corpus
  python train.py --task mlm --config zh-small --vocab vocab/zh.txt --train corpus.txt --group-texts \\
      --whole-word-mask --output out/pretrain
"""
PREDICT_EXAMPLES = """\
  python predict.py --model output/three_kingdoms "三国人物诸葛[MASK]"
  python predict.py --model DIR --targets 亮,涛 "三国人物诸葛[MASK]"
  python predict.py --model DIR --targets 诸葛亮,诸葛涛 "三国人物[MASK][MASK][MASK]"   # words, ranked by PLL
  python predict.py --model DIR --beam 5 "[MASK][MASK]是蜀汉丞相"
"""


@dataclass
class FillMaskOptions(PredictOptions):
    mlm_probability: float = option(0.15, "fill-mask --eval: fraction of tokens to mask")
    whole_word_mask: bool = option(False, "fill-mask --eval: mask whole space-separated words (segmented text)")
    seed: int = option(0, "fill-mask --eval: masking seed")
    top_k: int = option(5, "fill-mask: candidates per [MASK]")
    targets: str | None = option(None, "fill-mask: comma-separated candidates. A single token is scored at each "
                                 "[MASK] by its probability; a word of several tokens fills a run of as many "
                                 "consecutive [MASK]s, and the candidates are ranked by pseudo-log-likelihood (PLL: "
                                 "with the word filled in, mask each of its tokens in turn and sum the "
                                 "log-probabilities of the word's tokens; 0 is certain, lower is less likely)")
    beam: int = option(1, "fill-mask: fill several [MASK]s by a left-to-right beam search keeping the N best partial "
                       "fills, each scored by its chain log-probability (the sum, mask by mask, of the chosen token's "
                       "log-probability with the later masks still [MASK]); 1 is greedy", metavar="N")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top_k < 1:
            raise ValueError("--top-k must be at least 1")
        if self.beam < 1:
            raise ValueError(f"--beam {self.beam}: must be at least 1")


class FillMaskPredictor(Predictor):
    options: FillMaskOptions

    def check_inputs(self, items: list[Example], path: Path | None) -> None:
        paired = next((e for e in items if e.text_pair), None)
        if paired is not None:
            raise ValueError(f"{path}:{paired.line}: a text pair ({self.options.pair_column!r}) for a fill-mask "
                             "model, which reads one text; drop the column, or name another with --pair-column")

    def default_inputs(self) -> list[Example]:
        return [Example(MaskedLM.example_text, None, None, 0)]

    def banner(self) -> str:
        return f"model: {self.folder}"

    @property
    def targets(self) -> list[str] | None:
        return [t for t in self.options.targets.split(",") if t.strip()] if self.options.targets else None

    def stream(self, items: list[Example]) -> Iterator[list[FillResult]]:
        o = self.options
        pipe = MaskedLM.pipeline(self.folder, o.device)
        return pipe.stream([e.text for e in items], top_k=o.top_k, targets=self.targets, batch_size=o.batch_size,
                           beam=o.beam)

    def show(self, e: Example, r: FillResult) -> str:
        lines = [r.text]
        for m in r.masks:
            label = f"  [MASK] {m.index + 1}:" if len(r.masks) > 1 else "  top:"
            lines.append(label + "  " + "   ".join(f"{c.token} {c.score:.4f}" for c in m.candidates))
            if r.targets:
                lines.append("  targets:  " + "   ".join(f"{t} {p:.4f}" for t, p in r.targets[m.index].items()))
        if r.ranking and not r.targets:
            lines.append("  targets by PLL (sum of log-probabilities):  "
                         + "   ".join(f"{t.target} {t.score:.4f}" for t in r.ranking))
        shown = "\n".join(lines + [f"  filled: {r.filled}"])
        if self.options.beam > 1:
            shown += f"   (chain log-probability {r.fill_score:.4f})"
        return shown

    def record(self, e: Example, r: FillResult) -> dict:
        best = r.ranking[0] if r.ranking else None
        fields = {"prediction": best.target if best else r.filled, "score": best.score if best else r.fill_score,
                  "filled": r.filled, "fill_score": r.fill_score,
                  "candidates": [[dataclasses.asdict(c) for c in m.candidates] for m in r.masks]}
        if r.ranking:
            fields["ranking"] = [dataclasses.asdict(t) for t in r.ranking]
        if r.targets:
            fields["target_probabilities"] = r.targets
        return with_inputs(e, fields)

    def columns(self, items: list[Example]) -> list[str]:
        return ["text", "prediction", "score", "filled", "fill_score", "candidates"] \
            + (["ranking", "target_probabilities"] if self.targets else []) + gold_column(items)

    def csv_row(self, record: dict) -> dict:
        """Candidates as "token score ..." per [MASK], separated by " | "."""
        row = dict(record)
        row["candidates"] = " | ".join("  ".join(f"{c['token']} {c['score']:.4f}" for c in mask)
                                       for mask in record["candidates"])
        if "ranking" in record:
            row["ranking"] = "  ".join(f"{t['target']} {t['score']:.4f}" for t in record["ranking"])
        if "target_probabilities" in record:
            row["target_probabilities"] = " | ".join("  ".join(f"{t} {p:.4f}" for t, p in mask.items())
                                                     for mask in record["target_probabilities"])
        return row

    def evaluate(self) -> dict:
        """Masked-token accuracy and perplexity on a text file, one example per line, masked with a fixed seed."""
        o = self.options
        task = MaskedLM(mlm_probability=o.mlm_probability, whole_word_mask=o.whole_word_mask)
        tokenizer = Tokenizer.from_pretrained(self.folder)
        model = from_pretrained(task.model_class, self.folder)
        features = load_mlm_features(self.eval_file, tokenizer, model.config.max_position_embeddings,
                                     whole_word_mask=o.whole_word_mask, progress=o.progress)
        if not features:
            raise ValueError(f"{self.eval_file}: no text to evaluate on")
        device = resolve_device(o.device)
        return evaluate(model.to(device), features, task.eval_collator(tokenizer, o.seed), o.batch_size, device,
                        task.metrics(model.config), progress=o.progress)

    def report(self, metrics: dict) -> str:
        return (f"{self.eval_file}: {metrics['masked_tokens']} masked tokens, accuracy {metrics['accuracy']:.4f}, "
                f"perplexity {metrics['perplexity']:.2f}")


@dataclass
class MaskedLM(Task):
    """Fill-mask training: tokens chosen at random are hidden and predicted; the loss averages over them."""

    name: ClassVar[str] = "mlm"
    model_class: ClassVar[type] = BertForMaskedLM
    kind: ClassVar[str] = "fill-mask"
    pipeline_tag: ClassVar[str] = "fill-mask"
    example_text: ClassVar[str] = "三国人物诸葛[MASK]"  # also what predict.py fills when given no text
    words: ClassVar[TaskWords] = TaskWords(
        summary="masked-language-model (fill-mask) training", purpose="masked-LM (cloze)",
        train_files=".txt/.json/.jsonl", train_examples=TRAIN_EXAMPLES,
        predict_does="fill in [MASK] tokens", predict_record="the top candidates",
        predict_eval="a text file (.txt/.json/.jsonl), masks --mlm-probability of its tokens with a fixed seed and "
                     "prints masked-token accuracy and perplexity",
        predict_examples=PREDICT_EXAMPLES, predict_input="each with at least one [MASK]")
    declared_metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("accuracy", higher_is_better=True), Metric("eval_loss", higher_is_better=False),
        Metric("perplexity", higher_is_better=False))
    # Small batches, no dropout and a gentle rate teach a fact from ~60 sentences in 10 epochs at a cost of
    # under 2 points of held-out accuracy (README, "Fine-tuning defaults").
    finetune_defaults: ClassVar[dict[str, float]] = {"lr": 1.2e-4, "batch_size": 8, "dropout": 0.0}
    exclusive: ClassVar[tuple[str, ...]] = ("pack",)
    corpus_paths: ClassVar[bool] = True  # .txt files and folders go through the token cache
    predict_names: ClassVar[tuple[str, ...]] = ("fill-mask", "mlm")
    predict_options: ClassVar[type] = FillMaskOptions
    predictor: ClassVar[type] = FillMaskPredictor

    mlm_probability: float = option(0.15, "fraction of tokens chosen for prediction")
    mask_prob: float = option(0.8, "of the chosen tokens, the fraction replaced by [MASK]")
    random_prob: float = option(0.1, "of the chosen tokens, the fraction replaced by a random token; the rest "
                                "stay as they are")
    whole_word_mask: bool = option(False, "mask whole space-separated words (for Chinese: pre-segmented text)")
    group_texts: bool = option(False, "concatenate lines into full --max-length blocks (pre-training) instead of "
                               "one example per line")
    pack: bool = option(False, "put several lines into each --max-length row, attention kept within each line "
                        "(the same loss as unpacked); --batch-size then counts rows. Measured on 2 CPU cores "
                        "(zh-small, 692 corpus lines): padding 4.3% -> 0.3% of each batch, but 1.01x the tokens/s "
                        "of the default length-grouped batches (BENCHMARKS.md)")
    text_column: str = option("text", "text field/column")
    cache_dir: str | None = option(None, "where the token cache goes: --train .txt files or folders of them are "
                                   "tokenized once into memory-mapped arrays there, found again by later runs, "
                                   "phases and resumes while the text and the vocabulary are unchanged (default: "
                                   "$MINIBERT_CACHE, else ~/.cache/minibert/tokens). JSON/JSONL training files "
                                   "are read into memory", metavar="DIR")
    prepare_only: bool = option(False, "tokenize --train into the token cache and stop without training (e.g. "
                                "on a cluster's login node); needs no --output")

    def __post_init__(self) -> None:
        if self.pack and self.group_texts:
            raise ValueError("--pack is for --task mlm with one example per line; --group-texts blocks are full "
                             "already")

    def load(self, tokenizer: Tokenizer, config: BertConfig, max_length: int, train_file: Path | list[Path],
             eval_file: Path | None = None, eval_split: float = 0.0, seed: int = 0, progress: bool = False) -> TaskData:
        def features(path: Path) -> list[dict]:
            return load_mlm_features(path, tokenizer, max_length, self.whole_word_mask, self.group_texts,
                                     self.text_column, progress=progress)

        paths = [train_file] if isinstance(train_file, Path) else list(train_file)
        signature, cache_note = None, ""
        if uses_token_cache(paths):
            cache = TokenCache(self.prepare(paths, tokenizer, progress))
            if self.whole_word_mask and not cache.meta["multi_word_lines"]:
                raise DataError(f"{paths[0]}: whole-word masking takes words from spaces, but no line has two "
                                "words; segment the text first (e.g. '诸葛 亮 是 丞相') or turn whole-word masking off")
            train_features = cached_features(cache, max_length, self.group_texts, tokenizer.cls_token_id,
                                             tokenizer.sep_token_id)
            signature = {"train_file": ", ".join(p.name for p in paths), "train_bytes": cache.meta["bytes"],
                         "train_cache_key": cache.meta["key"]}
            cache_note = f", token cache {cache.folder}"
        elif len(paths) > 1:
            raise DataError(f"{paths[1]}: several --train files are read through the token cache, which takes "
                            f".txt files and folders of them; give one {paths[0].suffix} file, or .txt files")
        else:
            train_features = features(paths[0])
        eval_features = features(eval_file) if eval_file else None
        if eval_split:
            train_features, eval_features = split(train_features, eval_split, seed)
        note = cache_note
        if self.pack:  # evaluation stays one sequence per row: its numbers compare with unpacked runs
            rows = pack_features(train_features, max_length)
            note += f", {len(train_features)} sequences packed into {len(rows)} rows"
            train_features = rows
        return TaskData(train_features, eval_features, config, note, signature)

    def prepare(self, paths: list[Path], tokenizer: Tokenizer, progress: bool = False) -> Path:
        """The token cache folder of `paths` (token_cache.prepare_cache). Under torchrun, rank 0 prepares
        while the other ranks wait; then each finds it (or, on a machine that does not share the cache
        folder, prepares its own copy)."""
        def prepare() -> Path:
            return prepare_cache(paths, tokenizer, self.whole_word_mask, self.cache_dir, progress,
                                 log=lambda m: print(m, file=sys.stderr))

        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return prepare()
        outcome: list = [None]
        if dist.get_rank() == 0:
            try:
                prepare()
            except (DataError, OSError) as e:  # the other ranks stop with the same message instead of waiting
                outcome[0] = f"{type(e).__name__}: {e}"
                dist.broadcast_object_list(outcome, src=0)
                raise
        dist.broadcast_object_list(outcome, src=0)
        if outcome[0] is not None:
            raise DataError(f"rank 0 could not prepare the token cache: {outcome[0]}")
        return prepare()

    def collator(self, tokenizer: Tokenizer, seed: int = 0, rank: int = 0) -> Callable:
        collate = MaskingCollator(tokenizer, self.mlm_probability, self.mask_prob, self.random_prob,
                                  whole_word_mask=self.whole_word_mask, seed=seed, rank=rank)
        return PackingCollator(collate) if self.pack else collate

    def eval_collator(self, tokenizer: Tokenizer, seed: int = 0) -> Callable:
        # The standard 80/10/10 whatever the training split, so numbers compare across runs; the
        # trainer restores the seed before each evaluation, so every one masks the same tokens.
        return MaskingCollator(tokenizer, self.mlm_probability, whole_word_mask=self.whole_word_mask, seed=seed)

    def count_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != -100).sum())

    def metrics(self, config: BertConfig) -> MaskedLMMetrics:
        return MaskedLMMetrics()

    def settings_note(self) -> str:
        return (f", masking {self.mlm_probability:g} ({self.mask_prob:g} [MASK] / {self.random_prob:g} random"
                f"{', whole words' if self.whole_word_mask else ''})")

    def card_summary(self, config: BertConfig) -> str:
        return "fill-mask"

    @classmethod
    def check_model(cls, config: BertConfig, folder: Path) -> None:
        """Any BERT folder: one saved without a fill-mask head gets a new one, as FillMask loads it."""

    @classmethod
    def pipeline(cls, folder: Path, device: str = "auto") -> FillMask:
        return FillMask.from_pretrained(folder, device=device)
