"""Scoring a retriever by constrained beam search: the one evaluation of training-time evaluation
(`GenerativeRetrievalTrainer.evaluate`) and `lmindexer evaluate` (`evaluate_retriever`).

Every query is decoded through `model.retrieve` under the ID trie; the metrics are Recall, NDCG, MAP and MRR at each k
(`ranking_metrics`) and `prefix_right_dedup_wrong@1` (`dedup_confusion_at_1`).
"""

from __future__ import annotations

import json

from ..data.lists import split_names
from .ranking_metrics import ranking_metrics


def parse_ks(text: str, flag: str = "--eval_ks") -> list[int]:
    """The cut-offs k of `--eval_ks` / `--ks`: `"5,10"` -> `[5, 10]`. Anything but positive integers is refused,
    naming `flag`."""
    try:
        ks = [int(k) for k in split_names(text)]
    except ValueError:
        raise ValueError(f"{flag} {text!r}: give positive whole numbers separated by commas, e.g. 5,10.") from None
    if not ks or min(ks) < 1:
        raise ValueError(f"{flag} {text!r}: every cut-off k must be a positive whole number, e.g. 5,10.")
    return ks


def check_evaluation_settings(
    ks: list[int], num_beams: int, ks_flag: str = "--eval_ks", beams_flag: str = "--eval_num_beams"
) -> None:
    """Refuse settings that would make the metrics wrong: beam search returns at most `num_beams` documents, so a
    metric at a larger k would be silently understated."""
    if num_beams < 1:
        raise ValueError(f"{beams_flag} {num_beams}: beam search needs at least one beam.")
    if max(ks) > num_beams:
        raise ValueError(
            f"{ks_flag} {max(ks)} exceeds {beams_flag} {num_beams}: beam search returns at most that "
            f"many documents, so recall@{max(ks)} would be understated. Raise {beams_flag} to {max(ks)} "
            "or more."
        )


def retrieval_metrics(model, tokenizer, split, ks: list[int], num_beams: int, batch_size: int) -> dict[str, float]:
    """The metrics of `model` on `split` (`input_text` and `relevant` columns), keys like `recall@5`."""
    top_k = min(max(ks), num_beams)
    results = model.retrieve(
        list(split["input_text"]), tokenizer=tokenizer, top_k=top_k, num_beams=num_beams, batch_size=batch_size
    )
    rankings = [[entry["doc_id"] for entry in ranked] for ranked in results]
    relevants = [json.loads(relevant) for relevant in split["relevant"]]
    metrics = ranking_metrics(rankings, relevants, ks)
    id_map = model.id_map
    top_ids = [tuple(ranked[0]["semantic_id"]) if ranked else None for ranked in results]
    relevant_ids = [
        [id_map.semantic_id(doc) for doc, grade in relevant.items() if grade > 0 and doc in id_map]
        for relevant in relevants
    ]
    metrics["prefix_right_dedup_wrong@1"] = dedup_confusion_at_1(top_ids, relevant_ids, model.config.id_length)
    return metrics


def dedup_confusion_at_1(top_ids, relevant_ids, id_length: int) -> float:
    """Share of queries whose top-1 ID is not relevant but has a relevant document's learned prefix (its first
    `id_length` codes): the model found the right group and then picked the wrong dedup token.

    Dedup tokens only number the documents that share all learned codes, so nothing in a document's text tells them
    apart; a high value means those groups cost accuracy (larger codebooks, or more positions, would split them).
    `top_ids`: per query, the top-1 semantic ID (None when nothing was returned); `relevant_ids`: per query, the
    semantic IDs of its relevant documents.
    """
    if len(top_ids) != len(relevant_ids):
        raise ValueError(f"Got {len(top_ids)} top-1 IDs for {len(relevant_ids)} queries.")
    if not top_ids:
        return 0.0
    confused = 0
    for top, relevant in zip(top_ids, relevant_ids):
        if top is None:
            continue
        top, relevant = tuple(top), {tuple(ids) for ids in relevant}
        if top not in relevant and any(ids[:id_length] == top[:id_length] for ids in relevant):
            confused += 1
    return confused / len(top_ids)
