"""What a saved indexer or retriever folder says about itself, read from its files alone (no model is loaded): its
config, its model type, the ID method that made it and the fields its documents were read from.

```
runs/x/config.json      an LMIndexer's (or a retriever's) config; two-stage folders have none
runs/x/id_method.json   {"method": "rqkmeans", "embedding": {...}, "quantizer": {...}}; LMIndexer folders from before
                        methods were recorded have none, and are LMIndexer's
```
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_FILE = "config.json"
METHOD_FILE = "id_method.json"
# The method of a folder without `METHOD_FILE`: only LMIndexer wrote folders before methods were recorded.
UNRECORDED_METHOD = "lmindexer"


def _json_file(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def folder_config(folder: str | Path) -> dict:
    """The folder's config.json as a dict ({} when it has none, as two-stage folders)."""
    return _json_file(Path(folder) / CONFIG_FILE)


def folder_model_type(folder: str | Path) -> str | None:
    """The `model_type` in the folder's config.json (None when it has none)."""
    return folder_config(folder).get("model_type")


def method_record(folder: str | Path) -> dict:
    """The folder's `id_method.json` ({} when it has none)."""
    return _json_file(Path(folder) / METHOD_FILE)


def folder_method(folder: str | Path) -> str:
    """The name of the ID method that made the folder."""
    return method_record(folder).get("method", UNRECORDED_METHOD)


def indexed_text_fields(folder: str | Path) -> list[str] | None:
    """The record fields joined into a document's text when the folder's IDs were made: an LMIndexer config's
    `indexing_text_fields`, or the embedding settings a two-stage method recorded."""
    fields = folder_config(folder).get("indexing_text_fields")
    if fields:
        return fields
    embedding = method_record(folder).get("embedding")
    return embedding.get("text_fields") if isinstance(embedding, dict) else None
