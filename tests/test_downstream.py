import json
import math

import pytest
import torch
from transformers import T5ForConditionalGeneration

from lmindexer import LMIndexerForGenerativeRetrieval, SemanticIDMap
from lmindexer.trainers.data.demo import tiny_t5_config, write_jsonl
from lmindexer.trainers.downstream.collators import RetrievalCollator
from lmindexer.trainers.downstream.data import HistoryFormat, recommendation_splits, retrieval_splits
from lmindexer.trainers.downstream.ranking_metrics import query_metrics, ranking_metrics
from lmindexer.trainers.downstream.retrieval_trainer import (
    GenerativeRetrievalTrainer,
    RetrievalTrainingArguments,
    apply_lora,
)


def test_metrics_by_hand():
    ranked = ["a", "x", "b", "y", "z"]
    relevant = {"a", "b", "c"}
    m = query_metrics(ranked, relevant, 5)
    assert m["recall@5"] == pytest.approx(2 / 3)
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # all three relevant, not only the two retrieved
    assert m["ndcg@5"] == pytest.approx(dcg / idcg)
    assert m["map@5"] == pytest.approx((1 + 2 / 3) / 3)
    assert m["mrr@5"] == 1.0
    assert query_metrics(["x", "a"], {"a"}, 1) == {"recall@1": 0.0, "ndcg@1": 0.0, "map@1": 0.0, "mrr@1": 0.0}
    mean = ranking_metrics([["a"], ["x", "b"]], [{"a"}, {"b"}], ks=[2])
    assert mean["mrr@2"] == pytest.approx(0.75)
    with pytest.raises(ValueError):
        query_metrics(["a"], set(), 1)


@pytest.fixture
def catalogue(tmp_path, demo_items):
    items = write_jsonl(demo_items[:12], tmp_path / "items.jsonl")
    ids = [i["item_id"] for i in demo_items[:12]]
    sequences = write_jsonl(
        [
            {"user_id": "u1", "items": ids[:5]},
            {"user_id": "u2", "items": ids[5:7]},
            {"user_id": "u3", "items": [ids[8], "UNKNOWN", ids[9], ids[10]]},
        ],
        tmp_path / "sequences.jsonl",
    )
    return items, sequences, ids, {i["item_id"]: i["title"] for i in demo_items[:12]}


def test_leave_one_out_recommendation(catalogue):
    items, sequences, ids, titles = catalogue
    splits = recommendation_splits(sequences, items, HistoryFormat(max_history=2, separator=" | "))
    test = splits["test"]
    assert test["target_doc_id"] == [ids[4], ids[10]]  # u2 has only 2 items; UNKNOWN dropped for u3
    assert test[0]["input_text"] == f"{titles[ids[2]]} | {titles[ids[3]]}"
    assert splits["validation"]["target_doc_id"] == [ids[3], ids[9]]
    assert splits["train"]["target_doc_id"] == [ids[1], ids[2]]
    assert splits["train"][1]["input_text"] == f"{titles[ids[0]]} | {titles[ids[1]]}"
    newest = recommendation_splits(sequences, items, HistoryFormat(max_history=2, newest_first=True, separator=" | "))
    assert newest["test"][0]["input_text"] == f"{titles[ids[3]]} | {titles[ids[2]]}"


def test_beir_splits_count_unknowns(tmp_path):
    write_jsonl(
        [{"_id": "d1", "title": "A", "text": "alpha"}, {"_id": "d2", "title": "B", "text": "beta"}],
        tmp_path / "corpus.jsonl",
    )
    write_jsonl([{"_id": "q1", "text": "what is alpha"}, {"_id": "q2", "text": "beta?"}], tmp_path / "queries.jsonl")
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\nq2\td7\t1\n")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td2\t1\nq2\td1\t1\n")
    splits, report = retrieval_splits(tmp_path, known_docs={"d1", "d2"})
    assert report == {"unknown_queries": 1, "unknown_documents": 1}
    assert [(r["input_text"], r["target_doc_id"]) for r in splits["train"]] == [
        ("what is alpha", "d1"),
        ("A; alpha", "d1"),
        ("B; beta", "d2"),
    ]
    assert json.loads(splits["test"][0]["relevant"]) == {"d2": 1, "d1": 1}


