"""Hierarchical k-means (DSI / NCI semantic IDs) with a fixed depth of `id_length` levels.

Level 1 clusters the whole corpus into K_1 groups; level t clusters each level-(t-1) group separately into K_t,
so a code only has meaning under its prefix (unlike RQ-KMeans, whose level-t codebook is shared by all
prefixes). The original embeddings are clustered at every level (no residuals), in squared L2 for both fitting
(faiss k-means) and assignment (nearest centroid within the document's group).

A group with at most K members is not clustered: its members themselves become the group's "centroids", with
codes 0..n-1 in corpus order. Assigning a training document then finds itself (distance 0) and reproduces its
code; a new document gets the code of its nearest member. (With n == K, k-means would also give each member its
own cluster, only in a seed-dependent order.) Exact duplicate vectors in such a group share the first one's code,
because `fit` uses the same nearest-centroid rule as `assign`, which keeps `assign(train) == fit(train)`.

A k-means centroid that ends with no members still gets a child group, holding just that centroid, so every
prefix `assign` can produce has a group below it.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..indexer.kmeans import kmeans_codebook
from .quantizer import Quantizer, nearest_l2, register_quantizer


@register_quantizer("hkmeans")
class HierarchicalKMeansQuantizer(Quantizer):
    """Settings: `niter` (k-means iterations per group, default 25).

    Group g at level t is clustered with seed `seed + g`, g counting groups in (level, prefix) order.
    """

    default_settings = {"niter": 25}

    def minimum_documents(self) -> int:
        """Only the first level must fill its codebook; deeper groups may be small (codes 0..n-1)."""
        return self.codebook_sizes[0]

    def _fit(self, vectors: np.ndarray) -> np.ndarray:
        codes = np.zeros((len(vectors), self.id_length), dtype=np.int64)
        self.groups: dict[tuple[int, ...], np.ndarray] = {}
        self.clustered_groups_per_level = [0] * self.id_length
        # prefix -> (member rows, the parent centroid standing in for a memberless group)
        pending: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray | None]] = {(): (np.arange(len(vectors)), None)}
        for level in tqdm(
            range(self.id_length), desc="Hierarchical k-means levels", disable=not self.progress, leave=False
        ):
            size = self.codebook_sizes[level]
            children: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray | None]] = {}
            for prefix in sorted(pending):
                rows, stand_in = pending[prefix]
                members = vectors[rows] if len(rows) else stand_in[None, :]
                if len(members) > size:
                    centroids = kmeans_codebook(
                        members, size, "l2", seed=self._rng_seed(len(self.groups)), iterations=self.settings["niter"]
                    )
                    self.clustered_groups_per_level[level] += 1
                else:
                    centroids = members.copy()
                self.groups[prefix] = centroids
                local = nearest_l2(centroids, vectors[rows]) if len(rows) else np.zeros(0, dtype=np.int64)
                codes[rows, level] = local
                if level + 1 < self.id_length:
                    for code in range(len(centroids)):
                        children[prefix + (code,)] = (rows[local == code], centroids[code])
            pending = children
        return codes

    def _assign(self, vectors: np.ndarray) -> np.ndarray:
        codes = np.zeros((len(vectors), self.id_length), dtype=np.int64)
        for level in range(self.id_length):
            prefixes, group_of_row = np.unique(codes[:, :level], axis=0, return_inverse=True)
            group_of_row = group_of_row.reshape(-1)
            for index, prefix in enumerate(prefixes):
                rows = np.flatnonzero(group_of_row == index)
                centroids = self.groups.get(tuple(int(code) for code in prefix))
                if centroids is None:  # cannot happen for a consistent fit; guards a hand-edited save
                    raise ValueError(f"No hierarchical k-means group for prefix {tuple(prefix)} at level {level + 1}.")
                codes[rows, level] = nearest_l2(centroids, vectors[rows])
        return codes

    # ------------------------------------------------------------------------------------------- persistence
    def _state_tensors(self) -> dict[str, np.ndarray]:
        """One concatenated centroid table plus, per group, its level, padded prefix and row offset: flat tensors
        that safetensors can hold, whatever the number and sizes of groups."""
        prefixes = sorted(self.groups, key=lambda prefix: (len(prefix), prefix))
        width = max(1, self.id_length - 1)
        padded = np.full((len(prefixes), width), -1, dtype=np.int64)
        for index, prefix in enumerate(prefixes):
            padded[index, : len(prefix)] = prefix
        sizes = [len(self.groups[prefix]) for prefix in prefixes]
        return {
            "centroids": np.concatenate([self.groups[prefix] for prefix in prefixes]).astype(np.float32),
            "group_offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            "group_levels": np.array([len(prefix) for prefix in prefixes], dtype=np.int64),
            "group_prefixes": padded,
            "clustered_groups_per_level": np.array(self.clustered_groups_per_level, dtype=np.int64),
        }

    def _load_state(self, tensors: dict[str, np.ndarray], config: dict) -> None:
        offsets, levels, prefixes = tensors["group_offsets"], tensors["group_levels"], tensors["group_prefixes"]
        self.groups = {
            tuple(int(code) for code in prefixes[index, :level]): tensors["centroids"][
                offsets[index] : offsets[index + 1]
            ]
            for index, level in enumerate(levels)
        }
        self.clustered_groups_per_level = [int(count) for count in tensors["clustered_groups_per_level"]]

    def _level_geometry(self) -> list[dict]:
        groups_per_level = [0] * self.id_length
        for prefix in self.groups:
            groups_per_level[len(prefix)] += 1
        return [
            {
                "level": level + 1,
                "codebook_size": size,
                "clusters": "embeddings within each parent group",
                "fit": "faiss k-means per group, L2; groups of <= K members keep members as centroids",
                "assign": "nearest centroid of the parent group, L2 (IndexFlatL2)",
                "groups": groups_per_level[level],
                "clustered_groups": self.clustered_groups_per_level[level],
            }
            for level, size in enumerate(self.codebook_sizes)
        ]
