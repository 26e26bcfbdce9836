"""Downstream data: sequential recommendation and retrieval / product search samples, as `datasets` splits.

Every sample is `{"input_text", "target_doc_id"}`; evaluation splits also carry `"relevant"` (the relevant
document IDs with their grades, as a JSON string so the column type is fixed).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import datasets
import numpy as np

from ...modeling_lmindexer.configuration_lmindexer import RECOMMENDATION, RETRIEVAL
from ...modeling_lmindexer.history import HistoryFormat
from ..data.corpus import join_fields, load_records

logger = logging.getLogger("lmindexer")


def sampled_test_rows(total: int, size: int, seed: int) -> list[int]:
    """A seeded sample of `size` rows of an evaluation split (all rows when `size` is 0 or too large), in increasing
    order: the users `bench rec` scores, the validation queries scored during training."""
    if size <= 0 or size >= total:
        return list(range(total))
    return sorted(np.random.default_rng(seed).choice(total, size=size, replace=False).tolist())


def recommendation_splits(
    sequences_path: str | Path,
    items_path: str | Path,
    history: HistoryFormat | None = None,
    known_items: set[str] | None = None,
    id_map=None,
) -> datasets.DatasetDict:
    """Leave-one-out splits: per user, the last item is the test target, the second-to-last the validation target,
    and every earlier item is a training target with the items before it as history.

    Users with fewer than 3 items give no test sample; items missing from `items_path` (or from `known_items`,
    e.g. the ID map) are dropped from histories and counted in the log. `id_map` (a `SemanticIDMap`) gives the
    semantic IDs of the `ids` and `text+ids` history formats; when given without `known_items`, it is the known set.
    """
    history = history or HistoryFormat()
    if history.uses_ids and id_map is None:
        raise ValueError(
            f"The {history.history_format!r} history format renders items by their semantic IDs: pass the ID map."
        )
    if known_items is None and id_map is not None:
        known_items = set(id_map.doc_ids)
    semantic_id = id_map.semantic_id if id_map is not None else None
    items = load_records(items_path)
    item_text = {str(item["item_id"]): join_fields(item, list(history.text_fields)) for item in items}
    known = set(item_text) if known_items is None else set(item_text) & set(known_items)
    splits = {"train": [], "validation": [], "test": []}
    dropped = 0
    for number, user in enumerate(load_records(sequences_path), start=1):
        sequence = user_items(user, number, sequences_path)
        dropped += sum(item not in known for item in sequence)
        sequence = [item for item in sequence if item in known]
        if len(sequence) < 3:
            continue
        for target in range(1, len(sequence) - 2):
            splits["train"].append(_sample(history.render(sequence[:target], item_text, semantic_id), sequence[target]))
        splits["validation"].append(
            _sample(history.render(sequence[:-2], item_text, semantic_id), sequence[-2], {sequence[-2]: 1})
        )
        splits["test"].append(
            _sample(history.render(sequence[:-1], item_text, semantic_id), sequence[-1], {sequence[-1]: 1})
        )
    if dropped:
        logger.warning(
            "%d interactions name items that are not in the catalogue or ID map; they were dropped.", dropped
        )
    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()})


def user_items(user: dict, number: int, sequences_path) -> list[str]:
    """The item IDs of record `number` (from 1) of a sequences file, or an error naming the file and the record."""
    if not isinstance(user.get("items"), list):
        raise ValueError(
            f"{sequences_path}: record {number} has no 'items' list (each line is a user: "
            '{"user_id": ..., "items": [item IDs, oldest first]}).'
        )
    return [str(item) for item in user["items"]]


def sequences_of(sequences_path: str | Path) -> list[list[str]]:
    """Every user's item IDs, oldest first, from a `sequences.jsonl`."""
    return [
        user_items(user, number, sequences_path) for number, user in enumerate(load_records(sequences_path), start=1)
    ]


def _sample(text: str, target: str, relevant: dict[str, int] | None = None) -> dict:
    return {"input_text": text, "target_doc_id": target, "relevant": json.dumps(relevant or {target: 1})}


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            qrels.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = int(row["score"])
    return qrels


