"""Decoding a semantic ID after a prompt with a decoder-only (causal) backbone, under the ID trie.

A causal retriever reads its input and writes the ID in one token stream: `<bos>` and the user's history (each item
its ID tokens), then the next item's ID tokens. Beam search here differs from `GenerationMixin.generate` in one
way that matters on a CPU: the prompt is encoded once per input and its key/value cache is then copied to the beams,
instead of encoding the prompt once per beam (20 times the work for 20 beams). The steps themselves are the usual
beam search over `trie.depth` tokens (every ID has that length, so there is no EOS step and no early stop), with the
allowed tokens of each beam given by the project's `TrieConstrainedLogitsProcessor`, and scores that are
log-softmax over the whole vocabulary (the trie removes tokens, it does not renormalise), as in `generate`.

This file is copied to the Hub: it imports only torch, transformers, the standard library and its siblings.
"""

from __future__ import annotations

import inspect

import torch

from .trie import TrieConstrainedLogitsProcessor


def _cache_keyword(backbone) -> str:
    """The name under which the backbone's forward takes a key/value cache (`cache` in newer transformers releases,
    `past_key_values` before)."""
    parameters = inspect.signature(backbone.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _returned_cache(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def causal_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so that a left-padded prompt gets the positions it gets alone (and
    training on right-padded streams, which passes the same ids, sees what decoding sees)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def prefix_shared_beam_search(backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                              processor: TrieConstrainedLogitsProcessor, num_beams: int,
                              length_penalty: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search for the ID that follows each (left-padded) prompt.

    Returns `(tokens, scores)`: `[batch * num_beams, depth]` ID tokens and `[batch * num_beams]` scores, the summed
    log-probabilities divided by `depth ** length_penalty`, best beam first within each input. Beams that the trie
    could not fill (fewer IDs than beams) score `-inf`.
    """
    if not bool(attention_mask[:, -1].all()):
        raise ValueError("Causal decoding needs left-padded prompts: the last position of every row must be a token.")
    batch = input_ids.shape[0]
    depth = processor.trie.depth
    output = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=causal_position_ids(attention_mask),
                      use_cache=True)
    cache = _returned_cache(output)
    cache_keyword = _cache_keyword(backbone)
    log_probs = output.logits[:, -1, :].float().log_softmax(-1)
    # Every beam starts as a copy of its input's prompt; only the first may extend at step 1, or the beams would
    # all pick the same tokens.
    cache.batch_repeat_interleave(num_beams)
    log_probs = log_probs.repeat_interleave(num_beams, 0)
    mask = attention_mask.repeat_interleave(num_beams, 0)
    next_position = causal_position_ids(mask)[:, -1:] + 1
    beam_scores = torch.full((batch, num_beams), float("-inf"), device=input_ids.device)
    beam_scores[:, 0] = 0.0
    beam_scores = beam_scores.view(-1)
    generated = input_ids.new_empty((batch * num_beams, 0))
    offsets = (torch.arange(batch, device=input_ids.device) * num_beams)[:, None]
    for step in range(depth):
        allowed = processor(generated, log_probs)
        vocabulary = allowed.shape[-1]
        candidates = (allowed + beam_scores[:, None]).view(batch, num_beams * vocabulary)
        top_scores, top_index = candidates.topk(num_beams, dim=1)
        source = (top_index // vocabulary + offsets).view(-1)
        tokens = (top_index % vocabulary).view(-1, 1)
        beam_scores = top_scores.view(-1)
        generated = torch.cat([generated[source], tokens], 1)
        if step == depth - 1:
            break
        cache.reorder_cache(source)
        mask = torch.cat([mask[source], mask.new_ones((mask.shape[0], 1))], 1)
        output = backbone(input_ids=tokens, attention_mask=mask, position_ids=next_position, use_cache=True,
                          **{cache_keyword: cache})
        cache = _returned_cache(output)
        next_position = next_position + 1
        log_probs = output.logits[:, -1, :].float().log_softmax(-1)
    return generated, beam_scores / (depth**length_penalty)
