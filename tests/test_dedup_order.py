"""`--dedup_order popularity`: inside each group of items sharing their learned codes, the dedup index ranks items by
their training interactions, never counting a user's held-out (validation and test) items."""

import json

import torch
from transformers import AutoModel

from lmindexer import SemanticIDMap
from lmindexer.trainers.data.demo import write_jsonl
from lmindexer.trainers.downstream.dedup_order import popularity_ordered_dedup, training_item_counts


def grouped_map() -> SemanticIDMap:
    # a, b, c share (0, 0); d, e share (1, 0); f is alone. Indexing numbers each group by item ID: a0 b1 c2, d0 e1.
    ids = ["a", "b", "c", "d", "e", "f"]
    codes = torch.tensor([[0, 0], [0, 0], [0, 0], [1, 0], [1, 0], [1, 1]])
    return SemanticIDMap.from_codes(ids, codes, [2, 2], 4, doc_titles=[f"title {i}" for i in ids])


# Training parts (all but the last two items): c three times, b twice, a never; d and e once each; f once.
# `a` is every user's validation or test item, and `e` a test item, so counting held-out items would reorder both.
USERS = [
    ["c", "b", "d", "a", "a"],
    ["c", "b", "e", "f", "a"],
    ["c", "f", "a", "e"],
    ["a", "a"],  # too short for a test sample: not a training user
]


def test_training_counts_leave_out_each_users_last_two_items_and_short_users():
    counts = training_item_counts(USERS)
    assert counts == {"c": 3, "b": 2, "d": 1, "e": 1, "f": 1}


def test_dedup_ranks_each_group_by_training_interactions_and_keeps_the_rest():
    before = grouped_map()
    after = popularity_ordered_dedup(before, training_item_counts(USERS))
    dedup = {doc: after.semantic_id(doc)[-1] for doc in after.doc_ids}
    assert dedup == {"c": 0, "b": 1, "a": 2, "d": 0, "e": 1, "f": 0}  # d and e tie: item ID order
    assert torch.equal(after.semantic_ids[:, :-1], before.semantic_ids[:, :-1])
    assert (after.codebook_sizes, after.dedup_size, after.run_id) == (
        before.codebook_sizes,
        before.dedup_size,
        before.run_id,
    )
    assert after.doc_titles == before.doc_titles and after.doc_ids == before.doc_ids
    # With no interactions the order is indexing's own.
    assert torch.equal(popularity_ordered_dedup(before, training_item_counts([])).semantic_ids, before.semantic_ids)


def test_finetune_trains_and_saves_the_popularity_ordered_map(tmp_path):
    from lmindexer.trainers.cli import main

    data = tmp_path / "data"
    data.mkdir()
    write_jsonl([{"item_id": doc, "title": f"title {doc}"} for doc in "abcdef"], data / "items.jsonl")
    write_jsonl([{"user_id": f"u{n}", "items": items} for n, items in enumerate(USERS)], data / "sequences.jsonl")
    indexer = tmp_path / "ids"
    indexer.mkdir()
    grouped_map().save(indexer / "semantic_id_map.safetensors")
    output = tmp_path / "rec"
    flags = (
        "--causal_layers 1 --causal_hidden_size 16 --causal_heads 2 --num_train_epochs 1 --eval_strategy no "
        "--save_strategy no --load_best_model_at_end false --eval_num_beams 4 --eval_ks 1,2 --report_to none "
        "--disable_tqdm true --use_cpu true"
    ).split()
    common = ["finetune", "--preset", "cpu", "--indexer", str(indexer), "--data", str(data)]
    assert main([*common, "--output_dir", str(output), "--dedup_order", "popularity", *flags]) == 0
    saved = AutoModel.from_pretrained(output).id_map
    assert [saved.semantic_id(doc)[-1] for doc in "abcdef"] == [2, 1, 0, 0, 1, 0]
    assert "test_recall@2" in json.loads((output / "retrieval_metrics.json").read_text())
    # The default keeps indexing's numbering.
    assert main([*common, "--output_dir", str(tmp_path / "plain"), *flags]) == 0
    plain = AutoModel.from_pretrained(tmp_path / "plain").id_map
    assert [plain.semantic_id(doc)[-1] for doc in "abcdef"] == [0, 1, 2, 0, 1, 0]


def test_popularity_dedup_order_is_refused_for_retrieval(tmp_path, capsys):
    from lmindexer.trainers.cli import main

    indexer = tmp_path / "ids"
    indexer.mkdir()
    grouped_map().save(indexer / "semantic_id_map.safetensors")
    status = main(
        ["finetune", "--task", "retrieval", "--indexer", str(indexer), "--data", str(tmp_path), "--dedup_order"]
        + ["popularity", "--output_dir", str(tmp_path / "out"), "--report_to", "none"]
    )
    assert status == 1
    assert "--dedup_order popularity" in capsys.readouterr().err
