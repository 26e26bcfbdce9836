"""Recall@k, NDCG@k, MAP@k and MRR@k of ranked document lists, computed by trec_eval (through `pytrec_eval`).

A self-contained `evaluate` metric: it imports only `evaluate`, `datasets` and `pytrec_eval` (PyPI package
`pytrec-eval-terrier`), so the folder holding it can be loaded with `evaluate.load(<folder>)`, offline, or
pushed to the Hub as is.

How each score maps onto trec_eval, per query, for a cutoff k:

- `recall@k` is trec_eval's `recall_k`: relevant documents in the top k over all relevant documents.
- `ndcg@k` is trec_eval's `ndcg_cut_k`: gains are the relevance grades, discount log2(rank + 1), and the ideal
  DCG is taken over *all* relevant documents of the query (retrieved or not), capped at k.
- `map@k` is trec_eval's `map_cut_k` rescaled: trec_eval divides the summed precisions at the relevant ranks
  <= k by the number R of relevant documents, while this metric divides by min(R, k), so that a perfect top k
  scores 1 even when a query has more than k relevant documents. map@k = map_cut_k * R / min(R, k).
- `mrr@k` is trec_eval's `recip_rank` on the ranking cut after its first k documents (0 when no relevant
  document is in the top k).

Every score is averaged over queries. trec_eval orders documents by score, so the ranking is handed over with
strictly decreasing scores by rank; a document listed twice keeps its first (best) rank and counts once.
trec_eval's relevance grades are integers: grades must be whole numbers, and a grade <= 0 means not relevant.
"""

from __future__ import annotations

import json

import datasets
import evaluate
import pytrec_eval  # From: pytrec-eval-terrier

_CITATION = """\
@inproceedings{VanGysel2018pytreceval,
  title={Pytrec\\_eval: An Extremely Fast Python Interface to trec\\_eval},
  author={Van Gysel, Christophe and de Rijke, Maarten},
  booktitle={SIGIR},
  year={2018},
}
"""

_DESCRIPTION = """\
Ranking metrics for retrieval that returns ranked lists of document ids (e.g. generative retrieval over
semantic IDs): Recall@k, NDCG@k (ideal DCG over all relevant documents), MAP@k (normalised by min(#relevant, k))
and MRR@k, averaged over queries and computed by trec_eval through pytrec_eval.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `str`): one ranked list of document ids per query, best first.
    references: the relevant documents of each query, in either of two forms (all queries in one call use the
        same form):
        - a dict `{"doc_ids": [str, ...], "grades": [number, ...]}` of parallel lists, one whole-number grade
          per document (use 1 everywhere for binary relevance);
        - a JSON string: an object `{"doc_id": grade, ...}`, or a list `["doc_id", ...]` for binary relevance.
        A grade <= 0 marks a document as not relevant; a query must have at least one relevant document.
    ks (`list` of `int`, defaults to `[5, 10]`): the cutoffs.
Returns:
    `recall@k`, `ndcg@k`, `map@k` and `mrr@k` for every k in `ks`, each the mean over queries.
Examples:
    >>> metric = evaluate.load("path/to/semantic_id_ranking")
    >>> metric.compute(predictions=[["a", "x", "b"]], references=[{"doc_ids": ["a", "b"], "grades": [1, 1]}], ks=[1])
    {'map@1': 1.0, 'mrr@1': 1.0, 'ndcg@1': 1.0, 'recall@1': 0.5}
"""

_NAMES = {"recall": "recall_{k}", "ndcg": "ndcg_cut_{k}", "map": "map_cut_{k}", "mrr": "recip_rank"}


def _features(references: datasets.features.FeatureType) -> datasets.Features:
    return datasets.Features({"predictions": datasets.Sequence(datasets.Value("string")), "references": references})


def _judgements(reference: dict | str) -> dict[str, int]:
    """trec_eval's qrels of one query, `{doc_id: grade}`, keeping only the relevant documents (grade > 0)."""
    if isinstance(reference, str):
        parsed = json.loads(reference)
        if isinstance(parsed, dict):
            pairs = list(parsed.items())
        elif isinstance(parsed, list):
            pairs = [(doc_id, 1) for doc_id in parsed]
        else:
            raise ValueError(f"A JSON reference must be an object or a list, not {reference!r}.")
    else:
        if len(reference["doc_ids"]) != len(reference["grades"]):
            raise ValueError(f"{len(reference['doc_ids'])} doc_ids for {len(reference['grades'])} grades.")
        pairs = list(zip(reference["doc_ids"], reference["grades"]))
    judged: dict[str, int] = {}
    for doc_id, grade in pairs:
        if not isinstance(doc_id, str):
            raise ValueError(f"Document ids must be strings, got {doc_id!r}.")
        if isinstance(grade, bool) or not isinstance(grade, (int, float)) or not float(grade).is_integer():
            raise ValueError(f"Relevance grades must be whole numbers (trec_eval's qrels are integers), got {grade!r}.")
        if grade > 0:
            judged[doc_id] = max(judged.get(doc_id, 0), int(grade))
    if not judged:
        raise ValueError("A query with no relevant document cannot be scored.")
    return judged


def _run(ranked: list[str], k: int) -> dict[str, float]:
    """The first k distinct documents, with strictly decreasing scores so that trec_eval keeps our order."""
    top: list[str] = []
    seen: set[str] = set()
    for doc_id in ranked:
        if len(top) == k:
            break
        if doc_id not in seen:
            seen.add(doc_id)
            top.append(doc_id)
    return {doc_id: float(len(top) - rank) for rank, doc_id in enumerate(top)}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SemanticIdRanking(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                _features(
                    {
                        "doc_ids": datasets.Sequence(datasets.Value("string")),
                        "grades": datasets.Sequence(datasets.Value("float64")),
                    }
                ),
                _features(datasets.Value("string")),
            ],
            codebase_urls=["https://github.com/terrierteam/pytrec_eval", "https://github.com/usnistgov/trec_eval"],
            reference_urls=["https://trec.nist.gov/trec_eval/"],
        )

    def _compute(self, predictions, references, ks=(5, 10)):
        if not predictions:
            raise ValueError("No queries to evaluate.")
        if isinstance(ks, int) or not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
            raise ValueError(f"ks must be a non-empty list of positive integers, got {ks!r}.")
        ks = sorted(set(ks))
        qrels = {str(index): _judgements(reference) for index, reference in enumerate(references)}
        cutoffs = ",".join(str(k) for k in ks)
        evaluator = pytrec_eval.RelevanceEvaluator(
            qrels, {f"recall.{cutoffs}", f"ndcg_cut.{cutoffs}", f"map_cut.{cutoffs}", "recip_rank"}
        )
        totals: dict[str, float] = {}
        for k in ks:
            # Every measure reads the ranking cut at k: the `_k` ones cut it themselves, recip_rank needs the cut.
            results = evaluator.evaluate({query: _run(ranked, k) for query, ranked in zip(qrels, predictions)})
            if set(results) != set(qrels):
                raise RuntimeError(f"trec_eval scored {len(results)} of {len(qrels)} queries.")
            for query, measures in results.items():
                relevant = len(qrels[query])
                for name, measure in _NAMES.items():
                    value = measures[measure.format(k=k)]
                    if name == "map":
                        value = value * relevant / min(relevant, k)
                    totals[f"{name}@{k}"] = totals.get(f"{name}@{k}", 0.0) + value
        return {name: value / len(qrels) for name, value in sorted(totals.items())}
