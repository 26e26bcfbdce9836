"""`SemanticIDMap`: document ID <-> semantic ID, keyed by document ID, never by row order.

A stored semantic ID is the learned codes `(c^1, ..., c^T)` followed by a dedup index that tells apart
documents sharing all learned codes.

Dedup rule (deterministic, independent of row order): within each group of documents that share the learned
codes, documents are sorted by document ID (Python string order) and numbered 0, 1, 2, ... When a map is
extended, documents already in it keep their IDs and newcomers take the next free indices of their group, again
in document-ID order.

Which model a map belongs to: every map built with [`SemanticIDMap.from_codes`] gets a `run_id` (a uuid), kept by
`extend` and saved with it, and a model records the `run_id` of its map in its config (`id_map_run_id`). Loading a
map for a model whose config names another map is refused (`check_compatible`), unless asked for on purpose
(`allow_foreign_map=True`, or `model.attach_id_map(id_map, force=True)`). Maps and models written before maps
recorded their run (no `run_id`) still load, with one warning.

Files (format version 1), chosen by suffix:
- `.json`: `{"format": "lmindexer-semantic-id-map", "version": 1, "id_length", "codebook_sizes", "dedup_size",
  "run_id", "doc_ids": [...], "semantic_ids": [[c1, ..., cT, dedup], ...], "doc_titles": [...] or null,
  "text_digests": [...] or null}`.
- `.safetensors`: tensor `semantic_ids` (int64 `[N, T+1]`), optionally `text_digests` (int64 `[N]`), and the UTF-8
  bytes of the JSON list of document IDs (`doc_ids_json`, and `doc_titles_json` if present) as uint8 tensors; the
  scalar fields live in the header metadata under the same names.
`run_id` and `text_digests` (a 64-bit hash, computed by the caller, of the text each document was given its ID for;
0 where unknown) are optional: readers of format 1 that predate them ignore them.
Every write goes to a temporary file in the target folder and is renamed into place, so a crash never leaves
a half-written map.

This file is copied to the Hub: it imports only torch, transformers, the standard library and its siblings.

Why one long file: the map, its file formats (safetensors and JSON, with their checks) and its dedup rule are one
concept, copied to the Hub as one module next to the weights.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

# transformers re-exports the safetensors functions it loads weights with; using them keeps this Hub-bound
# file free of imports beyond torch and transformers.
from transformers.modeling_utils import safe_open, safe_save_file
from transformers.utils import logging

from .atomic_writes import atomic_file

logger = logging.get_logger(__name__)

FORMAT_NAME = "lmindexer-semantic-id-map"
FORMAT_VERSION = 1
ID_MAP_FILE = "semantic_id_map.safetensors"

_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Log `message` as a warning the first time it comes up in this process."""
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def warn_model_without_run_id() -> None:
    warn_once(
        "The model's config records no run id of its semantic-ID map (`id_map_run_id`; it was saved by an "
        "older lmindexer), so nothing checks that the map belongs to it; it is bound to the map it loads."
    )


def new_run_id() -> str:
    """A fresh random run id (128 bits, hex)."""
    return os.urandom(16).hex()


class DedupCapacityError(ValueError):
    """A group of documents sharing all learned codes does not fit the dedup position.

    Attributes: `group` (the learned codes), `members` (how many documents the group would hold), `dedup_size`; when
    raised by `extend`, also the documents it was adding (`doc_ids`, their `learned_codes`) and the map's `run_id`,
    so that a caller can retry with a larger dedup position.
    """

    def __init__(
        self,
        group: tuple[int, ...],
        members: int,
        dedup_size: int,
        hint: str | None = None,
        doc_ids: list[str] | None = None,
        learned_codes: torch.Tensor | None = None,
        run_id: str | None = None,
    ):
        self.group, self.members, self.dedup_size = group, members, dedup_size
        self.doc_ids, self.learned_codes, self.run_id = doc_ids, learned_codes, run_id
        super().__init__(
            f"{members} documents share one learned ID {group} but the dedup position holds only {dedup_size}: "
            + (
                hint
                or f"set `dedup_size` to at least {members} (the next power of two above it, "
                f"{1 << members.bit_length()}, leaves room to grow), or learn more distinctive codes."
            )
        )


