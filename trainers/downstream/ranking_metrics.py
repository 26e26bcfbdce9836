"""Ranking metrics over ranked document lists and sets of relevant documents.

The scores come from the `evaluate` metric module shipped next to this file,
`metrics/semantic_id_ranking/semantic_id_ranking.py`, which computes them with trec_eval (`pytrec_eval`).
It is loaded from its local folder, so it works offline (`HF_HUB_OFFLINE=1`), and is loaded once per process.

NDCG's ideal DCG is computed over *all* relevant documents of the query (capped at k), not over the relevant
documents that happen to be retrieved: the research code did the latter, which inflates NDCG whenever a query
has several relevant documents. MAP@k divides by min(#relevant, k). Binary relevance unless graded relevance
(whole-number grades, as in qrels) is given. See the metric module's docstring for how each score maps onto
trec_eval's measures.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

METRIC_PATH = Path(__file__).resolve().parent / "metrics" / "semantic_id_ranking"


def load_ranking_metric():
    """A new `semantic_id_ranking` evaluate module, loaded from its local folder (no Hub access needed)."""
    import evaluate

    return evaluate.load(str(METRIC_PATH), keep_in_memory=True)


@functools.cache
def _shared_metric():
    # Loaded once per process and used only by `ranking_metrics`: an evaluate module is stateful (a failed
    # `add_batch` leaves its writer behind), so it is not handed out, and it is dropped after any failure.
    return load_ranking_metric()


def _reference(relevant: Mapping[str, float] | Iterable[str]) -> dict[str, list]:
    if isinstance(relevant, Mapping):
        return {
            "doc_ids": [str(doc_id) for doc_id in relevant],
            "grades": [float(grade) for grade in relevant.values()],
        }
    doc_ids = [str(doc_id) for doc_id in relevant]
    return {"doc_ids": doc_ids, "grades": [1.0] * len(doc_ids)}


def ranking_metrics(
    rankings: Sequence[Sequence[str]], relevants: Sequence[Mapping[str, float] | set[str]], ks: Sequence[int] = (5, 10)
) -> dict[str, float]:
    """Mean Recall@k, NDCG@k, MAP@k and MRR@k over queries, keys like `recall@5`, sorted by name.

    `relevants` holds, per query, either a set of relevant document ids or a mapping from document id to
    relevance grade. Raises ValueError for a query with no relevant document.
    """
    if len(rankings) != len(relevants):
        raise ValueError(f"{len(rankings)} rankings for {len(relevants)} queries.")
    if not rankings:
        raise ValueError("No queries to evaluate.")
    predictions = [[str(doc_id) for doc_id in ranked] for ranked in rankings]
    references = [_reference(relevant) for relevant in relevants]
    try:
        return _shared_metric().compute(predictions=predictions, references=references, ks=list(ks))
    except Exception:
        _shared_metric.cache_clear()
        raise


def query_metrics(ranked: Sequence[str], relevant: Mapping[str, float] | set[str], k: int) -> dict[str, float]:
    """Recall@k, NDCG@k, MAP@k and MRR@k of one query."""
    return ranking_metrics([ranked], [relevant], [k])