def retrieval_splits(
    folder: str | Path,
    known_docs: set[str],
    indexing: bool = True,
    pseudo_queries: str | Path | None = None,
    doc_text_fields: tuple[str, ...] = ("title", "text"),
    max_doc_chars: int = 2000,
) -> tuple[datasets.DatasetDict, dict[str, int]]:
    """BEIR layout (`corpus.jsonl`, `queries.jsonl`, `qrels/{train,test}.tsv`) to query -> ID samples.

    - train: one sample per (train query, relevant document); with `indexing`, also one DSI-style sample per
      document (its own text -> its ID); with `pseudo_queries` (jsonl of `{"doc_id", "query"}`), those too.
    - test (and validation when `qrels/dev.tsv` exists): one sample per query with all its relevant documents.
    Returns the splits and a report counting qrels that name unknown queries or documents (which are skipped).
    """
    folder = Path(folder)
    queries = {str(q["_id"]): q["text"] for q in load_records(folder / "queries.jsonl")}
    report = {"unknown_queries": 0, "unknown_documents": 0}
    splits: dict[str, list[dict]] = {}
    for split, filename in (("train", "train.tsv"), ("validation", "dev.tsv"), ("test", "test.tsv")):
        path = folder / "qrels" / filename
        if not path.exists():
            continue
        rows = []
        for query_id, judged in read_qrels(path).items():
            if query_id not in queries:
                report["unknown_queries"] += 1
                continue
            relevant = {doc: grade for doc, grade in judged.items() if grade > 0 and doc in known_docs}
            report["unknown_documents"] += sum(doc not in known_docs for doc in judged)
            if not relevant:
                continue
            if split == "train":
                rows += [_sample(queries[query_id], doc, relevant) for doc in relevant]
            else:
                rows.append(_sample(queries[query_id], next(iter(relevant)), relevant))
        splits[split] = rows
    if indexing:
        for doc in load_records(folder / "corpus.jsonl"):
            if str(doc["_id"]) in known_docs:
                text = join_fields(doc, list(doc_text_fields))[:max_doc_chars]
                splits.setdefault("train", []).append(_sample(text, str(doc["_id"])))
    if pseudo_queries is not None:
        for row in load_records(pseudo_queries):
            if str(row["doc_id"]) in known_docs:
                splits.setdefault("train", []).append(_sample(row["query"], str(row["doc_id"])))
    if report["unknown_queries"] or report["unknown_documents"]:
        logger.warning(
            "qrels name %d unknown queries and %d unknown documents; they were skipped.",
            report["unknown_queries"],
            report["unknown_documents"],
        )
    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()}), report


def recommendation_task_splits(data_args, id_map, config=None) -> datasets.DatasetDict:
    """Leave-one-out splits of `data_args.data` (items.jsonl, sequences.jsonl). With `config` (a retriever's
    `LMIndexerRetrievalConfig`), histories are rendered by the settings it saved, as the model renders them when
    serving; otherwise by `data_args`."""
    folder = Path(data_args.data)
    history = data_args.history()
    if config is not None:
        saved = HistoryFormat.from_config(config)
        if saved != history:
            logger.warning(
                "Histories are rendered as the model was fine-tuned (%s), not as the arguments say (%s).",
                saved,
                history,
            )
        history = saved
    return recommendation_splits(
        folder / "sequences.jsonl", folder / "items.jsonl", history, set(id_map.doc_ids), id_map=id_map
    )


def retrieval_task_splits(data_args, id_map, config=None) -> datasets.DatasetDict:
    """Query -> document splits of the BEIR folder `data_args.data`."""
    splits, report = retrieval_splits(data_args.data, set(id_map.doc_ids), data_args.indexing, data_args.pseudo_queries)
    logger.info("qrels report: %s", report)
    return splits


# What each task's samples are made of.
TASK_SPLITS = {RECOMMENDATION: recommendation_task_splits, RETRIEVAL: retrieval_task_splits}


def load_downstream_splits(data_args, id_map, config=None) -> datasets.DatasetDict:
    """The splits of `data_args.task` over the documents of `id_map` (`data_args`: `DownstreamDataArguments`)."""
    if data_args.task not in TASK_SPLITS:
        raise ValueError(f"Unknown task {data_args.task!r}: use {' or '.join(TASK_SPLITS)}.")
    return TASK_SPLITS[data_args.task](data_args, id_map, config)


def evaluation_split(splits: datasets.DatasetDict, data_args) -> datasets.Dataset:
    """The test split, narrowed to `data_args.eval_rows` and to its first `data_args.max_eval_queries` rows."""
    split = splits["test"]
    if data_args.eval_rows:
        outside = [row for row in data_args.eval_rows if not 0 <= row < len(split)]
        if outside:
            raise ValueError(f"eval_rows {outside[:5]} lie outside the test split's {len(split)} rows.")
        split = split.select(data_args.eval_rows)
    if data_args.max_eval_queries:
        split = split.select(range(min(data_args.max_eval_queries, len(split))))
    return split
