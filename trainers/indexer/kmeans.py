"""The one k-means of the package (faiss), in the geometry its codes are assigned in: LMIndexer's codebook
initialisation and diagnosis (`cosine`, `dot`) and the two-stage quantisers (`l2`)."""

from __future__ import annotations

import logging

import faiss
import numpy as np
from tqdm.auto import tqdm

from .id_layout import check_codebook_fits

logger = logging.getLogger(__name__)

KMEANS_GEOMETRIES = ("cosine", "dot", "l2")


def kmeans_codebook(
    vectors: np.ndarray, num_codes: int, geometry: str, seed: int = 0, iterations: int = 25, progress: bool = False
) -> np.ndarray:
    """Centroids `[num_codes, D]` of `vectors`, every vector counted.

    - `cosine`: spherical k-means on unit vectors (assignment by cosine); the unit centroids are then scaled to
      the mean norm of `vectors`, so the codebook vector fed to the reconstructor has the size `h^t` had during
      the encoder warm-up. Scaling does not change any cosine assignment.
    - `dot`: k-means whose assignment step is maximum inner product, as the indexer's code assignment is.
    - `l2`: plain k-means (squared L2), as `faiss.Kmeans` runs it with the same seed and iterations.

    Given the seed, the result is deterministic: assignment is per point and centroid sums are split by centroid, so
    faiss's threads do not reorder floating-point sums (1 and 2 threads gave identical codes on 12,101 x 384 vectors).
    """
    if geometry not in KMEANS_GEOMETRIES:
        raise ValueError(f"k-means geometry must be one of {KMEANS_GEOMETRIES}, got {geometry!r}.")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count, dim = vectors.shape
    check_codebook_fits("k-means", num_codes, count)
    if not np.isfinite(vectors).all():
        raise ValueError("The encoder produced non-finite vectors; k-means cannot run on them.")
    parameters = faiss.ClusteringParameters()
    # One iteration per `train` call: faiss continues from the centroids it holds, so the result equals one call
    # with `iterations` iterations, and the loop can drive a progress bar.
    parameters.niter = 1
    parameters.seed = seed
    # faiss would otherwise subsample to 256 points per centroid (use every document) and warn under 39 (small
    # groups of hierarchical k-means are fine).
    parameters.max_points_per_centroid = max(256, -(-count // num_codes))
    parameters.min_points_per_centroid = 1
    parameters.spherical = geometry == "cosine"
    points = vectors
    if geometry == "cosine":
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        points = vectors / np.maximum(norms, 1e-12)
    clustering = faiss.Clustering(dim, num_codes, parameters)
    index = faiss.IndexFlatL2(dim) if geometry == "l2" else faiss.IndexFlatIP(dim)
    for _ in tqdm(range(iterations), desc=f"k-means ({count} x {num_codes})", disable=not progress, leave=False):
        clustering.train(points, index)
    centroids = faiss.vector_to_array(clustering.centroids).reshape(num_codes, dim)
    if geometry == "cosine":
        centroids = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        centroids = centroids * float(norms.mean())
    return np.ascontiguousarray(centroids, dtype=np.float32)
