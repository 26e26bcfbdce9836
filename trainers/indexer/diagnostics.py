"""ID-quality diagnostics after each stage, with plain-words warnings when a collapse shows."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.metrics import adjusted_mutual_info_score, f1_score
from transformers import TrainerCallback

from ...modeling_lmindexer.semantic_id_map import code_usage, prefix_keys

logger = logging.getLogger("lmindexer")

# Where an indexer folder keeps the diagnostics of its run (every ID method writes the same layout).
METRICS_FILE = "indexer_metrics.json"
# A position whose codes are worth fewer than this many equally used codes has collapsed.
COLLAPSE_PERPLEXITY = 1.5
COLLAPSE_UTILISATION = 0.05


def _pairs(counts: np.ndarray) -> int:
    return int((counts * (counts - 1) // 2).sum())


def code_diagnostics(codes: np.ndarray, codebook_sizes: list[int], labels: list[str] | None = None) -> dict:
    """Metrics of the learned codes `[N, t]` so far.

    - `perplexity_t{k}` / `utilisation_t{k}`: `code_usage`, as in `SemanticIDMap.statistics`.
    - `diff_ratio_t{k}`: over document pairs that share `c^{<k}`, the fraction that differ at `c^k`.
    - `collision_rate`: fraction of documents sharing all codes so far with another document (before dedup).
    - `ami_t{k}`: adjusted mutual information of the prefix `c^{<=k}` with the labels, when labels are given.
    """
    metrics: dict[str, float] = {}
    for column in range(codes.shape[1]):
        position = column + 1
        utilisation, perplexity = code_usage(codes[:, column], codebook_sizes[column])
        metrics[f"perplexity_t{position}"] = perplexity
        metrics[f"utilisation_t{position}"] = utilisation
        _, before = np.unique(prefix_keys(codes[:, :column], codebook_sizes), return_counts=True)
        _, through = np.unique(prefix_keys(codes[:, : column + 1], codebook_sizes), return_counts=True)
        shared = _pairs(before)
        metrics[f"diff_ratio_t{position}"] = float(1 - _pairs(through) / shared) if shared else 1.0
        if labels is not None:
            keys = prefix_keys(codes[:, : column + 1], codebook_sizes)
            metrics[f"ami_t{position}"] = float(adjusted_mutual_info_score(labels, keys))
    _, inverse, group_sizes = np.unique(prefix_keys(codes, codebook_sizes), return_inverse=True, return_counts=True)
    metrics["collision_rate"] = float((group_sizes[inverse] > 1).mean())
    return metrics


def reconstruction_f1(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Token-level macro F1 of the reconstructor over the token ids that occur as targets."""
    if len(targets) == 0:
        return 0.0
    return float(f1_score(targets, predictions, labels=np.unique(targets), average="macro", zero_division=0))


def collapse_warnings(metrics: dict, position: int) -> list[str]:
    warnings = []
    perplexity = metrics.get(f"perplexity_t{position}")
    utilisation = metrics.get(f"utilisation_t{position}")
    if perplexity is not None and perplexity < COLLAPSE_PERPLEXITY:
        warnings.append(
            f"Position {position} has collapsed: its codes have perplexity {perplexity:.2f}, so nearly every document "
            "got the same code. Train the encoder warm-up longer, raise the contrastive weight, or lower the learning "
            "rate."
        )
    if utilisation is not None and utilisation < COLLAPSE_UTILISATION:
        warnings.append(
            f"Position {position} uses only {utilisation:.1%} of its codebook. The codebook is far larger than the "
            "corpus can fill, or the codes have collapsed."
        )
    return warnings


class IndexerDiagnosticsCallback(TrainerCallback):
    """At the end of a stage, asks the pipeline for that stage's diagnostics and logs them through the trainer
    (so they reach every `report_to` integration) with the stage prefix."""

    def __init__(self, compute):
        self.compute = compute
        self.trainer = None
        self.metrics: dict[str, float] = {}

    def on_train_end(self, args, state, control, **kwargs):
        self.metrics = self.compute(self.trainer)
        if self.trainer is not None and self.metrics:
            self.trainer.log(dict(self.metrics))
