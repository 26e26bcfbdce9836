"""How big an ID's positions are: codebook sizes for a corpus, and the dedup position for the codes learned."""

from __future__ import annotations

import numpy as np

from ...modeling_lmindexer.semantic_id_map import prefix_keys
from ..data.lists import number_list

PAPER_CODEBOOK_SIZE = 512
MIN_DOCUMENTS_PER_CODE = 4


def default_codebook_size(num_documents: int) -> int:
    """512 (the paper's size for ~12k items), halved until k-means has at least 4 documents per code."""
    size = PAPER_CODEBOOK_SIZE
    while size > 2 and size * MIN_DOCUMENTS_PER_CODE > num_documents:
        size //= 2
    return size


def automatic_dedup_size(codes: np.ndarray, codebook_sizes: list[int]) -> int:
    """The next power of two strictly above the largest group of documents sharing all learned codes, so that even
    that group has room for documents added later by `lmindexer assign` (largest 1 -> 2, 3 -> 4, 4 -> 8)."""
    _, group_sizes = np.unique(prefix_keys(codes, codebook_sizes), return_counts=True)
    return 1 << int(group_sizes.max()).bit_length()


def check_codebook_fits(subject: str, codes: int, documents: int) -> None:
    """Raise when `subject` (k-means, a quantiser, a codebook) is asked for more codes than there are documents to
    cluster into them: every code needs at least one document."""
    if codes > documents:
        raise ValueError(
            f"{subject} cannot make {codes} codes from {documents} documents: it needs at least {codes} "
            f"documents, got {documents}; add documents or lower the codebook size to {documents} or less."
        )


def check_codebook_sizes(codebook_sizes: int | list[int], id_length: int, num_documents: int) -> None:
    """Raise before any training (or embedding pass) when a codebook has more codes than there are documents."""
    sizes = [codebook_sizes] * id_length if isinstance(codebook_sizes, int) else list(codebook_sizes)
    for position, size in enumerate(sizes, start=1):
        check_codebook_fits(f"--codebook_size: codebook {position}", size, num_documents)


def resolve_codebook_sizes(codebook_size: str | None, num_documents: int) -> int | list[int]:
    """`--codebook_size` as given (`"256"` or `"256,128"`), or the default for the corpus size."""
    sizes = number_list(codebook_size, int)
    return default_codebook_size(num_documents) if sizes is None else sizes
