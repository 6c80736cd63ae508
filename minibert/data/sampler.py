"""LengthGroupedSampler: batches of similar length, so little of each batch is padding."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from .collators import mix_seed


class LengthGroupedSampler(Sampler[list[int]]):
    """Batches of similar length, so little of each batch is padding, in a fresh random order each epoch.

    Shuffle all indices, sort each chunk of batch_size * mega_batch_mult by length (longest first), cut
    into batches and shuffle the batches. Pass it as DataLoader(batch_sampler=...). With num_replicas > 1
    every rank draws the same order (same seed and epoch) and takes every num_replicas-th batch; the
    last len % num_replicas batches are left out so ranks get equal, disjoint shares (a different few
    each epoch, as the order changes).
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

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        perm = torch.randperm(len(self.lengths), generator=g)
        chunk, bs = self.batch_size * self.mega_batch_mult, self.batch_size
        batches = []
        for s in range(0, len(perm), chunk):
            idx = perm[s : s + chunk]
            idx = idx[torch.argsort(self.lengths[idx], descending=True, stable=True)]
            batches += [idx[i : i + bs].tolist() for i in range(0, len(idx), bs)]
        if self.drop_last and batches and len(batches[-1]) < bs:
            batches.pop()
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        if batches:
            # The longest batch goes first, so an out-of-memory error shows at step 1, not hours in.
            longest = max(range(len(batches)), key=lambda b: int(self.lengths[batches[b][0]]))
            batches[0], batches[longest] = batches[longest], batches[0]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        usable = len(batches) // self.num_replicas * self.num_replicas
        yield from batches[self.rank : usable : self.num_replicas]

    def __len__(self) -> int:
        n = len(self.lengths)
        n_batches = n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return n_batches // self.num_replicas


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Fraction of the padded (B, T) slots that are padding, over all batches."""
    real = padded = 0
    for b in batches:
        sizes = [lengths[i] for i in b]
        real += sum(sizes)
        padded += len(sizes) * max(sizes)
    return 1 - real / padded if padded else 0.0
