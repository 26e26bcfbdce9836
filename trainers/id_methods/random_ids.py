"""Random semantic IDs: the control that every learned ID method must beat downstream.

Each document's code at each level is a pseudo-random draw, uniform over the codebook, made from a hash of its
embedding's bytes, the level and the seed: IDs of the same layout as the learned methods' that carry no semantics
(the "random ID" baseline of TIGER; with large codebooks, nearly DSI's atomic IDs). Hashing rather than drawing
from a generator keeps the quantizer contract, `assign(train) == fit(train)`, and gives a new document the same
kind of ID zero-shot. Nothing is learned, so no tensors are saved beyond the contract's empty state.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .quantizer import Quantizer, register_quantizer


@register_quantizer("random")
class RandomQuantizer(Quantizer):
    """No settings; `seed` changes every draw."""

    default_settings: dict = {}

    def minimum_documents(self) -> int:
        return 1

    def _fit(self, vectors: np.ndarray) -> np.ndarray:
        return self._assign(vectors)

    def _assign(self, vectors: np.ndarray) -> np.ndarray:
        codes = np.empty((len(vectors), self.id_length), dtype=np.int64)
        for row, vector in enumerate(vectors):
            digest = hashlib.blake2b(
                vector.tobytes(), digest_size=8 * self.id_length, key=self.seed.to_bytes(8, "little", signed=True)
            ).digest()
            for level, size in enumerate(self.codebook_sizes):
                codes[row, level] = int.from_bytes(digest[8 * level : 8 * level + 8], "little") % size
        return codes

    def _state_tensors(self) -> dict[str, np.ndarray]:
        return {"codebook_sizes": np.asarray(self.codebook_sizes, dtype=np.int64)}

    def _load_state(self, tensors: dict[str, np.ndarray], config: dict) -> None:
        return None

    def _level_geometry(self) -> list[dict]:
        return [
            {"level": level + 1, "codes": size, "geometry": "none (hash of the embedding)"}
            for level, size in enumerate(self.codebook_sizes)
        ]
