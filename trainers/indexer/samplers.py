"""Batch samplers for the indexer stages."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from torch.utils.data import Sampler


class PrefixGroupBatchSampler(Sampler[list[int]]):
    """Batches made of whole prefix groups, so the contrastive loss at t >= 2 has pairs to push apart.

    Each epoch shuffles the groups, shuffles inside each group, lays the groups end to end and cuts batches of
    `batch_size`; then the batch order is shuffled. A group larger than a batch fills whole batches. Under DDP,
    accelerate shards these batches across processes.
    """

    def __init__(self, prefix_keys: np.ndarray, batch_size: int, seed: int = 0):
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        groups: dict[int, list[int]] = defaultdict(list)
        for row, key in enumerate(prefix_keys.tolist()):
            groups[key].append(row)
        self.groups = [np.asarray(rows) for _, rows in sorted(groups.items())]
        self.num_rows = len(prefix_keys)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.groups))
        rows = np.concatenate([rng.permutation(self.groups[g]) for g in order])
        batches = [rows[start : start + self.batch_size].tolist() for start in range(0, len(rows), self.batch_size)]
        for index in rng.permutation(len(batches)):
            yield batches[index]
        self.epoch += 1

    def __len__(self) -> int:
        return math.ceil(self.num_rows / self.batch_size)
