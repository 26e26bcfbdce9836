"""Downstream batches: input texts encoded as the model encodes queries, target documents as ID-token labels."""

from __future__ import annotations

import torch


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
            encoded = self.tokenizer(
                texts, max_length=self.max_length, truncation=True, padding=True, return_tensors="pt"
            )
        rows = [self.model.id_map.semantic_id(f["target_doc_id"]) for f in features]
        tokens = self.model.codes_to_tokens(torch.tensor(rows, dtype=torch.long))
        eos = torch.full((len(features), 1), self.model.eos_token_id, dtype=torch.long)
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "labels": torch.cat([tokens, eos], 1),
        }
