"""Prefix trie of semantic IDs held in tensors, and a vectorised trie-constrained logits processor.

The trie is stored as CSR over globally numbered nodes (root = 0): the children of node n are the edges
`offsets[n]:offsets[n+1]`, each with the token it emits (`edge_tokens`, sorted within a node) and the node it
leads to (`edge_targets`). Every edge also has a search key `node * key_base + token`, sorted, so finding
the child reached by a token is one `searchsorted` for all rows at once.

A decoding step of [`TrieConstrainedLogitsProcessor`] is a fixed number of tensor operations over all
batch x beam rows, whatever the trie size: walk the generated prefix (one `searchsorted` per ID position),
gather each row's children (a fixed-width window of `max_branching` edges), and write the allowed scores into
a tensor of -inf. No Python loop over beams, and no device-to-host synchronisation except the one flag that the
dead-end check reads per step (none at all with `raise_on_dead_end=False`, the retriever's setting).

This file is copied to the Hub: it imports only torch, transformers, the standard library and its siblings.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


class SemanticIDTrie:
    """All valid semantic IDs as token sequences, each of the same length.

    Args:
        token_ids: `[N, L]` token id of every ID position of every document (e.g. `<id_1_23>` ... ids).
    """

    def __init__(self, token_ids: torch.Tensor):
        token_ids = torch.as_tensor(token_ids, dtype=torch.long)
        if token_ids.dim() != 2 or token_ids.shape[0] == 0:
            raise ValueError("A trie needs a non-empty `[N, L]` tensor of ID token sequences.")
        if bool((token_ids < 0).any()):
            raise ValueError("ID token ids must be non-negative.")
        self.depth = token_ids.shape[1]
        self.key_base = int(token_ids.max()) + 1
        token_ids = torch.unique(token_ids, dim=0)  # sorted lexicographically
        self.num_sequences = token_ids.shape[0]

        node_of_row = torch.zeros(token_ids.shape[0], dtype=torch.long)  # every row starts at the root
        next_free = 1
        sources, tokens, targets = [], [], []
        for level in range(self.depth):
            # Rows are sorted, so rows sharing (parent node, token) are adjacent: a new child starts where either
            # changes.
            pair_changes = torch.ones(token_ids.shape[0], dtype=torch.bool)
            pair_changes[1:] = (node_of_row[1:] != node_of_row[:-1]) | (token_ids[1:, level] != token_ids[:-1, level])
            child_index = torch.cumsum(pair_changes.long(), 0) - 1 + next_free
            sources.append(node_of_row[pair_changes])
            tokens.append(token_ids[pair_changes, level])
            targets.append(child_index[pair_changes])
            next_free = int(child_index[-1]) + 1
            node_of_row = child_index
        self.num_nodes = next_free
        sources, tokens, targets = torch.cat(sources), torch.cat(tokens), torch.cat(targets)
        # Edges come out grouped by source node in increasing order, and sorted by token within a node.
        self.edge_tokens = tokens
        self.edge_targets = targets
        self.edge_keys = sources * self.key_base + tokens
        counts = torch.bincount(sources, minlength=self.num_nodes)
        self.offsets = torch.zeros(self.num_nodes + 1, dtype=torch.long)
        self.offsets[1:] = torch.cumsum(counts, 0)
        self.max_branching = int(counts.max())

    @property
    def device(self) -> torch.device:
        return self.edge_keys.device

    def to(self, device: torch.device | str) -> "SemanticIDTrie":
        for name in ("edge_tokens", "edge_targets", "edge_keys", "offsets"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def walk(self, prefixes: torch.Tensor) -> torch.Tensor:
        """Node reached by each row of `prefixes` `[R, d]`; -1 where the prefix is not in the trie."""
        node = torch.zeros(prefixes.shape[0], dtype=torch.long, device=prefixes.device)
        for level in range(prefixes.shape[1]):
            keys = node * self.key_base + prefixes[:, level]
            slot = torch.searchsorted(self.edge_keys, keys).clamp(max=self.edge_keys.numel() - 1)
            found = (self.edge_keys[slot] == keys) & (node >= 0) & (prefixes[:, level] < self.key_base)
            node = torch.where(found, self.edge_targets[slot], torch.full_like(node, -1))
        return node

    def children(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens allowed after each node, as a `[R, max_branching]` window and its validity mask.

        Window slots past a node's last child repeat its first child, so a scatter of the window never writes
        a token of another node.
        """
        alive = nodes >= 0
        safe = nodes.clamp(min=0)
        start = self.offsets[safe]
        count = torch.where(alive, self.offsets[safe + 1] - start, torch.zeros_like(start))
        window = torch.arange(self.max_branching, device=nodes.device)
        valid = window[None, :] < count[:, None]
        index = torch.where(valid, start[:, None] + window[None, :], start[:, None])
        return self.edge_tokens[index.clamp(max=self.edge_tokens.numel() - 1)], valid

    def allowed_tokens(self, prefix: list[int]) -> list[int]:
        """Plain-list view of the tokens allowed after `prefix` (for inspection and tests)."""
        node = self.walk(torch.tensor([prefix], dtype=torch.long, device=self.device))
        tokens, valid = self.children(node)
        return tokens[0][valid[0]].tolist()

    def contains(self, sequences: torch.Tensor) -> torch.Tensor:
        """Whether each full `[R, L]` sequence is a valid ID."""
        if sequences.shape[1] != self.depth:
            return torch.zeros(sequences.shape[0], dtype=torch.bool, device=sequences.device)
        return self.walk(sequences) >= 0


