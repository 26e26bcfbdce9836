"""Semantic-ID methods behind `lmindexer index --method NAME`, in a registry (`register_id_method`), and the Python API
of `lmindexer index` / `assign` (`indexing`).

A method turns a corpus into an indexer folder (ID map, metrics, card, and whatever it needs to give IDs to new
documents) and can extend that folder's map with new documents. The driver code only looks methods up here, so
adding one is a new module with a `@register_id_method("name")` class. LMIndexer's own method trains through
`lmindexer.trainers.indexer`; the two-stage ones (`rqkmeans`, `rqvae`, `hkmeans`, `random`) quantise sentence
embeddings.
"""

from __future__ import annotations

from .base import IDMethod, IndexResult, get_id_method, method_of_folder, register_id_method
from .registry import ID_METHODS

__all__ = ["ID_METHODS", "IDMethod", "IndexResult", "get_id_method", "method_of_folder", "register_id_method"]