class SemanticIDMap:
    """A unique, persistent mapping between document IDs and full semantic IDs.

    Build it with [`from_codes`] from per-document learned codes; lookups go both ways and by prefix.
    """

    def __init__(
        self,
        doc_ids: Sequence[str],
        semantic_ids: torch.Tensor,
        codebook_sizes: Sequence[int],
        dedup_size: int,
        doc_titles: Sequence[str] | None = None,
        run_id: str | None = None,
        text_digests: torch.Tensor | Sequence[int] | None = None,
    ):
        self.codebook_sizes = [int(size) for size in codebook_sizes]
        self.run_id = run_id
        self.dedup_size = int(dedup_size)
        self.doc_ids = [str(doc_id) for doc_id in doc_ids]
        self.semantic_ids = torch.as_tensor(semantic_ids, dtype=torch.long).reshape(len(self.doc_ids), -1)
        self.doc_titles = list(doc_titles) if doc_titles is not None else None
        if self.doc_titles is not None and len(self.doc_titles) != len(self.doc_ids):
            raise ValueError(f"{len(self.doc_titles)} titles for {len(self.doc_ids)} documents.")
        self.text_digests = None if text_digests is None else torch.as_tensor(text_digests, dtype=torch.long).flatten()
        if self.text_digests is not None and len(self.text_digests) != len(self.doc_ids):
            raise ValueError(f"{len(self.text_digests)} text digests for {len(self.doc_ids)} documents.")
        if self.semantic_ids.shape[1] != self.id_length + 1:
            raise ValueError(
                f"Semantic IDs have {self.semantic_ids.shape[1]} positions; expected {self.id_length} learned "
                "positions plus the dedup position."
            )
        _check_key_space(self.vocabulary_sizes)
        check_unique_doc_ids(self.doc_ids)
        check_code_ranges(self.semantic_ids, self.vocabulary_sizes)
        keys = self._full_keys(self.semantic_ids)
        if keys.numel() != torch.unique(keys).numel():
            raise ValueError("Semantic IDs are not unique: two documents share a full ID including the dedup index.")
        self._keys = keys
        self._sorted_keys: torch.Tensor | None = None
        self._sorted_rows: torch.Tensor | None = None
        self._row_of_doc: dict[str, int] | None = None

    # ------------------------------------------------------------------------------------------ building
    @classmethod
    def from_codes(
        cls,
        doc_ids: Sequence[str],
        learned_codes: torch.Tensor,
        codebook_sizes: Sequence[int],
        dedup_size: int,
        doc_titles: Sequence[str] | None = None,
        run_id: str | None = None,
        text_digests: torch.Tensor | Sequence[int] | None = None,
    ) -> "SemanticIDMap":
        """Add the dedup position to per-document learned codes `[N, T]` (see the module docstring).

        The map gets a new `run_id` unless one is given; with `text_digests` (one non-zero int64 hash of each
        document's text), `changed_documents` can tell later whether a document still reads as it did."""
        doc_ids = [str(doc_id) for doc_id in doc_ids]
        if not doc_ids:
            raise ValueError("Cannot build a semantic-ID map from an empty corpus.")
        learned_codes = torch.as_tensor(learned_codes, dtype=torch.long)
        if learned_codes.dim() != 2 or learned_codes.shape[0] != len(doc_ids):
            raise ValueError(f"Expected learned codes of shape [{len(doc_ids)}, T], got {tuple(learned_codes.shape)}.")
        if learned_codes.shape[1] != len(codebook_sizes):
            raise ValueError(
                f"Learned codes have {learned_codes.shape[1]} positions but {len(codebook_sizes)} codebook sizes were "
                "given."
            )
        check_unique_doc_ids(doc_ids)
        check_code_ranges(learned_codes, list(codebook_sizes))
        dedup = _dedup_indices(doc_ids, learned_codes, list(codebook_sizes), taken=None)
        _check_dedup_capacity(dedup, dedup_size, learned_codes)
        return cls(
            doc_ids,
            torch.cat([learned_codes, dedup[:, None]], dim=1),
            codebook_sizes,
            dedup_size,
            doc_titles,
            run_id=run_id or new_run_id(),
            text_digests=text_digests,
        )

    def extend(
        self,
        doc_ids: Sequence[str],
        learned_codes: torch.Tensor,
        doc_titles: Sequence[str] | None = None,
        text_digests: torch.Tensor | Sequence[int] | None = None,
        dedup_size: int | None = None,
    ) -> "SemanticIDMap":
        """A new map with unseen documents added. Documents already mapped keep their IDs and are skipped.

        The new map keeps this map's `run_id`. `dedup_size` larger than the current one grows the dedup position
        (every existing ID stays as it is; only newcomers may use the new indices): for an indexer that is a change
        of its config's `dedup_size`, for a retriever a change of vocabulary. Raises [`DedupCapacityError`] when
        a group outgrows the dedup position.
        """
        dedup_size = self.dedup_size if dedup_size is None else int(dedup_size)
        if dedup_size < self.dedup_size:
            raise ValueError(f"The dedup position can only grow ({self.dedup_size} -> {dedup_size} asked).")
        learned_codes = torch.as_tensor(learned_codes, dtype=torch.long)
        known = self._doc_rows()
        fresh_rows = [row for row, doc_id in enumerate(doc_ids) if str(doc_id) not in known]
        if not fresh_rows and dedup_size == self.dedup_size:
            return self
        new_ids = [str(doc_ids[row]) for row in fresh_rows]
        check_unique_doc_ids(new_ids)
        new_codes = learned_codes[fresh_rows].reshape(len(fresh_rows), self.id_length)
        check_code_ranges(new_codes, self.codebook_sizes)
        dedup = _dedup_indices(new_ids, new_codes, self.codebook_sizes, taken=self.semantic_ids)
        try:
            _check_dedup_capacity(dedup, dedup_size, new_codes)
        except DedupCapacityError as error:
            error.doc_ids, error.learned_codes, error.run_id = new_ids, new_codes, self.run_id
            raise
        titles = None
        if self.doc_titles is not None or doc_titles is not None:
            old_titles = self.doc_titles or [""] * len(self)
            new_titles = [doc_titles[row] for row in fresh_rows] if doc_titles is not None else [""] * len(new_ids)
            titles = old_titles + new_titles
        digests = None
        if self.text_digests is not None or text_digests is not None:  # 0: not recorded
            old_digests = (
                self.text_digests if self.text_digests is not None else torch.zeros(len(self), dtype=torch.long)
            )
            new_digests = torch.zeros(len(new_ids), dtype=torch.long)
            if text_digests is not None:
                new_digests = torch.as_tensor(text_digests, dtype=torch.long).flatten()[fresh_rows]
            digests = torch.cat([old_digests, new_digests])
        return SemanticIDMap(
            self.doc_ids + new_ids,
            torch.cat([self.semantic_ids, torch.cat([new_codes, dedup[:, None]], dim=1)]),
            self.codebook_sizes,
            dedup_size,
            titles,
            run_id=self.run_id,
            text_digests=digests,
        )

    def changed_documents(
        self, doc_ids: Sequence[str], text_digests: torch.Tensor | Sequence[int], titles: Sequence[str] | None = None
    ) -> list[str]:
        """The documents among `doc_ids` that the map holds but whose text differs from the one they got their IDs
        for: by text digest (`text_digests[i]` for `doc_ids[i]`, hashed as the map's were) where the map recorded
        one, otherwise by title where both sides have one."""
        rows = self._doc_rows()
        digests = torch.as_tensor(text_digests, dtype=torch.long).flatten().tolist()
        recorded = self.text_digests.tolist() if self.text_digests is not None else None
        changed = []
        for index, doc_id in enumerate(doc_ids):
            row = rows.get(str(doc_id))
            if row is None:
                continue
            digest = digests[index]
            stored = recorded[row] if recorded is not None else 0
            if stored:
                if stored != digest:
                    changed.append(str(doc_ids[index]))
            elif titles is not None and self.doc_titles is not None and self.doc_titles[row]:
                if (titles[index] or "") != self.doc_titles[row]:
                    changed.append(str(doc_ids[index]))
        return changed

    # ------------------------------------------------------------------------------------------ geometry
    @property
    def id_length(self) -> int:
        """Number of learned positions (the stored IDs have one more, the dedup position)."""
        return len(self.codebook_sizes)

    @property
    def vocabulary_sizes(self) -> list[int]:
        return [*self.codebook_sizes, self.dedup_size]

    def _full_keys(self, semantic_ids: torch.Tensor) -> torch.Tensor:
        return (semantic_ids * mixed_radix_strides(self.vocabulary_sizes)).sum(dim=1)

    def _sorted_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._sorted_keys is None:
            self._sorted_keys, self._sorted_rows = torch.sort(self._keys)
        return self._sorted_keys, self._sorted_rows

    def _doc_rows(self) -> dict[str, int]:
        if self._row_of_doc is None:
            self._row_of_doc = {doc_id: row for row, doc_id in enumerate(self.doc_ids)}
        return self._row_of_doc

    # ------------------------------------------------------------------------------------------- lookups
    def __len__(self) -> int:
        return len(self.doc_ids)

    def __contains__(self, doc_id: object) -> bool:
        return str(doc_id) in self._doc_rows()

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SemanticIDMap)
            and self.vocabulary_sizes == other.vocabulary_sizes
            and self.doc_ids == other.doc_ids
            and torch.equal(self.semantic_ids, other.semantic_ids)
        )

    def __repr__(self) -> str:
        return f"SemanticIDMap(documents={len(self)}, vocabulary_sizes={self.vocabulary_sizes}, run_id={self.run_id!r})"

    def semantic_id(self, doc_id: str) -> tuple[int, ...]:
        """The full semantic ID of a document. Raises `KeyError` for an unknown document."""
        row = self._doc_rows().get(str(doc_id))
        if row is None:
            raise KeyError(f"Document {doc_id!r} is not in the semantic-ID map.")
        return tuple(self.semantic_ids[row].tolist())

    def doc_id(self, semantic_id: Sequence[int]) -> str | None:
        """The document with this full semantic ID, or None if no document has it."""
        rows = self.rows_of(torch.as_tensor([list(semantic_id)], dtype=torch.long))
        return None if rows[0] < 0 else self.doc_ids[int(rows[0])]

    def rows_of(self, semantic_ids: torch.Tensor) -> torch.Tensor:
        """Vectorised lookup: row of each full ID in `[M, T+1]`, or -1 where none matches or it is malformed."""
        semantic_ids = torch.as_tensor(semantic_ids, dtype=torch.long)
        if semantic_ids.dim() != 2 or semantic_ids.shape[1] != self.id_length + 1:
            raise ValueError(
                f"Expected semantic IDs of shape [M, {self.id_length + 1}], got {tuple(semantic_ids.shape)}."
            )
        sizes = torch.tensor(self.vocabulary_sizes)
        in_range = ((semantic_ids >= 0) & (semantic_ids < sizes)).all(dim=1)
        keys = self._full_keys(semantic_ids.clamp(min=0))
        sorted_keys, sorted_rows = self._sorted_index()
        slots = torch.searchsorted(sorted_keys, keys).clamp(max=len(sorted_keys) - 1)
        found = (sorted_keys[slots] == keys) & in_range
        return torch.where(found, sorted_rows[slots], torch.full_like(keys, -1))

    def documents_with_prefix(self, prefix: Sequence[int]) -> list[str]:
        """Documents whose semantic ID starts with `prefix` (any length up to the full ID), in ID order."""
        return [self.doc_ids[int(row)] for row in self._prefix_rows(prefix)]

    def prefix_children(self, prefix: Sequence[int]) -> dict[int, int]:
        """For the documents under `prefix`: how many continue with each next code (the ID tree one level down)."""
        prefix = [int(code) for code in prefix]
        if len(prefix) > self.id_length:
            raise ValueError(f"A prefix with children has at most {self.id_length} codes, got {len(prefix)}.")
        rows = self._prefix_rows(prefix)
        counts = torch.bincount(self.semantic_ids[rows, len(prefix)], minlength=self.vocabulary_sizes[len(prefix)])
        return {int(code): int(counts[code]) for code in torch.nonzero(counts).flatten()}

    def _prefix_rows(self, prefix: Sequence[int]) -> torch.Tensor:
        prefix = [int(code) for code in prefix]
        if len(prefix) > self.id_length + 1:
            raise ValueError(f"A prefix has at most {self.id_length + 1} codes, got {len(prefix)}.")
        sizes = self.vocabulary_sizes
        if any(not 0 <= code < sizes[index] for index, code in enumerate(prefix)):
            return torch.zeros(0, dtype=torch.long)
        strides = mixed_radix_strides(sizes)
        low = sum(code * int(strides[index]) for index, code in enumerate(prefix))
        span = int(strides[len(prefix) - 1]) if prefix else math.prod(sizes)
        sorted_keys, sorted_rows = self._sorted_index()
        bounds = torch.searchsorted(sorted_keys, torch.tensor([low, low + span]))
        return sorted_rows[int(bounds[0]) : int(bounds[1])]

    def title(self, doc_id: str) -> str | None:
        if self.doc_titles is None:
            return None
        return self.doc_titles[self._doc_rows()[str(doc_id)]]

    # ---------------------------------------------------------------------------------------- statistics
    def statistics(self) -> dict:
        """Per-position utilisation and perplexity, documents per learned ID, and the collision rate.

        - `utilisation[t]`: distinct codes used at position t over the codebook size.
        - `perplexity[t]`: exp of the entropy of the code distribution at position t (the number of equally
          used codes it is worth).
        - `collision_rate`: fraction of documents whose learned codes (before dedup) are shared with another.
        """
        learned = self.semantic_ids[:, : self.id_length]
        usage = [code_usage(learned[:, index], size) for index, size in enumerate(self.codebook_sizes)]
        utilisation = [used for used, _ in usage]
        perplexity = [worth for _, worth in usage]
        _, inverse, group_sizes = torch.unique(
            prefix_keys(learned, self.codebook_sizes), return_inverse=True, return_counts=True
        )
        per_document = group_sizes[inverse]
        return {
            "documents": len(self),
            "id_length": self.id_length,
            "codebook_sizes": list(self.codebook_sizes),
            "dedup_size": self.dedup_size,
            "utilisation": utilisation,
            "perplexity": perplexity,
            "distinct_learned_ids": int(group_sizes.numel()),
            "max_documents_per_learned_id": int(group_sizes.max()),
            "mean_documents_per_learned_id": float(group_sizes.double().mean()),
            "collision_rate": float((per_document > 1).double().mean()),
        }

    def check_compatible(self, config, allow_foreign_map: bool = False) -> None:
        """Raise if this map cannot serve the model of `config` (an `LMIndexerConfig`).

        - The position sizes (codebooks, then dedup) must be the config's.
        - The map's `run_id` must be the config's `id_map_run_id`: the model was trained (or built) with this map.
          With `allow_foreign_map=True` a map of another run is accepted on purpose, and the config is bound to it.
        - A config bound to no map yet (`id_map_run_id` unset: a model just built for this map) is bound to it.
        - A map without a `run_id` (written by an older lmindexer) passes, with one warning.
        """
        expected = [*config.codebook_sizes, config.dedup_size]
        if self.vocabulary_sizes != expected:
            raise ValueError(
                f"This semantic-ID map has position sizes {self.vocabulary_sizes} (codebooks, then dedup) but the "
                f"model's config expects {expected}: the map belongs to another model."
            )
        bound = getattr(config, "id_map_run_id", None)
        if self.run_id is None:
            warn_once(
                "This semantic-ID map records no run id (it was saved by an older lmindexer), so nothing "
                "checks that it belongs to the model it is used with."
            )
            return
        if bound is not None and bound != self.run_id and not allow_foreign_map:
            raise ValueError(
                f"This semantic-ID map was made by run {self.run_id}, but the model was trained with the map of run "
                f"{bound}: the map belongs to another model (same sizes, other codes). To reuse it on purpose, load it "
                "with `SemanticIDMap.load(path, config, allow_foreign_map=True)` or attach it with "
                "`model.attach_id_map(id_map, force=True)`."
            )
        if bound != self.run_id:
            config.id_map_run_id = self.run_id

    # --------------------------------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically as `.json` or `.safetensors` (chosen by suffix). Returns the path."""
        path = Path(path)
        header = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "id_length": self.id_length,
            "codebook_sizes": self.codebook_sizes,
            "dedup_size": self.dedup_size,
        }
        if self.run_id is not None:
            header["run_id"] = self.run_id
        with atomic_file(path) as temporary:
            if path.suffix == ".json":
                payload = dict(header, doc_ids=self.doc_ids, semantic_ids=self.semantic_ids.tolist())
                payload["doc_titles"] = self.doc_titles
                payload["text_digests"] = None if self.text_digests is None else self.text_digests.tolist()
                temporary.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
            elif path.suffix == ".safetensors":
                tensors = {"semantic_ids": self.semantic_ids.contiguous(), "doc_ids_json": _json_bytes(self.doc_ids)}
                if self.doc_titles is not None:
                    tensors["doc_titles_json"] = _json_bytes(self.doc_titles)
                if self.text_digests is not None:
                    tensors["text_digests"] = self.text_digests.contiguous()
                safe_save_file(tensors, str(temporary), metadata={k: json.dumps(v) for k, v in header.items()})
            else:
                raise ValueError(f"Unknown semantic-ID map format {path.suffix!r}: use .json or .safetensors.")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, config=None, allow_foreign_map: bool = False) -> "SemanticIDMap":
        """Read a map written by [`save`]; with `config`, also check that it fits that model (sizes, and that it is
        the map the model was trained with unless `allow_foreign_map`; see [`check_compatible`])."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No semantic-ID map at {path}.")
        if path.suffix == ".json":
            payload = json.loads(path.read_text(encoding="utf-8"))
            _check_header(payload, path)
            id_map = cls(
                payload["doc_ids"],
                torch.tensor(payload["semantic_ids"], dtype=torch.long).reshape(len(payload["doc_ids"]), -1),
                payload["codebook_sizes"],
                payload["dedup_size"],
                payload.get("doc_titles"),
                run_id=payload.get("run_id"),
                text_digests=payload.get("text_digests"),
            )
        elif path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                header = {k: json.loads(v) for k, v in (handle.metadata() or {}).items()}
                _check_header(header, path)
                names = set(handle.keys())
                titles = _from_json_bytes(handle.get_tensor("doc_titles_json")) if "doc_titles_json" in names else None
                digests = handle.get_tensor("text_digests") if "text_digests" in names else None
                id_map = cls(
                    _from_json_bytes(handle.get_tensor("doc_ids_json")),
                    handle.get_tensor("semantic_ids"),
                    header["codebook_sizes"],
                    header["dedup_size"],
                    titles,
                    run_id=header.get("run_id"),
                    text_digests=digests,
                )
        else:
            raise ValueError(f"Unknown semantic-ID map format {path.suffix!r}: use .json or .safetensors.")
        if config is not None:
            if getattr(config, "id_map_run_id", None) is None and id_map.run_id is not None:
                warn_model_without_run_id()
            id_map.check_compatible(config, allow_foreign_map=allow_foreign_map)
        return id_map


# ------------------------------------------------------------------------------------------------ helpers
def mixed_radix_strides(sizes: Sequence[int]) -> torch.Tensor:
    """Strides that turn a code tuple into one integer key: equal keys exactly for equal tuples, and keys sort
    in lexicographic order of the tuples (so a prefix is a contiguous key range)."""
    strides = [1] * len(sizes)
    for index in range(len(sizes) - 2, -1, -1):
        strides[index] = strides[index + 1] * sizes[index + 1]
    return torch.tensor(strides, dtype=torch.long)


def prefix_keys(codes, sizes: Sequence[int]):
    """One integer per row of `codes` (`[N, t]`, a tensor or numpy array, returned as the same kind) that is
    equal exactly when the rows are equal; `sizes` are the position sizes (only the first t are used)."""
    keys = torch.as_tensor(codes, dtype=torch.long) @ mixed_radix_strides(list(sizes)[: codes.shape[1]])
    return keys if isinstance(codes, torch.Tensor) else keys.numpy()


def code_usage(codes, size: int) -> tuple[float, float]:
    """`(utilisation, perplexity)` of one position's codes: the share of the codebook used, and exp of the
    entropy of the code distribution (how many equally used codes it is worth)."""
    counts = torch.bincount(torch.as_tensor(codes, dtype=torch.long), minlength=size).double()
    probabilities = counts[counts > 0] / counts.sum()
    return int((counts > 0).sum()) / size, float(torch.exp(-(probabilities * probabilities.log()).sum()))


def _json_bytes(values: list[str]) -> torch.Tensor:
    return torch.frombuffer(bytearray(json.dumps(values, ensure_ascii=False).encode("utf-8")), dtype=torch.uint8)


def _from_json_bytes(tensor: torch.Tensor) -> list[str]:
    return json.loads(tensor.numpy().tobytes().decode("utf-8"))


def _check_header(header: dict, path: Path) -> None:
    if header.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a semantic-ID map (format {header.get('format')!r}).")
    if header.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} is semantic-ID map format version {header.get('version')}; this lmindexer reads version "
            f"{FORMAT_VERSION}. Upgrade lmindexer to read it."
        )


def _check_key_space(sizes: list[int]) -> None:
    if math.prod(sizes) >= 2**62:
        raise ValueError(f"Position sizes {sizes} span more than 2**62 IDs; reduce the codebook or dedup sizes.")


def check_unique_doc_ids(doc_ids: list[str]) -> None:
    if len(set(doc_ids)) != len(doc_ids):
        seen, repeated = set(), []
        for doc_id in doc_ids:
            if doc_id in seen:
                repeated.append(doc_id)
            seen.add(doc_id)
        raise ValueError(f"Duplicate document IDs: {sorted(set(repeated))[:10]} ({len(repeated)} repeats).")


def check_code_ranges(codes: torch.Tensor, sizes: list[int]) -> None:
    """Raise a `ValueError` naming the first code outside its position's size."""
    for index, size in enumerate(sizes[: codes.shape[1]]):
        column = codes[:, index]
        bad = (column < 0) | (column >= size)
        if bool(bad.any()):
            raise ValueError(
                f"Code {int(column[bad][0])} at position {index + 1} lies outside its codebook of size {size}."
            )


