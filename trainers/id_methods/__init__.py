"""Semantic-ID methods behind `lmindexer index --method NAME`, in a registry (PEFT-style `register_id_method`).

A method turns a corpus into an indexer folder (ID map, metrics, card, and whatever it needs to give IDs to new
documents) and can extend that folder's map with new documents. The driver code only looks methods up here,
so adding one is a new module with a `@register_id_method("name")` class, imported below.
"""

from __future__ import annotations

from .base import ID_METHODS, IDMethod, IndexResult, get_id_method, method_of_folder, register_id_method
from . import lmindexer_method, two_stage  # noqa: F401  (register lmindexer, rqkmeans, rqvae, hkmeans)

__all__ = ["ID_METHODS", "IDMethod", "IndexResult", "get_id_method", "method_of_folder", "register_id_method"]
