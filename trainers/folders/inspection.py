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


def check_folder_files(folder: str | Path) -> None:
    """Raise a `ValueError` naming the first file of a local model folder that cannot be read: a `.json` file that is
    not JSON, or a `.safetensors` file whose header is cut off or corrupt (both what an interrupted copy leaves).
    Only headers are read: a weights file is not loaded here."""
    from safetensors import safe_open

    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".safetensors":
                with safe_open(str(path), framework="numpy") as handle:
                    handle.keys()
        except Exception as error:  # JSONDecodeError, UnicodeDecodeError, SafetensorError
            reason = " ".join(str(error).split()) or type(error).__name__
            raise ValueError(
                f"{path} cannot be read ({reason}): it is cut off or corrupt; restore it, or rerun the "
                "command that wrote the folder."
            ) from None


def two_stage_folder_error(folder: str | Path, command: str) -> ValueError | None:
    """The error for a two-stage ID folder (rqkmeans, rqvae, hkmeans, random: an ID map and quantiser, no language
    model) given to a command that needs a model; None for any other folder."""
    method = folder_method(folder) if Path(folder).is_dir() else UNRECORDED_METHOD
    if method == UNRECORDED_METHOD or (Path(folder) / CONFIG_FILE).is_file():
        return None
    return ValueError(
        f"{folder} holds {method} IDs (an ID map and its quantiser, no language model), which "
        f"`lmindexer {command}` cannot use: it needs an LMIndexer indexer or a fine-tuned retriever. "
        f"Fine-tune one on these IDs (`lmindexer finetune --indexer {folder} --backbone MODEL`) and "
        f"{command} that."
    )
