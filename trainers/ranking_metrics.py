"""Ranking metrics over ranked document lists and sets of relevant documents.

NDCG's ideal DCG is computed over *all* relevant documents of the query (capped at k), not over the relevant
documents that happen to be retrieved: the research code did the latter, which inflates NDCG whenever a query
has several relevant documents. Binary relevance unless graded relevance is given.

The `evaluate` library's ranking metrics (e.g. `trec_eval`) are scripts fetched from the Hub at load time, which
fails offline, so these few formulas live here, each checked against hand-computed values in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def _gain(relevant: Mapping[str, float] | set[str], doc_id: str) -> float:
    if isinstance(relevant, Mapping):
        return float(relevant.get(doc_id, 0.0))
    return 1.0 if doc_id in relevant else 0.0


def query_metrics(ranked: Sequence[str], relevant: Mapping[str, float] | set[str], k: int) -> dict[str, float]:
    top = list(ranked[:k])
    gains = [_gain(relevant, doc_id) for doc_id in top]
    hits = [gain > 0 for gain in gains]
    relevant_count = len([d for d in relevant if _gain(relevant, d) > 0])
    if relevant_count == 0:
        raise ValueError("A query with no relevant document cannot be scored.")
    dcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains))
    ideal_gains = sorted((_gain(relevant, d) for d in relevant), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal_gains))
    precisions = [sum(hits[: rank + 1]) / (rank + 1) for rank, hit in enumerate(hits) if hit]
    first_hit = next((rank for rank, hit in enumerate(hits) if hit), None)
    return {
        f"recall@{k}": sum(hits) / relevant_count,
        f"ndcg@{k}": dcg / idcg if idcg else 0.0,
        f"map@{k}": sum(precisions) / min(relevant_count, k),
        f"mrr@{k}": 0.0 if first_hit is None else 1.0 / (first_hit + 1),
    }


def ranking_metrics(
    rankings: Sequence[Sequence[str]], relevants: Sequence[Mapping[str, float] | set[str]], ks: Sequence[int] = (5, 10)
) -> dict[str, float]:
    """Mean Recall@k, NDCG@k, MAP@k and MRR@k over queries."""
    if len(rankings) != len(relevants):
        raise ValueError(f"{len(rankings)} rankings for {len(relevants)} queries.")
    if not rankings:
        raise ValueError("No queries to evaluate.")
    totals: dict[str, float] = {}
    for ranked, relevant in zip(rankings, relevants):
        for k in ks:
            for name, value in query_metrics(ranked, relevant, k).items():
                totals[name] = totals.get(name, 0.0) + value
    return {name: value / len(rankings) for name, value in sorted(totals.items())}
