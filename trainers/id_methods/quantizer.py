"""Common contract of the two-stage semantic-ID baselines: embeddings in, one code per ID position out.

A quantizer is fitted once on a corpus's embeddings and can then `assign` codes to any vector zero-shot. Every
subclass guarantees that `assign` on the training vectors returns exactly the codes `fit` returned, so saved IDs
and re-computed IDs never disagree. State is saved as safetensors plus a JSON config (no pickle), so a saved
quantizer can be loaded from an untrusted folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import faiss
import numpy as np
from safetensors.numpy import load_file, save_file

from ...modeling_lmindexer.atomic_writes import atomic_file
from ..indexer.id_layout import check_codebook_fits
from .registry import QUANTIZERS

TENSORS_FILE = "quantizer.safetensors"
CONFIG_FILE = "quantizer_config.json"
CONFIG_FORMAT = 1


class Quantizer:
    """Base class: validation, persistence and the fit/assign contract. Subclasses implement `_fit`, `_assign`,
    `_state_tensors`, `_load_state` and `_level_geometry`, declare `default_settings`, and are registered with
    `@register_quantizer(name)`."""

    name: ClassVar[str]
    default_settings: ClassVar[dict[str, Any]] = {}

    def __init__(
        self, id_length: int, codebook_sizes: list[int] | int, seed: int = 0, progress: bool = False, **settings
    ):
        """`progress` only shows bars; it does not change results, so it is not a setting and is not saved."""
        if isinstance(id_length, bool) or not isinstance(id_length, (int, np.integer)) or id_length < 1:
            raise ValueError(f"id_length must be an integer >= 1, got {id_length!r}.")
        sizes = (
            [codebook_sizes] * int(id_length) if isinstance(codebook_sizes, (int, np.integer)) else list(codebook_sizes)
        )
        if len(sizes) != id_length:
            raise ValueError(
                f"codebook_sizes has {len(sizes)} entries but id_length is {id_length}; give one per level."
            )
        if any(isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1 for size in sizes):
            raise ValueError(f"Every codebook size must be an integer >= 1, got {sizes}.")
        unknown = sorted(set(settings) - set(self.default_settings))
        if unknown:
            raise ValueError(
                f"{self.name} has no setting(s) {unknown}; known settings: {sorted(self.default_settings)}."
            )
        self.id_length = int(id_length)
        self.codebook_sizes = [int(size) for size in sizes]
        self.seed = int(seed)
        self.settings = {**self.default_settings, **settings}
        self.progress = progress
        self.dim: int | None = None

    # ----------------------------------------------------------------------------------------------- contract
    def fit(self, embeddings: np.ndarray) -> np.ndarray:
        """Learn the codebooks; int64 codes `[N, id_length]`, column t within `[0, codebook_sizes[t])`."""
        vectors = self._validated(embeddings)
        check_codebook_fits(self.name, self.minimum_documents(), len(vectors))
        self.dim = int(vectors.shape[1])
        return self._fit(vectors).astype(np.int64)

    def assign(self, embeddings: np.ndarray) -> np.ndarray:
        """Codes of (new or training) vectors with the fitted codebooks, without changing them."""
        if self.dim is None:
            raise RuntimeError(f"This {self.name} quantizer is not fitted: call fit(embeddings) or load it first.")
        vectors = self._validated(embeddings)
        if vectors.shape[1] != self.dim:
            raise ValueError(f"{self.name} was fitted on {self.dim}-dim embeddings, got {vectors.shape[1]}-dim ones.")
        return self._assign(vectors).astype(np.int64)

    def minimum_documents(self) -> int:
        """Every level clusters the whole corpus (or its residuals), so each needs as many documents as codes."""
        return max(self.codebook_sizes)

    def settings_dict(self) -> dict:
        """Everything that defines the IDs, for reports and model cards."""
        return {
            "method": self.name,
            "id_length": self.id_length,
            "codebook_sizes": list(self.codebook_sizes),
            "seed": self.seed,
            **self.settings,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.settings_dict().items())})"

    # ------------------------------------------------------------------------------------------- persistence
    def save(self, folder: str | Path) -> None:
        """`quantizer.safetensors` + `quantizer_config.json`, each written atomically; the config goes last, so
        a folder with a config always has the tensors it describes."""
        if self.dim is None:
            raise RuntimeError(f"Cannot save an unfitted {self.name} quantizer: call fit(embeddings) first.")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {name: np.ascontiguousarray(value) for name, value in self._state_tensors().items()}
        _write_atomically(folder / TENSORS_FILE, lambda path: save_file(tensors, path))
        config = {
            "format": CONFIG_FORMAT,
            "name": self.name,
            "id_length": self.id_length,
            "codebook_sizes": self.codebook_sizes,
            "seed": self.seed,
            "settings": self.settings,
            "dim": self.dim,
            "levels": self._level_geometry(),
            **self._extra_config(),
        }
        text = json.dumps(config, indent=2) + "\n"
        _write_atomically(folder / CONFIG_FILE, lambda path: Path(path).write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, folder: str | Path) -> "Quantizer":
        """Exact round trip of `save`; `Quantizer.load` dispatches to the subclass named in the config."""
        config = read_quantizer_config(folder)
        target = quantizer_class(config["name"])
        if cls is not Quantizer and target is not cls:
            raise ValueError(f"{folder} holds a {config['name']} quantizer, not a {cls.name} one.")
        quantizer = target(config["id_length"], config["codebook_sizes"], seed=config["seed"], **config["settings"])
        quantizer.dim = int(config["dim"])
        quantizer._load_state(load_file(str(Path(folder) / TENSORS_FILE)), config)
        return quantizer

    # ------------------------------------------------------------------------------------- subclass hooks
    def _fit(self, vectors: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _assign(self, vectors: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _state_tensors(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _load_state(self, tensors: dict[str, np.ndarray], config: dict) -> None:
        raise NotImplementedError

    def _level_geometry(self) -> list[dict]:
        raise NotImplementedError

    def _extra_config(self) -> dict:
        return {}

    # --------------------------------------------------------------------------------------------- helpers
    def _validated(self, embeddings: np.ndarray) -> np.ndarray:
        array = np.asarray(embeddings)
        if array.ndim != 2:
            raise ValueError(
                f"{self.name} expects a 2-D [documents, dim] array of embeddings, got shape {array.shape}."
            )
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise ValueError(f"{self.name} got empty embeddings (shape {array.shape}): embed at least one document.")
        vectors = np.ascontiguousarray(array, dtype=np.float32)
        finite = np.isfinite(vectors).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise ValueError(
                f"{len(bad)} embeddings contain NaN or infinite values (first at row {bad[0]}); "
                "fix the encoder output before quantising."
            )
        return vectors

    def _rng_seed(self, offset: int) -> int:
        """A per-level/per-group seed derived from `seed`, kept in faiss's non-negative int range."""
        return (self.seed + offset) % (2**31 - 1)


