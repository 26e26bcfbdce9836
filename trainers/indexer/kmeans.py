"""Codebook initialisation by faiss k-means, in the same geometry the indexer assigns codes with."""

from __future__ import annotations

import logging

import faiss
import numpy as np
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


def kmeans_codebook(
    vectors: np.ndarray, num_codes: int, geometry: str, seed: int = 0, iterations: int = 25, progress: bool = False
) -> np.ndarray:
    """Centroids `[num_codes, D]` of `vectors` (the `h^t` of the whole corpus).

    - `cosine`: spherical k-means on unit vectors (assignment by cosine); the unit centroids are then scaled to
      the mean norm of `vectors`, so the codebook vector fed to the reconstructor has the size `h^t` had during
      the encoder warm-up. Scaling does not change any cosine assignment.
    - `dot`: k-means whose assignment step is maximum inner product, as the indexer's code assignment is.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count, dim = vectors.shape
    if count < num_codes:
        raise ValueError(
            f"k-means cannot make {num_codes} codes from {count} documents: give the corpus at least {num_codes} "
            f"documents or lower the codebook size to {count} or less."
        )
    if not np.isfinite(vectors).all():
        raise ValueError("The encoder produced non-finite vectors; k-means cannot run on them.")
    parameters = faiss.ClusteringParameters()
    # One iteration per `train` call: faiss continues from the centroids it holds, so the result equals one call
    # with `iterations` iterations, and the loop can drive a progress bar.
    parameters.niter = 1
    parameters.seed = seed
    # faiss would otherwise subsample to 256 points per centroid; use every document.
    parameters.max_points_per_centroid = max(256, -(-count // num_codes))
    parameters.spherical = geometry == "cosine"
    points = vectors
    if geometry == "cosine":
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        points = vectors / np.maximum(norms, 1e-12)
    clustering = faiss.Clustering(dim, num_codes, parameters)
    index = faiss.IndexFlatIP(dim)
    for _ in tqdm(range(iterations), desc=f"k-means ({count} x {num_codes})", disable=not progress, leave=False):
        clustering.train(points, index)
    centroids = faiss.vector_to_array(clustering.centroids).reshape(num_codes, dim)
    if geometry == "cosine":
        centroids = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        centroids = centroids * float(norms.mean())
    return centroids.astype(np.float32)
