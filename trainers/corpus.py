"""Corpus loading for the indexer: any jsonl, csv or parquet file or Hub dataset, through `datasets`."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

import datasets

_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class Corpus:
    """Documents ready to index: IDs, the joined text, and an optional label for diagnostics."""

    doc_ids: list[str]
    texts: list[str]
    labels: list[str] | None = None
    titles: list[str] | None = None

    def __len__(self) -> int:
        return len(self.doc_ids)

    def select(self, rows: list[int]) -> "Corpus":
        pick = lambda values: None if values is None else [values[row] for row in rows]  # noqa: E731
        return Corpus([self.doc_ids[r] for r in rows], [self.texts[r] for r in rows], pick(self.labels), pick(self.titles))


def load_records(source: str | os.PathLike, split: str = "train") -> datasets.Dataset:
    """A `datasets.Dataset` from a local jsonl/csv/parquet file or a Hub dataset name."""
    path = Path(source)
    if path.exists():
        builder = _FORMATS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"Cannot read {path}: use a .jsonl, .json, .csv or .parquet file.")
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise FileNotFoundError(f"No file {source} here, and the Hub is offline (HF_HUB_OFFLINE=1).")
    return datasets.load_dataset(str(source), split=split)


def join_fields(record: dict, fields: list[str]) -> str:
    """Join the text fields of one record with '; ', unescaping HTML entities as catalogue text carries them."""
    parts = []
    for field in fields:
        value = record.get(field)
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = " ".join(str(v) for v in value)
        value = html.unescape(str(value)).strip()
        if value:
            parts.append(value)
    return "; ".join(parts)


def label_of(record: dict, label_field: str, level: int | None = None) -> str:
    value = record.get(label_field)
    if isinstance(value, (list, tuple)):
        if level is not None:
            return str(value[level]) if len(value) > level else ""
        return " > ".join(str(v) for v in value)
    return "" if value is None else str(value)


def build_corpus(
    records,
    id_field: str,
    text_fields: list[str],
    label_field: str | None = None,
    label_level: int | None = None,
    title_field: str | None = None,
) -> Corpus:
    """Validate and convert records (a `datasets.Dataset` or a list of dicts) into a [`Corpus`].

    Raises a `ValueError` naming the problem for a missing field, an empty corpus, a document whose joined
    text is empty, or a repeated document ID.
    """
    columns = set(records.column_names) if isinstance(records, datasets.Dataset) else _columns_of(records)
    if len(records) == 0:
        raise ValueError("The corpus is empty: there is nothing to index.")
    for field in [id_field, *text_fields, *([label_field] if label_field else [])]:
        if field not in columns:
            raise ValueError(f"The corpus has no field {field!r}; its fields are {sorted(columns)}.")
    doc_ids, texts, labels, titles, empty = [], [], [], [], []
    for record in records:
        doc_id = record[id_field]
        if doc_id is None or str(doc_id) == "":
            raise ValueError(f"A record has an empty {id_field!r}: every document needs an ID.")
        text = join_fields(record, text_fields)
        if not text:
            empty.append(str(doc_id))
        doc_ids.append(str(doc_id))
        texts.append(text)
        if label_field:
            labels.append(label_of(record, label_field, label_level))
        if title_field:
            titles.append(join_fields(record, [title_field]))
    if empty:
        raise ValueError(
            f"{len(empty)} documents have no text after joining fields {text_fields}, e.g. {empty[:5]}. "
            "Add text fields or drop those documents."
        )
    if len(set(doc_ids)) != len(doc_ids):
        seen, repeated = set(), set()
        for doc_id in doc_ids:
            (repeated if doc_id in seen else seen).add(doc_id)
        raise ValueError(f"Duplicate document IDs in {id_field!r}: {sorted(repeated)[:10]}.")
    return Corpus(doc_ids, texts, labels if label_field else None, titles if title_field else None)


def _columns_of(records: list[dict]) -> set[str]:
    columns: set[str] = set()
    for record in records:
        columns.update(record)
    return columns