def tiny_retriever(demo_items, demo_tokenizer, count=12):
    import copy

    tokenizer = copy.deepcopy(demo_tokenizer)
    torch.manual_seed(0)
    ids = [i["item_id"] for i in demo_items[:count]]
    codes = torch.tensor([[i % 3, i // 3 % 4] for i in range(count)])
    id_map = SemanticIDMap.from_codes(ids, codes, [3, 4], 4)
    model = LMIndexerForGenerativeRetrieval.from_backbone_and_map(
        T5ForConditionalGeneration(tiny_t5_config(len(tokenizer), 32)), tokenizer, id_map
    )
    return model, tokenizer


def test_finetune_learns_the_training_pairs_and_evaluates(demo_items, demo_tokenizer, tmp_path, catalogue):
    import datasets

    model, tokenizer = tiny_retriever(demo_items, demo_tokenizer)
    rows = [
        {"input_text": item["title"], "target_doc_id": item["item_id"], "relevant": json.dumps({item["item_id"]: 1})}
        for item in demo_items[:12]
    ]
    data = datasets.Dataset.from_list(rows)
    args = RetrievalTrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=250,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        per_device_train_batch_size=12,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        eval_num_beams=6,
        eval_ks="1,5",
        logging_steps=100,
    )
    trainer = GenerativeRetrievalTrainer(
        model=model,
        args=args,
        train_dataset=data,
        eval_dataset=data,
        data_collator=RetrievalCollator(tokenizer, model, 32),
        processing_class=tokenizer,
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_recall@1"] >= 0.9 > before["eval_recall@1"]
    assert set(after) >= {"eval_ndcg@5", "eval_map@5", "eval_mrr@5", "eval_recall@5"}


def test_lora_changes_output_and_round_trips(demo_items, demo_tokenizer, tmp_path):
    import datasets
    from peft import PeftModel

    model, tokenizer = tiny_retriever(demo_items, demo_tokenizer)
    model.eval()
    query = [demo_items[3]["title"]]
    baseline = model.retrieve(query, tokenizer=tokenizer, top_k=3, num_beams=6)
    lora = apply_lora(model, ["q", "v"], rank=4)
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any("shared" in n for n in trainable)
    assert not any("SelfAttention.k.weight" in n for n in trainable)
    rows = [{"input_text": i["title"], "target_doc_id": i["item_id"], "relevant": "{}"} for i in demo_items[:12]]
    args = RetrievalTrainingArguments(
        output_dir=str(tmp_path / "t"),
        num_train_epochs=20,
        learning_rate=1e-2,
        per_device_train_batch_size=12,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    GenerativeRetrievalTrainer(
        model=lora,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        data_collator=RetrievalCollator(tokenizer, model, 32),
        processing_class=tokenizer,
    ).train()
    lora.eval()
    tuned = model.retrieve(query, tokenizer=tokenizer, top_k=3, num_beams=6)
    assert tuned != baseline
    lora.save_pretrained(tmp_path / "adapter")
    fresh, _ = tiny_retriever(demo_items, demo_tokenizer)
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    assert fresh.retrieve(query, tokenizer=tokenizer, top_k=3, num_beams=6) == tuned
    merged = reloaded.merge_and_unload()
    assert isinstance(merged, LMIndexerForGenerativeRetrieval)
    # Merged weights equal base + adapter only to float precision: same ranking, scores within 1e-5.
    merged_hits = merged.retrieve(query, tokenizer=tokenizer, top_k=3, num_beams=6)[0]
    assert [(h["doc_id"], h["semantic_id"]) for h in merged_hits] == [(h["doc_id"], h["semantic_id"]) for h in tuned[0]]
    assert [h["score"] for h in merged_hits] == pytest.approx([h["score"] for h in tuned[0]], abs=1e-5)
    with pytest.raises(ValueError, match="target_modules"):
        apply_lora(fresh, [])