def _check_dedup_capacity(dedup: torch.Tensor, dedup_size: int, learned_codes: torch.Tensor) -> None:
    """Raise a [`DedupCapacityError`] naming the fullest group when a dedup index falls outside the position."""
    if not dedup.numel() or int(dedup.max()) < dedup_size:
        return
    row = int(torch.argmax(dedup))
    raise DedupCapacityError(tuple(learned_codes[row].tolist()), int(dedup[row]) + 1, dedup_size)


def _dedup_indices(
    doc_ids: list[str], learned_codes: torch.Tensor, codebook_sizes: list[int], taken: torch.Tensor | None
) -> torch.Tensor:
    """Dedup index per document: rank by document ID within its learned-code group, after the indices in `taken`."""
    stride_tensor = mixed_radix_strides(codebook_sizes)
    group_keys = (learned_codes * stride_tensor).sum(dim=1)
    name_rank = torch.empty(len(doc_ids), dtype=torch.long)
    name_rank[torch.tensor(sorted(range(len(doc_ids)), key=doc_ids.__getitem__), dtype=torch.long)] = torch.arange(
        len(doc_ids)
    )
    # Two stable sorts: by name, then by group, give name order inside each group.
    by_name = torch.argsort(name_rank)
    order = by_name[torch.argsort(group_keys[by_name], stable=True)]
    sorted_groups = group_keys[order]
    starts = torch.ones_like(sorted_groups, dtype=torch.bool)
    starts[1:] = sorted_groups[1:] != sorted_groups[:-1]
    run_start = torch.cummax(torch.where(starts, torch.arange(len(order)), torch.zeros_like(order)), dim=0).values
    dedup = torch.empty_like(order)
    dedup[order] = torch.arange(len(order)) - run_start
    if taken is not None and taken.numel():
        taken_keys = (taken[:, : len(codebook_sizes)] * stride_tensor).sum(dim=1)
        offsets: dict[int, int] = {}
        for key, index in zip(taken_keys.tolist(), taken[:, -1].tolist()):
            offsets[key] = max(offsets.get(key, 0), index + 1)
        if offsets:
            dedup = dedup + torch.tensor([offsets.get(key, 0) for key in group_keys.tolist()], dtype=torch.long)
    return dedup
