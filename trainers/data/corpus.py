"""Corpus loading for the indexer: any jsonl, csv or parquet file or Hub dataset, through `datasets`.

Every column of a CSV file is read as text, so that document IDs such as `00017` keep their leading zeros (and
cells such as `NA` stay what they say). A file that cannot be read (empty, not UTF-8, malformed) raises a
`ValueError` that names it.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path

import datasets

from ...modeling_lmindexer.semantic_id_map import check_unique_doc_ids

_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# Between the text fields of a record, in the text a document is indexed by.
TEXT_SEPARATOR = "; "


@dataclass
class Corpus:
    """Documents ready to index: IDs, the joined text, and an optional label for diagnostics (read from
    `label_field`)."""

    doc_ids: list[str]
    texts: list[str]
    labels: list[str] | None = None
    titles: list[str] | None = None
    label_field: str | None = None

    def __len__(self) -> int:
        return len(self.doc_ids)

    def select(self, rows: list[int]) -> "Corpus":
        pick = lambda values: None if values is None else [values[row] for row in rows]  # noqa: E731
        return Corpus(
            [self.doc_ids[r] for r in rows],
            [self.texts[r] for r in rows],
            pick(self.labels),
            pick(self.titles),
            self.label_field,
        )


def load_records(source: str | os.PathLike, split: str = "train") -> datasets.Dataset:
    """A `datasets.Dataset` from a local jsonl/csv/parquet file or a Hub dataset name."""
    path = Path(source)
    if path.exists():
        builder = _FORMATS.get(path.suffix.lower())
        if builder is None or not path.is_file():
            raise ValueError(f"Cannot read {path}: use a .jsonl, .json, .csv or .parquet file.")
        return _load_file(path, builder)
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise FileNotFoundError(f"No file {source} here, and the Hub is offline (HF_HUB_OFFLINE=1).")
    return datasets.load_dataset(str(source), split=split)


def _load_file(path: Path, builder: str) -> datasets.Dataset:
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty: it holds no documents.")
    if builder == "json":  # pyarrow's reader keeps undecodable bytes and fails later, on first access
        error = _not_utf8(path)
        if error is not None:
            raise error
    try:
        options = {}
        if builder == "csv":
            with open(path, encoding="utf-8", newline="") as handle:
                header = next(csv.reader(handle), None)
            if not header:
                raise ValueError(f"{path} has no header line naming its columns.")
            options = {
                "features": datasets.Features({name: datasets.Value("string") for name in header}),
                "keep_default_na": False,
            }
        records = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except UnicodeDecodeError as error:
        raise (_not_utf8(path) or ValueError(f"{path} is not UTF-8 text: {error}")) from None
    except StopIteration:  # what the json reader raises on a file of blank lines
        raise ValueError(f"{path} holds no documents.") from None
    except ValueError as error:
        if "corresponds to no data" not in str(error):
            raise
        raise ValueError(f"{path} holds no documents{' (only a header line)' if builder == 'csv' else ''}.") from None
    except Exception as error:  # datasets wraps the reader's error: name the file and the reason
        cause = error.__cause__ or error.__context__ or error
        if isinstance(cause, UnicodeDecodeError):
            raise (_not_utf8(path) or ValueError(f"{path} is not UTF-8 text: {cause}")) from None
        bad_line = _first_bad_json_line(path) if builder == "json" else None
        if bad_line is not None:
            raise bad_line from None
        raise ValueError(f"Cannot read {path} as {builder}: {cause}") from error
    if len(records) == 0:
        raise ValueError(f"{path} holds no documents.")
    return records


def _first_bad_json_line(path: Path) -> ValueError | None:
    """The error for the first line of a JSON Lines file that is not a JSON object, naming its line number (the
    reader's own message counts from the start of a block, not of the file); None when every line is one."""
    if path.suffix.lower() != ".jsonl":
        return None
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                return ValueError(f"{path} line {number} is not valid JSON: {error.msg} (column {error.colno}).")
            if not isinstance(record, dict):
                return ValueError(f"{path} line {number} is not a JSON object: each line must be one record {{...}}.")
    return None


def _not_utf8(path: Path, chunk_size: int = 1 << 20) -> ValueError | None:
    """The error for a file that is not UTF-8, naming the line and byte offset of the first bad byte; None for a
    file that is UTF-8 throughout."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(chunk_size)
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                bad = offset - pending + error.start
                with open(path, "rb") as again:
                    line = again.read(bad).count(b"\n") + 1
                return ValueError(
                    f"{path} is not UTF-8 text: byte {bad} (line {line}) cannot be decoded "
                    f"({error.reason}). Save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
                )
            if not chunk:
                return None
            offset += len(chunk)


def text_digests(texts: list[str]) -> list[int]:
    """A 64-bit hash (signed, never 0) of each text: what an ID map records to tell later whether a document's text
    changed (`SemanticIDMap.changed_documents`)."""
    digests = []
    for text in texts:
        digest = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)
        digests.append(digest or 1)
    return digests


def join_fields(record: dict, fields: list[str], separator: str = TEXT_SEPARATOR) -> str:
    """Join the text fields of one record with `separator`, unescaping HTML entities as catalogue text carries them."""
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
    return separator.join(parts)


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
    separator: str = TEXT_SEPARATOR,
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
        text = join_fields(record, text_fields, separator)
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
    try:
        check_unique_doc_ids(doc_ids)
    except ValueError as error:
        raise ValueError(f"{error} (field {id_field!r})") from None
    return Corpus(doc_ids, texts, labels if label_field else None, titles if title_field else None, label_field or None)


def _columns_of(records: list[dict]) -> set[str]:
    columns: set[str] = set()
    for record in records:
        columns.update(record)
    return columns
