"""RQ-KMeans: residual k-means, one codebook per ID position.

Level 1 clusters the embeddings; level t clusters the residuals left after subtracting the centroids chosen at
levels 1..t-1, so each extra position refines the previous ones and the sum of the chosen centroids
approximates the embedding.

Geometry: squared L2 at every level, for fitting (faiss k-means) and for assignment (nearest centroid by
`faiss.IndexFlatL2`). Residuals are not unit vectors and shrink level by level, so cosine would be wrong after
level 1, and mixing geometries between fit and assign would break `assign(train) == fit(train)`.

Level t (0-based) runs k-means with seed `seed + t`: level 1 is exactly `faiss.Kmeans(..., seed=seed)` on the
embeddings, and deeper levels do not reuse the same initial sample indices.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..indexer.kmeans import kmeans_codebook
from .quantizer import Quantizer, nearest_l2, register_quantizer


@register_quantizer("rqkmeans")
class RQKMeansQuantizer(Quantizer):
    """Settings: `niter` (k-means iterations per level, default 25)."""

    default_settings = {"niter": 25}

    def _fit(self, vectors: np.ndarray) -> np.ndarray:
        residuals = vectors.copy()
        codes = np.empty((len(vectors), self.id_length), dtype=np.int64)
        self.codebooks: list[np.ndarray] = []
        for level in tqdm(range(self.id_length), desc="RQ-KMeans levels", disable=not self.progress, leave=False):
            codebook = kmeans_codebook(
                residuals,
                self.codebook_sizes[level],
                "l2",
                seed=self._rng_seed(level),
                iterations=self.settings["niter"],
            )
            self.codebooks.append(codebook)
            # The same nearest-centroid step as `_assign`, on the same residuals, so fit and assign agree exactly.
            codes[:, level] = nearest_l2(codebook, residuals)
            residuals -= codebook[codes[:, level]]
        return codes

    def _assign(self, vectors: np.ndarray) -> np.ndarray:
        residuals = vectors.copy()
        codes = np.empty((len(vectors), self.id_length), dtype=np.int64)
        for level, codebook in enumerate(self.codebooks):
            codes[:, level] = nearest_l2(codebook, residuals)
            residuals -= codebook[codes[:, level]]
        return codes

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        """Sum of the chosen centroids: the approximation of each embedding that its ID encodes."""
        codes = np.asarray(codes, dtype=np.int64)
        return sum(codebook[codes[:, level]] for level, codebook in enumerate(self.codebooks))

    def _state_tensors(self) -> dict[str, np.ndarray]:
        return {f"codebook.{level}": codebook for level, codebook in enumerate(self.codebooks)}

    def _load_state(self, tensors: dict[str, np.ndarray], config: dict) -> None:
        self.codebooks = [tensors[f"codebook.{level}"].astype(np.float32) for level in range(self.id_length)]
        for level, (codebook, size) in enumerate(zip(self.codebooks, self.codebook_sizes)):
            if codebook.shape != (size, self.dim):
                raise ValueError(f"Saved codebook {level} has shape {codebook.shape}, expected {(size, self.dim)}.")

    def _level_geometry(self) -> list[dict]:
        return [
            {
                "level": level + 1,
                "codebook_size": size,
                "clusters": "embeddings" if level == 0 else "residuals",
                "fit": "faiss k-means, L2",
                "assign": "nearest centroid, L2 (IndexFlatL2)",
                "seed": self._rng_seed(level),
            }
            for level, size in enumerate(self.codebook_sizes)
        ]
