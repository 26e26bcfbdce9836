"""The contract of a semantic-ID method, and how a method is found by name or by the folder it wrote."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ...hub_cards import LMIndexerCardData
from ...modeling_lmindexer import SemanticIDMap
from ...modeling_lmindexer.configuration_lmindexer import SEMANTIC_INDEXING
from ..folders.inspection import METHOD_FILE, folder_method
from .registry import ID_METHODS


@dataclass
class IndexResult:
    """What indexing a corpus gives: the ID map and the metrics written to `indexer_metrics.json`."""

    id_map: SemanticIDMap
    metrics: dict
    output_dir: Path
    is_main_process: bool = True


class IDMethod:
    """One way of making semantic IDs, under the name it is registered with. Subclasses implement both methods."""

    def __init__(self, name: str):
        self.name = name

    def index(self, corpus, args, training_args) -> IndexResult:
        """Learn IDs for `corpus` (`IndexArguments`, `IndexerTrainingArguments`) and write the indexer folder."""
        raise NotImplementedError

    def assign_new_documents(self, folder: Path, corpus, args) -> tuple[SemanticIDMap, list[int]]:
        """Zero-shot IDs for the documents of `corpus` that the folder's map lacks; returns the extended map
        (not yet saved) and the corpus rows that were new."""
        raise NotImplementedError

    def record(self, settings: dict | None = None) -> str:
        """The text of `id_method.json`: which method made a folder (and with what), so `lmindexer assign` knows how
        to extend it."""
        return json.dumps({"method": self.name, **(settings or {})}, indent=2)

    def stamp(self, folder: Path, settings: dict | None = None) -> None:
        (Path(folder) / METHOD_FILE).write_text(self.record(settings))


def indexer_card_data(args, training_args, corpus, base_model: str | None = None) -> LMIndexerCardData:
    """What an indexer folder's card says before the IDs are known: its dataset, base model and label field."""
    if args.corpus is None:
        dataset = "lmindexer demo catalogue (generated)"
    else:
        dataset = Path(args.corpus).name if Path(args.corpus).exists() else args.corpus  # a file, or a Hub dataset
    return LMIndexerCardData(
        model_id=training_args.hub_model_id,
        base_model=base_model,
        datasets=[dataset],
        task=SEMANTIC_INDEXING,
        label_field=corpus.label_field,
    )


def register_id_method(name: str):
    """Class decorator: `@register_id_method("rqkmeans")` makes the method available by that name."""
    return ID_METHODS.register(name)


def get_id_method(name: str) -> IDMethod:
    return ID_METHODS.get(name)(name)


def method_of_folder(folder: str | Path) -> IDMethod:
    """The method that made an indexer folder (folders from before methods were recorded are LMIndexer's)."""
    return get_id_method(folder_method(folder))
