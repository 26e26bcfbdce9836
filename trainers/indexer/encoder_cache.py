"""Encoder states computed once, for runs that keep the whole encoder frozen (`encoder_trainable_layers=0`).

A frozen encoder gives every document the same token states in every phase, so they are computed once (in eval
mode: no dropout) and the collator hands them to the model instead of re-running the encoder at every step. On a
CPU this removes most of a step's forward cost. They are stored as float16, unpadded, per document: about
`tokens x hidden x 2` bytes for the corpus (~200 MB for 12k product titles with a 384-wide encoder).
"""

from __future__ import annotations

import numpy as np
import torch

from ...modeling_lmindexer import LMIndexerForSemanticID


class EncoderStateCache:
    """The frozen encoder's last hidden states of every document, by corpus row."""

    def __init__(self, states: list[torch.Tensor]):
        self.states = states

    @classmethod
    @torch.no_grad()
    def build(
        cls, model: LMIndexerForSemanticID, input_ids: list[list[int]], pad_token_id: int, batch_size: int = 64
    ) -> "EncoderStateCache":
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        states: list[torch.Tensor | None] = [None] * len(input_ids)
        order = np.argsort([len(ids) for ids in input_ids], kind="stable")  # similar lengths pad little
        try:
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                width = max(len(input_ids[row]) for row in rows)
                ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for index, row in enumerate(rows):
                    ids[index, : len(input_ids[row])] = torch.tensor(input_ids[row])
                    mask[index, : len(input_ids[row])] = 1
                hidden = model.encode(ids.to(device), mask.to(device)).last_hidden_state.to("cpu", torch.float16)
                for index, row in enumerate(rows):
                    states[row] = hidden[index, : len(input_ids[row])].clone()
        finally:
            model.train(was_training)
        return cls(states)

    def padded(self, rows: list[int], attention_mask: torch.Tensor) -> torch.Tensor:
        """`[batch, length, hidden]` float32 states laid out as `attention_mask` lays out the tokens (either
        padding side), zeros at padding."""
        hidden_size = self.states[rows[0]].shape[-1]
        result = torch.zeros(*attention_mask.shape, hidden_size)
        for index, row in enumerate(rows):
            positions = attention_mask[index].nonzero().flatten()
            state = self.states[row]
            if len(positions) != len(state):
                raise ValueError(
                    f"Document row {row} has {len(positions)} tokens in the batch but {len(state)} cached "
                    "encoder states: the cache was built from another tokenisation."
                )
            result[index, positions] = state.float()
        return result
