"""Collators: indexer batches (padding and per-document hint masks) and downstream (text, ID-token) batches."""

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


class RetrievalCollator:
    """Tokenises input texts and turns target documents into ID-token labels followed by EOS.

    Texts are encoded by the model's `encode_queries`, as `retrieve` encodes them: cut to `max_length` tokens at the
    model config's `truncation_side` (the left end for histories that read oldest to newest, so the newest items stay).
    """

    def __init__(self, tokenizer, model, max_length: int = 512):
        self.tokenizer = tokenizer
        self.model = model
        self.max_length = max_length

    def __call__(self, features: list[dict]) -> dict:
        texts = [f["input_text"] for f in features]
        encode = getattr(self.model, "encode_queries", None)
        if encode is not None:
            encoded = encode(texts, self.tokenizer, max_length=self.max_length, warn=False)
        else:
            encoded = self.tokenizer(texts, max_length=self.max_length, truncation=True, padding=True, return_tensors="pt")
        rows = [self.model.id_map.semantic_id(f["target_doc_id"]) for f in features]
        tokens = self.model.codes_to_tokens(torch.tensor(rows, dtype=torch.long))
        eos = torch.full((len(features), 1), self.model.eos_token_id, dtype=torch.long)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": torch.cat([tokens, eos], 1)}
