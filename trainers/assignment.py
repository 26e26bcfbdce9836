"""Batched passes of an indexer over a whole corpus: code assignment and `h^t` collection for k-means.

Documents are processed in length-sorted batches (less padding) and results are written back in corpus
order. Memory stays flat in corpus size: only the output arrays grow with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ..modeling_lmindexer import LMIndexerForSemanticID


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

    return _run(model, tokenizer, texts, step, num_positions, np.int64, batch_size, max_length, "assign", rows, progress)


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
