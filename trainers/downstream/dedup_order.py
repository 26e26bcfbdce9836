"""Numbering the dedup position by popularity, for recommendation.

Items that share all learned codes (the same title in two sizes, near-identical products; 25-72% of Amazon items
under the layouts benchmarked) are told apart only by the dedup index. Numbered by item ID, as indexing does, that
index is arbitrary: a recommender can only memorise it item by item. Numbered by how often each item occurs in the
training part of the sequences, index 0 is the group's most popular item everywhere, a rule the model learns once for
every group. Only training interactions are counted (each user's last two items, the validation and test targets,
never), so no held-out item informs the order.
"""

from __future__ import annotations

from collections import Counter

DEDUP_ORDERS = ("index", "popularity")


def training_item_counts(users: list[list[str]]) -> Counter:
    """How often each item is a training interaction: every item but the last two (the validation and test targets) of
    each user with 3 or more items, the users that leave-one-out splits keep."""
    return Counter(item for items in users if len(items) >= 3 for item in items[:-2])


def popularity_ordered_dedup(id_map, counts: Counter):
    """`id_map` with the dedup index renumbered inside each group of shared learned codes: 0 for the item with the
    most `counts`, then down, ties by item ID. Learned codes, layout, titles and run are kept."""
    import torch

    from ...modeling_lmindexer import SemanticIDMap

    learned = id_map.semantic_ids[:, :-1]
    _, group = torch.unique(learned, dim=0, return_inverse=True)
    group = group.tolist()
    doc_ids = id_map.doc_ids
    order = sorted(range(len(doc_ids)), key=lambda row: (group[row], -counts[doc_ids[row]], doc_ids[row]))
    dedup = torch.empty(len(order), dtype=torch.long)
    previous, position = None, 0
    for row in order:
        position = position + 1 if group[row] == previous else 0
        dedup[row], previous = position, group[row]
    return SemanticIDMap(
        id_map.doc_ids,
        torch.cat([learned, dedup[:, None]], dim=1),
        id_map.codebook_sizes,
        id_map.dedup_size,
        id_map.doc_titles,
        run_id=id_map.run_id,
        text_digests=id_map.text_digests,
    )
