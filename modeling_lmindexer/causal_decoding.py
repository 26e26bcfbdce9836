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


POSITION_ALIGNMENTS = ("start", "end")


def causal_position_ids(attention_mask: torch.Tensor, alignment: str = "start", tokens_after: int = 0) -> torch.Tensor:
    """Position ids counted over real tokens only, so that padding on either side changes nothing.

    `"start"`: the first token is position 0, as in text LMs. `"end"`: a token's position is the number of tokens that
    follow it in the whole stream (`tokens_after` more follow the given ones, e.g. the ID still to be decoded), as
    SASRec's left-padded windows have it: the item being predicted always sits at the same, most trained positions,
    however long the history, whereas with `"start"` the newest items of a long history sit at positions only long
    histories ever trained.
    """
    mask = attention_mask.long()
    if alignment == "start":
        return (mask.cumsum(-1) - 1).clamp(min=0)
    if alignment != "end":
        raise ValueError(f"Position alignment must be one of {POSITION_ALIGNMENTS}, got {alignment!r}.")
    after = mask.flip(-1).cumsum(-1).flip(-1) - mask  # real tokens after each one in the given rows
    return after + tokens_after


@torch.no_grad()
def prefix_shared_beam_search(
    backbone,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    processor: TrieConstrainedLogitsProcessor,
    num_beams: int,
    length_penalty: float = 1.0,
    alignment: str = "start",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search for the ID that follows each (left-padded) prompt.

    Returns `(tokens, scores)`: `[batch * num_beams, depth]` ID tokens and `[batch * num_beams]` scores, the summed
    log-probabilities divided by `depth ** length_penalty`, best beam first within each input. Beams that the trie
    could not fill (fewer IDs than beams) score `-inf`.
    """
    if not bool(attention_mask[:, -1].all()):
        raise ValueError("Causal decoding needs left-padded prompts: the last position of every row must be a token.")
    batch = input_ids.shape[0]
    depth = processor.trie.depth
    # The stream ends with the ID: `depth` tokens follow the prompt (see `causal_position_ids`).
    positions = causal_position_ids(attention_mask, alignment, tokens_after=depth)
    output = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True)
    cache = _returned_cache(output)
    cache_keyword = _cache_keyword(backbone)
    log_probs = output.logits[:, -1, :].float().log_softmax(-1)
    # Every beam starts as a copy of its input's prompt; only the first may extend at step 1, or the beams would
    # all pick the same tokens.
    cache.batch_repeat_interleave(num_beams)
    log_probs = log_probs.repeat_interleave(num_beams, 0)
    mask = attention_mask.repeat_interleave(num_beams, 0)
    step_position = 1 if alignment == "start" else -1  # counting up from the start, or down to the end
    next_position = positions.repeat_interleave(num_beams, 0)[:, -1:] + step_position
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
        output = backbone(
            input_ids=tokens, attention_mask=mask, position_ids=next_position, use_cache=True, **{cache_keyword: cache}
        )
        cache = _returned_cache(output)
        next_position = next_position + step_position
        log_probs = output.logits[:, -1, :].float().log_softmax(-1)
    return generated, beam_scores / (depth**length_penalty)
