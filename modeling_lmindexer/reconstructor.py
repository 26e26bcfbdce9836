"""The shallow reconstructor that turns semantic-ID vectors back into document tokens.

Each ID vector is asked, once per token position, "which token stands here?". Every such question is a
query stream of its own (the ID vector plus the token's position, as in RetroMAE's enhanced decoding), so
one vector can predict many tokens without the streams seeing each other's answers. The streams read
the *hint* (the document with most tokens hidden) through cross-attention. The model is deliberately
shallow: a deep reconstructor learns the document itself and leaves the IDs uninformative.
"""

from __future__ import annotations

import torch
from torch import nn


def hint_keep_count(lengths: torch.Tensor, visible_ratio: float) -> torch.Tensor:
    """Tokens left visible per document: `round(ratio * length)`, at least one, and at least one hidden
    whenever the document has two or more tokens."""
    keep = torch.round(lengths.float() * visible_ratio).long()
    return torch.minimum(keep.clamp(min=1), (lengths - 1).clamp(min=1))


def sample_hint_mask(
    attention_mask: torch.Tensor, visible_ratio: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose, per document, which tokens stay visible in the hint and which must be reconstructed.

    `round(visible_ratio * length)` tokens stay visible, at least one, and at least one token is left to
    predict whenever the document has two or more tokens (see `hint_keep_count`). Returns boolean
    `(visible, targets)`.
    """
    present = attention_mask.bool()
    scores = torch.rand(present.shape, generator=generator, device=generator.device if generator else None)
    scores = scores.to(present.device).masked_fill(~present, 2.0)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    keep = hint_keep_count(present.sum(dim=1), visible_ratio)
    visible = (ranks < keep[:, None]) & present
    return visible, present & ~visible


class ReconstructorLayer(nn.Module):
    """Pre-norm cross-attention from the query streams to the hint, then a feed-forward block."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.query_norm = nn.LayerNorm(hidden_size)
        self.memory_norm = nn.LayerNorm(hidden_size)
        self.cross_attention = nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)
        self.feed_forward_norm = nn.LayerNorm(hidden_size)
        self.feed_forward = nn.Sequential(
            nn.Linear(hidden_size, 4 * hidden_size),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(4 * hidden_size, hidden_size),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor) -> torch.Tensor:
        memory = self.memory_norm(memory)
        attended, _ = self.cross_attention(
            self.query_norm(queries), memory, memory, key_padding_mask=memory_padding, need_weights=False
        )
        queries = queries + self.dropout(attended)
        return queries + self.dropout(self.feed_forward(self.feed_forward_norm(queries)))


class Reconstructor(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_layers: int,
        max_positions: int,
        dropout: float = 0.1,
        normalize_positions: bool = False,
    ):
        super().__init__()
        self.max_positions = max_positions
        self.position_embeddings = nn.Embedding(max_positions, hidden_size)
        # The ID query is a LayerNorm output (norm ~sqrt(D)); raw position embeddings start ~50x smaller, so every
        # stream would begin as the same query. Normalised, positions weigh as much as the ID from the start.
        self.position_norm = nn.LayerNorm(hidden_size) if normalize_positions else None
        self.id_projection = nn.Linear(hidden_size, hidden_size)
        self.id_norm = nn.LayerNorm(hidden_size)
        self.layers = nn.ModuleList(ReconstructorLayer(hidden_size, num_heads, dropout) for _ in range(num_layers))
        self.output_norm = nn.LayerNorm(hidden_size)

    def forward(
        self,
        id_vectors: list[torch.Tensor],
        hint_embeddings: torch.Tensor,
        visible: torch.Tensor,
        target_mask: torch.Tensor,
        token_embedding_weight: torch.Tensor,
    ) -> torch.Tensor:
        """Logits over the vocabulary for every target token, in row-major order of `target_mask`.

        `id_vectors` holds one `[batch, hidden]` tensor per ID position seen so far; each drives its own
        pass, and the passes' outputs are summed.
        """
        batch_size, length = visible.shape
        if length > self.max_positions:
            raise ValueError(
                f"Documents of {length} tokens exceed the reconstructor's {self.max_positions} positions; "
                "truncate them or raise `reconstructor_max_positions`."
            )
        positions = self.position_embeddings.weight[:length].unsqueeze(0)
        hint = hint_embeddings + positions
        summed = None
        for id_vector in id_vectors:
            id_query = self.id_norm(self.id_projection(id_vector)).unsqueeze(1)
            # The ID vector is also a memory slot, so a stream always has something to attend to.
            memory = torch.cat([id_query, hint], dim=1)
            memory_padding = torch.cat([visible.new_zeros(batch_size, 1), ~visible], dim=1)
            streams = id_query + (positions if self.position_norm is None else self.position_norm(positions))
            for layer in self.layers:
                streams = layer(streams, memory, memory_padding)
            summed = streams if summed is None else summed + streams
        hidden = self.output_norm(summed[target_mask])
        return hidden @ token_embedding_weight.t()
