"""LengthGroupedSampler: batches of similar length, so little of each batch is padding."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from .collators import mix_seed


class LengthGroupedSampler(Sampler[list[int]]):
    """Batches of similar length, so little of each batch is padding, in a fresh random order each epoch.

    Shuffle all indices, sort each chunk of batch_size * mega_batch_mult by length (longest first), cut
    into batches and shuffle the batches. Pass it as DataLoader(batch_sampler=...). The order is kept
    as one index array, not a list per batch, so a dataset of millions of blocks costs a few bytes per
    example; `batches(start)` goes on from any batch of the epoch without drawing the ones before.

    With num_replicas > 1 every rank draws the same order (same seed and epoch); each run of
    num_replicas consecutive batches is one global batch, of which rank r takes the r-th. When the
    batches do not divide evenly, the last, incomplete global batch is pooled and split into
    num_replicas near-equal shares, so one epoch over all ranks holds every example exactly once
    (unless fewer examples than ranks are left over: those few are left out).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, mega_batch_mult: int = 50,
                 drop_last: bool = False, num_replicas: int = 1, rank: int = 0) -> None:
        if batch_size < 1 or mega_batch_mult < 1:
            raise ValueError(f"batch_size and mega_batch_mult must be >= 1, got {batch_size}, {mega_batch_mult}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        self.lengths = torch.as_tensor(lengths)
        self.batch_size, self.seed, self.mega_batch_mult = batch_size, seed, mega_batch_mult
        self.drop_last, self.num_replicas, self.rank = drop_last, num_replicas, rank
        self.epoch = 0
        self._plan: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (epoch, order, batch order)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(every index in its place: chunks sorted longest first, cut into batches of batch_size in turn;
        the order of those batches). Computed once per epoch from the lengths alone."""
        if self._plan is not None and self._plan[0] == self.epoch:
            return self._plan[1], self._plan[2]
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        n = len(self.lengths)
        perm = torch.randperm(n, generator=g)
        chunk, bs = self.batch_size * self.mega_batch_mult, self.batch_size
        for s in range(0, n, chunk):  # chunks are whole batches, so a batch never spans two
            idx = perm[s : s + chunk]
            perm[s : s + chunk] = idx[torch.argsort(self.lengths[idx], descending=True, stable=True)]
        n_batches = self._n_batches()
        batch_order = torch.randperm(n_batches, generator=g)
        if n_batches:
            # The longest batch goes first, so an out-of-memory error shows at step 1, not hours in.
            first = self.lengths[perm[batch_order * bs]]
            longest = int(torch.argmax(first))  # the first of equals, as max() picks
            batch_order[0], batch_order[longest] = batch_order[longest].clone(), batch_order[0].clone()
        order = perm[: n_batches * bs] if self.drop_last else perm
        order = order.to(torch.int32) if n < 2**31 else order
        self._plan = (self.epoch, order, batch_order)
        return order, batch_order

    def _n_batches(self) -> int:
        n, bs = len(self.lengths), self.batch_size
        return n // bs if self.drop_last else -(-n // bs)

    def _global_batches(self) -> tuple[int, int]:
        """(global batches this epoch, examples in the pooled last one, 0 when none is pooled)."""
        full, left = divmod(self._n_batches(), self.num_replicas)
        if not left or self.drop_last:
            return full, 0
        # The leftover batches are the last `left` of this epoch's order; one of them may be the short one.
        order, batch_order = self._order()
        bs = self.batch_size
        pooled = sum(min(bs, len(order) - int(b) * bs) for b in batch_order[full * self.num_replicas :])
        return (full + 1, pooled) if pooled >= self.num_replicas else (full, 0)

    def batches(self, start: int = 0) -> Iterator[list[int]]:
        """This rank's batches of the epoch from its `start`-th on."""
        order, batch_order = self._order()
        bs, world = self.batch_size, self.num_replicas
        full, pooled = self._global_batches()
        n_full = full - (1 if pooled else 0)
        for i in range(start, n_full):
            b = int(batch_order[i * world + self.rank])
            yield order[b * bs : (b + 1) * bs].tolist()
        if pooled and start <= n_full:
            rest = torch.cat([order[int(b) * bs : (int(b) + 1) * bs] for b in batch_order[n_full * world :]])
            yield torch.tensor_split(rest, world)[self.rank].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        return self.batches()

    def __len__(self) -> int:
        return self._global_batches()[0]


def feature_lengths(features: Sequence[dict]) -> Sequence[int]:
    """Tokens per feature: a cached dataset's own `lengths` array (token_cache.py, read without touching
    the tokens), else counted."""
    lengths = getattr(features, "lengths", None)
    return lengths if lengths is not None else [len(f["input_ids"]) for f in features]


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Fraction of the padded (B, T) slots that are padding, over all batches."""
    real = padded = 0
    for b in batches:
        sizes = [lengths[i] for i in b]
        real += sum(sizes)
        padded += len(sizes) * max(sizes)
    return 1 - real / padded if padded else 0.0
