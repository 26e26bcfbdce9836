"""The Python API behind `lmindexer index` and `lmindexer assign`.

```python
from lmindexer.trainers.id_methods.arguments import AssignArguments, IndexArguments
from lmindexer.trainers.indexer.arguments import IndexerTrainingArguments
from lmindexer.trainers.id_methods.indexing import assign_documents, index_corpus
result = index_corpus(IndexArguments(corpus="items.jsonl", method="lmindexer"),
                      IndexerTrainingArguments(output_dir="runs/x"))
assign_documents(AssignArguments(model="runs/x", corpus="new_items.jsonl"))
```
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from transformers import set_seed

from ...modeling_lmindexer.atomic_writes import atomic_file
from ...modeling_lmindexer.modeling_lmindexer import check_model_folder
from ...modeling_lmindexer.semantic_id_map import ID_MAP_FILE, DedupCapacityError, SemanticIDMap
from ..data.corpus import TEXT_SEPARATOR, Corpus, build_corpus, load_records, text_digests
from ..data.demo import DEMO_LABEL_FIELD, generate_demo_corpus
from ..data.lists import split_names
from ..folders.fault_points import crash_point
from ..folders.inspection import folder_config, indexed_text_fields
from ..folders.model_folder import MAP_LOCK_FILE, folder_lock
from ..indexer.arguments import IndexerTrainingArguments
from . import IndexResult, get_id_method, method_of_folder
from .arguments import AssignArguments, IndexArguments

logger = logging.getLogger("lmindexer")

# Held (flock) by `assign_documents` while it reads, extends and writes the folder's map.
ASSIGN_LOCK_FILE = MAP_LOCK_FILE
DEFAULT_TEXT_FIELDS = ["title", "brand"]


def load_index_corpus(args: IndexArguments) -> Corpus:
    """The corpus `args` names, or the generated demo catalogue (labelled by subcategory) when it names none; the
    label field it was read with is `Corpus.label_field`."""
    if args.corpus is None:
        records, label_field = generate_demo_corpus(), args.label_field or DEMO_LABEL_FIELD
    else:
        records, label_field = load_records(args.corpus), args.label_field
    return build_corpus(records, args.id_field, args.text_field_list, label_field, args.label_level, args.title_field)


def index_corpus(args: IndexArguments, training_args: IndexerTrainingArguments) -> IndexResult:
    """Learn semantic IDs for a corpus with `args.method` and write the indexer folder to `output_dir`."""
    method = get_id_method(args.method)
    corpus = load_index_corpus(args)
    set_seed(training_args.seed)
    return method.index(corpus, args, training_args)


def assign_documents(args: AssignArguments) -> dict:
    """Give IDs to unseen documents and extend the folder's map; documents already mapped keep their IDs.

    Documents are read as the indexer read them when it was trained (its recorded text fields, separator and
    length) unless `args` says otherwise. New documents are encoded first; then, holding an exclusive lock on the
    folder (`semantic_id_map.lock`, waited for up to `args.lock_timeout` seconds; the OS releases it if its holder
    dies), the map is read again, extended and written, so concurrent runs on one folder each add their documents.

    Returns `{"new_documents", "already_mapped", "changed_texts", "map_size", "examples"}`, plus
    `"dedup_size": [old, new]` and `"changed_ids"` when `args.rededuplicate` grew the dedup position.
    """
    folder = Path(args.model)
    if not folder.is_dir():
        check_model_folder(folder)
        raise FileNotFoundError(f"--model {args.model} is not a folder: give the folder of a trained indexer.")
    config = folder_config(folder)
    text_fields = split_names(args.text_fields) or indexed_text_fields(folder) or DEFAULT_TEXT_FIELDS
    separator = config.get("indexing_text_separator") or TEXT_SEPARATOR
    corpus = build_corpus(
        load_records(args.corpus), args.id_field, text_fields, title_field=args.title_field, separator=separator
    )
    read_run_id, new_codes = _encode_new_documents(folder, corpus, args)
    with folder_lock(folder / ASSIGN_LOCK_FILE, args.lock_timeout):
        current = SemanticIDMap.load(folder / ID_MAP_FILE)  # again: another run may have extended it meanwhile
        if current.run_id != read_run_id:
            raise RuntimeError(
                f"The ID map of {folder} was replaced by another run while new documents were encoded; "
                "run `lmindexer assign` again."
            )
        fresh = [row for row, doc_id in enumerate(corpus.doc_ids) if doc_id not in current]
        changed = current.changed_documents(corpus.doc_ids, text_digests(corpus.texts), corpus.titles)
        if changed:
            logger.warning(
                "%d documents already in the map now read differently than when they got their IDs (e.g. %r); they "
                "keep their IDs. To give them new ones, re-index or assign them under new document IDs (or, if the "
                "texts did not change, pass the --text_fields the indexer was trained with).",
                len(changed),
                changed[0],
            )
        fresh_corpus = corpus.select(fresh)
        fresh_digests = text_digests(fresh_corpus.texts)
        codes = torch.tensor([new_codes[doc_id] for doc_id in fresh_corpus.doc_ids], dtype=torch.long).reshape(
            len(fresh), current.id_length
        )
        grown = None
        try:
            extended = current.extend(fresh_corpus.doc_ids, codes, fresh_corpus.titles, text_digests=fresh_digests)
        except DedupCapacityError as error:
            if not args.rededuplicate:
                raise DedupCapacityError(
                    error.group,
                    error.members,
                    error.dedup_size,
                    hint=f"rerun with --rededuplicate true to grow the dedup position of {folder} to "
                    f"{1 << error.members.bit_length()} (existing IDs stay as they are), or re-index with a "
                    "larger --dedup_size.",
                ) from None
            grown = _grow_dedup(folder, config, current, error)
            extended = current.extend(
                fresh_corpus.doc_ids, codes, fresh_corpus.titles, text_digests=fresh_digests, dedup_size=grown
            )
        crash_point("assign.map_write")
        extended.save(folder / ID_MAP_FILE)
        report = {
            "new_documents": len(fresh),
            "already_mapped": len(corpus) - len(fresh),
            "changed_texts": len(changed),
            "map_size": len(extended),
            "examples": {doc_id: list(extended.semantic_id(doc_id)) for doc_id in fresh_corpus.doc_ids[:5]},
        }
        if grown is not None:
            _write_config_dedup_size(folder, config, grown)
            moved = (extended.semantic_ids[: len(current)] != current.semantic_ids).any(dim=1).nonzero().flatten()
            report["dedup_size"] = [current.dedup_size, grown]
            report["changed_ids"] = [current.doc_ids[int(row)] for row in moved]
            logger.warning(
                "The dedup position of %s grew from %d to %d; %d existing IDs changed.",
                folder,
                current.dedup_size,
                grown,
                len(report["changed_ids"]),
            )
    return report


def _encode_new_documents(folder: Path, corpus: Corpus, args: AssignArguments) -> tuple[str | None, dict]:
    """The folder method's learned codes for the documents its map lacks, by document ID, and the `run_id` of the
    map they were read against (whether or not they fit its dedup position: that is checked under the lock)."""
    try:
        proposed, rows = method_of_folder(folder).assign_new_documents(folder, corpus, args)
    except DedupCapacityError as error:
        if error.doc_ids is None:
            raise
        return error.run_id, dict(zip(error.doc_ids, error.learned_codes.tolist()))
    new_ids = [corpus.doc_ids[row] for row in rows]
    return proposed.run_id, {doc_id: list(proposed.semantic_id(doc_id)[: proposed.id_length]) for doc_id in new_ids}


def _grow_dedup(folder: Path, config: dict, id_map: SemanticIDMap, error: DedupCapacityError) -> int:
    """The dedup size that fits the fullest group with room to grow (the next power of two strictly above it)."""
    if config.get("model_type") == "lmindexer-retrieval":
        raise ValueError(
            f"--rededuplicate: {folder} is a generative retriever, whose dedup position is {id_map.dedup_size} tokens "
            "of its vocabulary; growing it would change the vocabulary. Grow the indexer's map, then fine-tune a "
            "retriever on it."
        )
    return max(1 << error.members.bit_length(), id_map.dedup_size)


def _write_config_dedup_size(folder: Path, config: dict, dedup_size: int) -> None:
    """Record the grown dedup position in an indexer's config.json (written after the map: a map ahead of its config
    is what loading recognises and adopts)."""
    if not config:
        return
    updated = dict(config, dedup_size=dedup_size)
    with atomic_file(folder / "config.json") as temporary:
        temporary.write_text(json.dumps(updated, indent=2, sort_keys=True) + "\n")
