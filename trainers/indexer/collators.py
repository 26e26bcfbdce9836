"""Indexer batches: padding and per-document hint masks."""

from __future__ import annotations

import numpy as np
import torch
from transformers import TrainerCallback

from ...modeling_lmindexer.reconstructor import hint_keep_count


class IndexerDataCollator:
    """Pads tokenised documents and draws each document's hint mask from its own seed.

    The seed is `(seed, document row, epoch)`, so a document's hint does not depend on which documents share
    its batch: gradient accumulation, a resumed run and a different batch size all see the same hints.
    """

    def __init__(self, tokenizer, hint_ratio: float, seed: int = 0, encoder_states=None):
        self.tokenizer = tokenizer
        self.hint_ratio = hint_ratio
        self.seed = seed
        self.epoch = 0
        # An `EncoderStateCache` of a frozen encoder: batches then carry the encoder's states by document row.
        self.encoder_states = encoder_states

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
        if self.encoder_states is not None:
            rows = [int(feature["row"]) for feature in features]
            batch["encoder_hidden_states"] = self.encoder_states.padded(rows, padded["attention_mask"])
        if "prefix_codes" in features[0] and len(features[0]["prefix_codes"]):
            batch["prefix_codes"] = torch.tensor([f["prefix_codes"] for f in features], dtype=torch.long)
        return batch


class HintEpochCallback(TrainerCallback):
    """Tells the collator which epoch it is drawing hints for (restored correctly on resume)."""

    def __init__(self, collator: IndexerDataCollator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.epoch = int(state.epoch + 1e-6) if state.epoch else 0
