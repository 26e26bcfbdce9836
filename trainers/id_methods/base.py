"""The contract of a semantic-ID method and the registry that names them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ...modeling_lmindexer import SemanticIDMap

METHOD_FILE = "id_method.json"
@dataclass
class IndexResult:
    """What indexing a corpus gives: the ID map and the metrics written to `indexer_metrics.json`."""

    id_map: SemanticIDMap
    metrics: dict
    output_dir: Path
    is_main_process: bool = True


class IDMethod:
    """One way of making semantic IDs. Subclasses set `name` and implement both methods."""

    name: ClassVar[str]

    def index(self, corpus, args, training_args) -> IndexResult:
        """Learn IDs for `corpus` (`IndexArguments`, `IndexerTrainingArguments`) and write the indexer folder."""
        raise NotImplementedError

    def assign_new_documents(self, folder: Path, corpus, args) -> tuple[SemanticIDMap, list[int]]:
        """Zero-shot IDs for the documents of `corpus` that the folder's map lacks; returns the extended map
        (not yet saved) and the corpus rows that were new."""
        raise NotImplementedError

    @classmethod
    def stamp(cls, folder: Path, settings: dict | None = None) -> None:
        """Record in `folder` which method made it, so `lmindexer assign` knows how to extend it."""
        (Path(folder) / METHOD_FILE).write_text(json.dumps({"method": cls.name, **(settings or {})}, indent=2))


ID_METHODS: dict[str, type[IDMethod]] = {}


def register_id_method(name: str):
    """Class decorator: `@register_id_method("rqkmeans")` makes the method available by that name."""

    def register(method: type[IDMethod]) -> type[IDMethod]:
        if name in ID_METHODS and ID_METHODS[name] is not method:
            raise ValueError(f"An ID method named {name!r} is registered already ({ID_METHODS[name].__name__}).")
        method.name = name
        ID_METHODS[name] = method
        return method

    return register


def get_id_method(name: str) -> IDMethod:
    if name not in ID_METHODS:
        raise ValueError(f"Unknown ID method {name!r}; the methods are {', '.join(sorted(ID_METHODS))}.")
    return ID_METHODS[name]()


def method_of_folder(folder: str | Path) -> IDMethod:
    """The method that made an indexer folder (folders from before methods were recorded are LMIndexer's)."""
    stamp = Path(folder) / METHOD_FILE
    name = json.loads(stamp.read_text())["method"] if stamp.exists() else "lmindexer"
    return get_id_method(name)