def register_quantizer(name: str):
    """Class decorator: `@register_quantizer("rqkmeans")` names the quantiser and registers it (`QUANTIZERS`)."""

    def add(cls: type[Quantizer]) -> type[Quantizer]:
        cls.name = name
        return QUANTIZERS.register(name)(cls)

    return add


def quantizer_class(name: str) -> type[Quantizer]:
    """The quantiser registered under `name`, importing a built-in one on first use."""
    return QUANTIZERS.get(name)


def read_quantizer_config(folder: str | Path) -> dict:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no saved quantizer ({CONFIG_FILE} is missing).")
    config = json.loads(path.read_text(encoding="utf-8"))
    missing = [key for key in ("name", "id_length", "codebook_sizes", "seed", "settings", "dim") if key not in config]
    if missing:
        raise ValueError(f"{path} is not a quantizer config: it lacks {missing}.")
    return config


def load_quantizer(folder: str | Path) -> Quantizer:
    """Load whichever quantizer `folder` holds."""
    return Quantizer.load(folder)


def nearest_l2(centroids: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of the L2-nearest centroid for each query (faiss flat search; ties go to the lower index)."""
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, nearest = index.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
    return nearest[:, 0].astype(np.int64)


def _write_atomically(path: Path, write) -> None:
    with atomic_file(path) as temporary:
        write(str(temporary))
