"""Batching for the indexer stages: padding, per-document hint masks, and prefix-group batches."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch
from torch.utils.data import Sampler
from transformers import TrainerCallback

from ..modeling_lmindexer.reconstructor import hint_keep_count


class IndexerDataCollator:
    """Pads tokenised documents and draws each document's hint mask from its own seed.

    The seed is `(seed, document row, epoch)`, so a document's hint does not depend on which documents share
    its batch: gradient accumulation, a resumed run and a different batch size all see the same hints.
    """

    def __init__(self, tokenizer, hint_ratio: float, seed: int = 0):
        self.tokenizer = tokenizer
        self.hint_ratio = hint_ratio
        self.seed = seed
        self.epoch = 0

    def __call__(self, features: list[dict]) -> dict:
        padded = self.tokenizer.pad(
            [{"input_ids": f["input_ids"], "attention_mask": f["attention_mask"]} for f in features],
            return_tensors="pt",
        )
        batch = {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"]}
        lengths = padded["attention_mask"].sum(dim=1)
        keep = hint_keep_count(lengths, self.hint_ratio).tolist()
        visible = torch.zeros_like(padded["attention_mask"], dtype=torch.bool)
        for index, feature in enumerate(features):
            rng = np.random.default_rng([self.seed, int(feature["row"]), self.epoch])
            # Padding side is the tokenizer's; pick among the positions that hold tokens.
            token_positions = padded["attention_mask"][index].nonzero().flatten().numpy()
            chosen = rng.choice(token_positions, size=keep[index], replace=False)
            visible[index, torch.from_numpy(chosen)] = True
        batch["hint_visible"] = visible
        if "prefix_codes" in features[0] and len(features[0]["prefix_codes"]):
            batch["prefix_codes"] = torch.tensor([f["prefix_codes"] for f in features], dtype=torch.long)
        return batch


class HintEpochCallback(TrainerCallback):
    """Tells the collator which epoch it is drawing hints for (restored correctly on resume)."""

    def __init__(self, collator: IndexerDataCollator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.epoch = int(state.epoch + 1e-6) if state.epoch else 0


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


def prefix_keys(codes: np.ndarray, sizes: list[int]) -> np.ndarray:
    """One integer per row that is equal exactly when the rows' codes are equal (mixed radix)."""
    keys = np.zeros(len(codes), dtype=np.int64)
    for column, size in enumerate(sizes[: codes.shape[1]]):
        keys = keys * size + codes[:, column]
    return keys