class TrieConstrainedLogitsProcessor(LogitsProcessor):
    """Lets a seq2seq model generate only full IDs of a [`SemanticIDTrie`], then EOS.

    Works as `logits_processor=[...]` for any HF seq2seq `generate`: the decoder's output is the start token,
    the `trie.depth` ID tokens, then `eos_token_id`. After EOS only padding follows. A row whose prefix left
    the trie (possible only when it was forced in from outside) may emit EOS alone, so that scores never
    become all -inf and beam search does not produce NaNs; callers recognise such sequences as invalid with
    `trie.contains`.

    A row of the trie with no allowed token left is a dead end: something else banned every continuation the trie
    allows (`min_new_tokens` or `min_length` longer than an ID, `bad_words_ids` / `suppress_tokens` covering ID tokens
    or EOS, another processor). Decoding on would emit tokens that are not an ID, so it raises a `ValueError` instead.

    Args:
        trie: the valid IDs.
        eos_token_id: token that ends an ID.
        prompt_length: decoder tokens before the first ID token (1: the decoder start token).
        pad_token_id: token of finished rows; defaults to `eos_token_id`.
        raise_on_dead_end: `True` (default) checks every step and raises at once, which reads one flag back from the
            device per step (free on CPU). `False` only records dead ends on the device, without any host sync;
            the caller then calls [`raise_if_dead_end`] once after `generate`, as `LMIndexerForGenerativeRetrieval`
            does.
    """

    def __init__(
        self,
        trie: SemanticIDTrie,
        eos_token_id: int,
        prompt_length: int = 1,
        pad_token_id: int | None = None,
        raise_on_dead_end: bool = True,
    ):
        self.trie = trie
        self.eos_token_id = int(eos_token_id)
        self.pad_token_id = self.eos_token_id if pad_token_id is None else int(pad_token_id)
        self.prompt_length = prompt_length
        self.raise_on_dead_end = raise_on_dead_end
        self.dead_end: torch.Tensor | None = None  # device-side flag, set when `raise_on_dead_end` is False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # Works in place on `scores`: allocating a fresh [rows, vocabulary] tensor every step costs far more
        # than the constraint itself (page faults on CPU, an extra allocation on GPU).
        if self.trie.device != scores.device:
            self.trie.to(scores.device)
        generated = input_ids[:, self.prompt_length :]
        depth = generated.shape[1]
        if depth >= self.trie.depth:
            finished_token = self.eos_token_id if depth == self.trie.depth else self.pad_token_id
            kept = scores[:, finished_token].clone()
            scores.fill_(float("-inf"))
            scores[:, finished_token] = kept
            if depth == self.trie.depth:  # later steps only pad rows that have ended already
                self._record_dead_ends(kept == float("-inf"), depth)
            return scores
        nodes = self.trie.walk(generated)
        tokens, valid = self.trie.children(nodes)
        # Invalid window slots repeat the first child with its own score: duplicates write equal values.
        allowed_scores = scores.gather(1, tokens).masked_fill(~valid[:, :1], float("-inf"))
        dead = nodes < 0
        # Checked on the small window of allowed scores, not the whole vocabulary row.
        self._record_dead_ends(
            (allowed_scores.masked_fill(~valid, float("-inf")) == float("-inf")).all(1) & ~dead, depth
        )
        scores.fill_(float("-inf"))
        scores.scatter_(1, tokens, allowed_scores)
        # Rows outside the trie may only end; a finite score keeps beam search free of NaNs.
        scores[:, self.eos_token_id] = torch.where(
            dead, torch.full_like(scores[:, self.eos_token_id], -1e4), scores[:, self.eos_token_id]
        )
        return scores

    def _record_dead_ends(self, stuck: torch.Tensor, depth: int) -> None:
        if self.raise_on_dead_end:
            if bool(stuck.any()):
                raise ValueError(self._dead_end_message(depth))
        else:
            self.dead_end = stuck.any() if self.dead_end is None else self.dead_end | stuck.any()

    def dead_end_error(self) -> ValueError | None:
        """The dead-end error if any step recorded one (with `raise_on_dead_end=False`), else None; resets the flag."""
        dead_end, self.dead_end = self.dead_end, None
        return ValueError(self._dead_end_message(None)) if dead_end is not None and bool(dead_end) else None

    def raise_if_dead_end(self) -> None:
        """Raise the dead-end `ValueError` if any step recorded one (with `raise_on_dead_end=False`)."""
        error = self.dead_end_error()
        if error is not None:
            raise error

    def _dead_end_message(self, depth: int | None) -> str:
        where = (
            ""
            if depth is None
            else (" at the EOS step" if depth == self.trie.depth else f" at ID token {depth + 1} of {self.trie.depth}")
        )
        return (
            f"Trie-constrained decoding reached a dead end{where}: another generation setting or logits processor "
            f"banned every token the trie allows (each ID is {self.trie.depth} ID tokens then EOS); check "
            "`min_new_tokens`, `min_length`, `bad_words_ids`, `suppress_tokens` and custom processors."
        )
