"""Batched passes of an indexer over a whole corpus: code assignment, `h^t` collection for k-means, and
zero-shot IDs for new documents.

Documents are processed in length-sorted batches (less padding) and results are written back in corpus
order. Memory stays flat in corpus size: only the output arrays grow with it. Under `torch.distributed`,
`DistributedPasses` splits a pass across ranks and gathers every rank's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ...modeling_lmindexer import LMIndexerForSemanticID, SemanticIDMap
from ..data.corpus import text_digests


def _batches(texts: list[str], batch_size: int, rows: list[int] | None = None) -> Iterator[np.ndarray]:
    # numpy row arrays rather than Python lists: the bookkeeping stays a few bytes per document.
    rows = np.arange(len(texts)) if rows is None else np.asarray(rows, dtype=np.int64)
    lengths = np.fromiter((len(texts[row]) for row in rows), dtype=np.int64, count=len(rows))
    ordered = rows[np.argsort(lengths, kind="stable")]
    for start in range(0, len(ordered), batch_size):
        yield ordered[start : start + batch_size]


def _run(
    model: LMIndexerForSemanticID,
    tokenizer,
    texts: list[str],
    step: Callable[[dict, list[int]], np.ndarray],
    width: int,
    dtype,
    batch_size: int,
    max_length: int,
    description: str,
    rows: list[int] | None = None,
    progress: bool = True,
) -> np.ndarray:
    result = np.zeros((len(texts), width), dtype=dtype)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        total = -(-(len(texts) if rows is None else len(rows)) // batch_size)
        for batch_rows in tqdm(
            _batches(texts, batch_size, rows), total=total, desc=description, disable=not progress, leave=False
        ):
            encoded = tokenizer(
                [texts[row] for row in batch_rows],
                max_length=max_length,
                truncation=True,
                padding=True,
                return_tensors="pt",
            )
            encoded = {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
            result[batch_rows] = step(encoded, batch_rows)
    finally:
        model.train(was_training)
    return result


def assign_corpus(
    model: LMIndexerForSemanticID,
    tokenizer,
    texts: list[str],
    num_positions: int | None = None,
    prefix_codes: np.ndarray | None = None,
    batch_size: int = 64,
    max_length: int = 512,
    rows: list[int] | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Greedy codes `[N, num_positions]` for every text; `prefix_codes` pins already frozen positions."""
    num_positions = num_positions or model.config.id_length
    device = next(model.parameters()).device

    def step(encoded, batch_rows):
        pinned = None if prefix_codes is None else torch.as_tensor(prefix_codes[batch_rows], device=device)
        return model.assign_codes(**encoded, num_positions=num_positions, prefix_codes=pinned).cpu().numpy()

    return _run(
        model, tokenizer, texts, step, num_positions, np.int64, batch_size, max_length, "assign", rows, progress
    )


def collect_hidden_states(
    model: LMIndexerForSemanticID,
    tokenizer,
    texts: list[str],
    prefix_codes: np.ndarray | None,
    batch_size: int = 64,
    max_length: int = 512,
    rows: list[int] | None = None,
    progress: bool = True,
) -> np.ndarray:
    """`h^t` (float32 `[N, D]`) for t = one past the `prefix_codes` columns."""
    device = next(model.parameters()).device

    def step(encoded, batch_rows):
        prefix = None
        if prefix_codes is not None and prefix_codes.shape[1]:
            prefix = torch.as_tensor(prefix_codes[batch_rows], device=device)
        return model.encode_position(**encoded, prefix_codes=prefix).float().cpu().numpy()

    width = model.config.decoder_hidden_size
    return _run(model, tokenizer, texts, step, width, np.float32, batch_size, max_length, "h^t", rows, progress)


def assign_new_documents(
    model: LMIndexerForSemanticID,
    tokenizer,
    corpus,
    id_map: SemanticIDMap,
    batch_size: int = 128,
    max_length: int = 512,
    progress: bool = True,
) -> tuple[SemanticIDMap, list[int]]:
    """Zero-shot IDs for the documents of `corpus` that `id_map` lacks; mapped documents keep their IDs.

    `max_length` should be the one the indexer was trained with (`model.config.indexing_max_length`). Returns the
    extended map (which records a digest of each new document's text) and the corpus rows that were new.
    """
    fresh = [row for row, doc_id in enumerate(corpus.doc_ids) if doc_id not in id_map]
    if not fresh:
        return id_map, fresh
    codes = assign_corpus(
        model, tokenizer, corpus.texts, batch_size=batch_size, max_length=max_length, rows=fresh, progress=progress
    )
    fresh_corpus = corpus.select(fresh)
    return id_map.extend(
        fresh_corpus.doc_ids,
        torch.as_tensor(codes[fresh]),
        fresh_corpus.titles,
        text_digests=text_digests(fresh_corpus.texts),
    ), fresh


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class DistributedPasses:
    """Splits corpus-wide passes across `torch.distributed` ranks; a no-op wrapper in a single process."""

    def __init__(self, num_rows: int):
        self.num_rows = num_rows
        self.rank, self.world_size = rank_and_world()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def run(self, pass_over_rows: Callable[[list[int]], np.ndarray]) -> np.ndarray:
        """`pass_over_rows(rows)` over this rank's share of the rows, with every rank's rows gathered in."""
        rows = list(range(self.rank, self.num_rows, self.world_size))
        result = pass_over_rows(rows)
        if self.world_size == 1:
            return result
        shares = [None] * self.world_size
        dist.all_gather_object(shares, (rows, result[rows]))
        for share_rows, values in shares:
            result[share_rows] = values
        return result

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank."""
        if self.world_size == 1:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()
