"""Loss terms of the semantic indexer, each a plain function of tensors so it can be checked by hand."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def shared_prefix_mask(prefix_codes: torch.Tensor | None, batch_size: int, device: torch.device) -> torch.Tensor:
    """`[batch, batch]` boolean: True where two documents share every earlier code (all pairs at t = 1)."""
    if prefix_codes is None or prefix_codes.shape[1] == 0:
        return torch.ones(batch_size, batch_size, dtype=torch.bool, device=device)
    return (prefix_codes[:, None, :] == prefix_codes[None, :, :]).all(dim=-1)


def prefix_contrastive_loss(
    hidden: torch.Tensor, prefix_codes: torch.Tensor | None, temperature: float, positive: torch.Tensor | None = None
) -> torch.Tensor:
    """Push apart the `h^t` of documents that share the prefix `c^{<t}`.

    For document i, the candidates are the documents of its prefix group (itself included) and the loss is
    `-log softmax_j(cos(h_i, v_j) / temperature)` at j = i, where `v` is `positive` (a second view of every
    document, e.g. another dropout pass: SimCSE) or `hidden` itself. With `hidden` itself the j = i term is a
    constant under cosine, so the loss only spreads the group; a real positive view also pulls each document
    towards its own view. Averaged over documents with at least one partner in the batch; documents alone in
    their group carry no signal and are left out; a batch with no shared prefix gives a zero in the graph.
    """
    normalized = F.normalize(hidden.float(), dim=-1)
    views = normalized if positive is None else F.normalize(positive.float(), dim=-1)
    similarity = normalized @ views.t() / temperature
    same_group = shared_prefix_mask(prefix_codes, hidden.shape[0], hidden.device)
    similarity = similarity.masked_fill(~same_group, float("-inf"))
    log_prob_self = similarity.diagonal() - torch.logsumexp(similarity, dim=1)
    has_partner = same_group.sum(dim=1) > 1
    if not bool(has_partner.any()):
        return hidden.sum() * 0.0
    return -log_prob_self[has_partner].mean()


def commitment_loss(earlier_logits: list[torch.Tensor], prefix_codes: torch.Tensor | None) -> torch.Tensor | None:
    """Cross-entropy of the indexer still predicting its frozen earlier codes; None at t = 1."""
    if not earlier_logits:
        return None
    losses = [F.cross_entropy(logits.float(), prefix_codes[:, index]) for index, logits in enumerate(earlier_logits)]
    return torch.stack(losses).mean()
