"""Fill-mask: the likeliest tokens for each [MASK], target ranking by pseudo-log-likelihood, beam fills."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoint import from_pretrained
from ..files import find_model
from ..model import BertForMaskedLM
from ..runtime import resolve_device, reuse_freed_memory
from ..tokenizer import Tokenizer


@dataclass
class Candidate:
    token: str
    score: float  # probability under the model's softmax at this position


@dataclass
class MaskResult:
    index: int  # which [MASK] of the text, counting from 0
    candidates: list[Candidate]


@dataclass
class TargetScore:
    target: str
    tokens: list[str]  # the target's tokens, one per [MASK] of the run it fills
    score: float  # pseudo-log-likelihood (see FillMask): the higher, the likelier


@dataclass
class FillResult:
    text: str
    masks: list[MaskResult]
    filled: str  # every [MASK] filled left to right: greedy, or the best of a beam search
    truncated: bool = False
    targets: list[dict] = field(default_factory=list)  # single-token targets: per mask, {token: probability}
    ranking: list[TargetScore] = field(default_factory=list)  # targets that fill the [MASK]s, best first
    fill_score: float = 0.0  # chain log-probability of `filled` (see FillMask)


class FillMask:
    """Fill [MASK] tokens: the top candidates at each, the text filled, and targets scored.

    Filling several [MASK]s goes left to right: at each step the next [MASK] gets a token, the ones
    after it still [MASK]. A fill is scored by its chain log-probability, the sum over the steps of
    log p(token | the tokens chosen before, the later positions masked); `beam=1` takes the best token
    at each step (greedy), `beam=N` keeps the N best partial fills. A fill never uses a special token.

    Targets: a target of one token is scored at every [MASK] by its probability there. A target of
    several tokens (a word: 诸葛亮) fills a run of as many consecutive [MASK]s, and the targets are
    ranked by pseudo-log-likelihood (PLL, Salazar et al. 2020, "Masked Language Model Scoring"):
    with the target filled in, mask one of its positions at a time and sum the log-probability of the
    target's token there. A single token in a single [MASK] gets its log-probability.
    """

    def __init__(self, model: BertForMaskedLM, tokenizer: Tokenizer, device: str | torch.device = "auto"):
        self.device = resolve_device(device)
        reuse_freed_memory(self.device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_length = model.config.max_position_embeddings
        self._special = sorted(tokenizer.all_special_ids)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "auto") -> FillMask:
        folder = find_model(folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an encoder-only checkpoint's new head is reported below
            model = from_pretrained(BertForMaskedLM, folder)
        return cls(model, Tokenizer.from_pretrained(folder), device)

    def _encode(self, texts: list[str], first: int = 1) -> tuple[dict[str, torch.Tensor], list[bool]]:
        """`first`: the number of texts[0] among all the texts of the call, for error messages."""
        mask_id = self.tokenizer.mask_token_id
        truncated = []
        for i, text in enumerate(texts, start=first):
            if self.tokenizer.mask_token not in text:
                raise ValueError(f"text {i} ({text[:40]!r}) has no {self.tokenizer.mask_token}; "
                                 f"write {self.tokenizer.mask_token} where the model should fill in")
        full = self.tokenizer.encode_batch(texts)
        cut = self.tokenizer.encode_batch(texts, max_length=self.max_length)
        for i, (a, b) in enumerate(zip(full, cut), start=first):
            if a.ids.count(mask_id) != b.ids.count(mask_id):
                raise ValueError(
                    f"text {i} is {len(a.ids)} tokens, longer than the model's {self.max_length} positions, "
                    f"and truncating it would cut off a {self.tokenizer.mask_token}; shorten the text")
            truncated.append(len(a.ids) > len(b.ids))
        return self.tokenizer.pad(cut), truncated

    @torch.inference_mode()
    def _mask_log_probs(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Per text of a padded batch, (n_masks, V) log-probabilities at its [MASK] positions, in order."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        where = batch["input_ids"] == self.tokenizer.mask_token_id  # (B, T)
        out = self.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], positions=where)
        logp = out.logits.float().log_softmax(-1).cpu()  # (N, V), row-major over (text, position)
        return list(logp.split(where.sum(1).tolist()))

    @torch.inference_mode()
    def _log_probs_at(self, rows: list[list[int]], at: list[int], batch_size: int) -> torch.Tensor:
        """(len(rows), V) log-probabilities at position at[i] of rows[i]: token ids of one length, one text."""
        out = []
        for s in range(0, len(rows), batch_size):
            ids = torch.tensor(rows[s:s + batch_size], device=self.device)  # (b, T)
            where = torch.stack([torch.arange(len(ids), device=self.device),
                                 torch.tensor(at[s:s + batch_size], device=self.device)], 1)  # (b, 2)
            logits = self.model(ids, torch.ones_like(ids), torch.zeros_like(ids), positions=where).logits
            out.append(logits.float().log_softmax(-1).cpu())  # (b, V)
        return torch.cat(out)

    def __call__(self, texts: str | list[str], top_k: int = 5, targets: list[str] | None = None,
                 batch_size: int = 32, beam: int = 1) -> list[FillResult]:
        return [r for batch in self.stream(texts, top_k, targets, batch_size, beam) for r in batch]

    def stream(self, texts: str | list[str], top_k: int = 5, targets: list[str] | None = None,
               batch_size: int = 32, beam: int = 1) -> Iterator[list[FillResult]]:
        """The results a batch at a time, as they are computed (for writing them out as they come)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if beam < 1:
            raise ValueError(f"beam {beam}: must be at least 1")
        target_ids = self._target_ids(targets) if targets else {}
        mask_id = self.tokenizer.mask_token_id
        for s in range(0, len(texts), batch_size):
            chunk = texts[s:s + batch_size]
            batch, truncated = self._encode(chunk, first=s + 1)
            results = []
            for j, (text, logp, cut) in enumerate(zip(chunk, self._mask_log_probs(batch), truncated)):
                ids = batch["input_ids"][j][batch["attention_mask"][j].bool()].tolist()
                positions = [i for i, t in enumerate(ids) if t == mask_id]
                probs = logp.exp()
                masks = []
                for m in range(probs.size(0)):
                    top = probs[m].topk(min(top_k, probs.size(1)))
                    masks.append(MaskResult(m, [Candidate(self._piece(i), float(v))
                                                for v, i in zip(top.values.tolist(), top.indices.tolist())]))
                single = all(len(t) == 1 for t in target_ids.values())
                scored = [{t: float(probs[m, i[0]]) for t, i in target_ids.items()} for m in range(probs.size(0))] \
                    if target_ids and single else []
                ranking = self._rank(ids, positions, target_ids, s + j + 1, batch_size) if target_ids else []
                chosen, fill_score = self._beam_fill(ids, positions, logp[0], beam, batch_size)
                filled = text
                for t in chosen:
                    filled = filled.replace(self.tokenizer.mask_token, self._piece(t), 1)
                if cut:
                    warnings.warn(f"text {s + j + 1} was truncated to {self.max_length} tokens", stacklevel=2)
                results.append(FillResult(text, masks, filled, cut, scored, ranking, fill_score))
            yield results

    def _rank(self, ids: list[int], positions: list[int], target_ids: dict[str, list[int]], number: int,
              batch_size: int) -> list[TargetScore]:
        """The targets that fill the text's [MASK]s, ranked by pseudo-log-likelihood, best first.

        Targets of one token in a text of several [MASK]s are scored per mask only (no ranking); a
        target of several tokens needs the [MASK]s in one run, one per token."""
        n = len(positions)
        consecutive = positions == list(range(positions[0], positions[0] + n))
        if all(len(t) == 1 for t in target_ids.values()) and n != 1:
            return []
        mask = self.tokenizer.mask_token
        if not consecutive:
            raise ValueError(f"text {number} has its {n} {mask}s apart; a target of several tokens fills a run of "
                             f"consecutive {mask}s, one per token")
        for target, tids in target_ids.items():
            if len(tids) != n:
                pieces = " ".join(self.tokenizer.convert_ids_to_tokens(tids))
                raise ValueError(f"target {target!r} is {len(tids)} tokens of the model's vocabulary ({pieces}) but "
                                 f"text {number} has {n} consecutive {mask}s; write one {mask} per token, or give "
                                 f"targets of {n} tokens")
        rows, at, want = [], [], []
        for tids in target_ids.values():
            filled = list(ids)
            for p, t in zip(positions, tids):
                filled[p] = t
            for p, t in zip(positions, tids):  # mask one position of the target at a time
                rows.append(filled[:p] + [self.tokenizer.mask_token_id] + filled[p + 1:])
                at.append(p)
                want.append(t)
        logp = self._log_probs_at(rows, at, batch_size)  # (targets * n, V)
        pll = logp[torch.arange(len(want)), torch.tensor(want)].view(len(target_ids), n).sum(1)  # (targets,)
        ranking = [TargetScore(target, [self._piece(t) for t in tids], float(score))
                   for (target, tids), score in zip(target_ids.items(), pll.tolist())]
        return sorted(ranking, key=lambda r: -r.score)

    def _beam_fill(self, ids: list[int], positions: list[int], first: torch.Tensor, beam: int,
                   batch_size: int) -> tuple[list[int], float]:
        """(token per [MASK], chain log-probability) of the best left-to-right fill that a beam of
        `beam` partial fills finds. first: (V,) log-probabilities at the first [MASK], all masked."""
        beams: list[tuple[list[int], float]] = [([], 0.0)]
        for step, pos in enumerate(positions):
            if step == 0:
                logp = first[None]  # (1, V)
            else:
                rows = []
                for chosen, _ in beams:
                    row = list(ids)
                    for p, t in zip(positions, chosen):
                        row[p] = t
                    rows.append(row)
                logp = self._log_probs_at(rows, [pos] * len(rows), batch_size)  # (beams, V)
            logp = logp.index_fill(1, torch.tensor(self._special), float("-inf"))
            vocab = logp.size(1)
            total = torch.tensor([score for _, score in beams], dtype=torch.float64)[:, None] + logp  # (beams, V)
            top = total.flatten().topk(min(beam, len(beams) * (vocab - len(self._special))))
            beams = [(beams[i // vocab][0] + [i % vocab], v) for v, i in zip(top.values.tolist(), top.indices.tolist())]
        return beams[0]

    def _piece(self, token_id: int) -> str:
        token = self.tokenizer.convert_ids_to_tokens(token_id)
        return token[2:] if token.startswith("##") else token

    def _target_ids(self, targets: list[str]) -> dict[str, list[int]]:
        """target -> its token ids: a whole vocabulary entry, or else what the tokenizer makes of it."""
        vocab = self.tokenizer.get_vocab()
        ids = {}
        for t in targets:
            t = t.strip()
            key = t.lower() if self.tokenizer.do_lower_case else t
            if key in vocab:
                ids[t] = [vocab[key]]
                continue
            enc = self.tokenizer.encode(t)
            pieces = [i for i, special in zip(enc.ids, enc.special_tokens_mask) if not special]
            if not pieces or self.tokenizer.unk_token_id in pieces:
                raise ValueError(f"target {t!r} is not made of tokens of the model's vocabulary (it reads as "
                                 f"{' '.join(self.tokenizer.convert_ids_to_tokens(pieces)) or 'nothing'}); "
                                 f"give targets the vocabulary can spell")
            ids[t] = pieces
        return ids
