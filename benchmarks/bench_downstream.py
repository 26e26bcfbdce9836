"""Generative recommendation on Amazon Beauty and generative retrieval on SciFact, with baselines in the same run.

- Beauty: leave-one-out, ranking over all 12,101 items (the trie holds every item's ID). The retriever starts
  from the Beauty indexer trained by `bench_beauty_indexer.py` (its IDs, backbone and codebooks). A
  most-popular-items baseline (training interactions only) is computed on the same test users.
- SciFact: train queries plus DSI-style indexing samples (document text -> its ID). Document IDs come from the
  same Beauty indexer, assigned zero-shot to the SciFact corpus (`lmindexer assign`'s code path), on the same
  backbone. nDCG@10, Recall@10 and Recall@100 on the 300 test queries; BM25 (`bm25s`) in the same run.

    python benchmarks/bench_downstream.py --indexer benchmarks/_work/beauty --output benchmarks/downstream.json

CPU-feasible settings subsample training pairs and test users; the JSON records every setting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lmindexer import LMIndexerForGenerativeRetrieval, LMIndexerForSemanticID, SemanticIDMap  # noqa: E402
from lmindexer.trainers.corpus_passes import assign_corpus  # noqa: E402
from lmindexer.trainers.corpus import join_fields  # noqa: E402
from lmindexer.modeling_lmindexer.semantic_id_map import prefix_keys  # noqa: E402
from lmindexer.trainers.ranking_metrics import ranking_metrics  # noqa: E402
from lmindexer.trainers.collators import RetrievalCollator  # noqa: E402
from lmindexer.trainers.downstream_data import (  # noqa: E402
    HistoryFormat, read_jsonl, recommendation_splits, retrieval_splits,
)
from lmindexer.trainers.retrieval_trainer import GenerativeRetrievalTrainer, RetrievalTrainingArguments  # noqa: E402


def subsample(dataset: datasets.Dataset, count: int | None, seed: int) -> datasets.Dataset:
    if count is None or count >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(count))


def train(model, tokenizer, train_set, args, output_dir: str, max_length: int) -> float:
    training_args = RetrievalTrainingArguments(
        output_dir=output_dir, num_train_epochs=args.epochs, learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size, report_to="none", save_strategy="no", logging_steps=100,
        disable_tqdm=True, seed=args.seed, warmup_steps=0.05,
    )
    trainer = GenerativeRetrievalTrainer(model=model, args=training_args, train_dataset=train_set,
                                         data_collator=RetrievalCollator(tokenizer, model, max_length), processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def evaluate(model, tokenizer, split, ks, num_beams, batch_size=16) -> tuple[dict, float]:
    model.eval()
    start = time.perf_counter()
    results = model.retrieve(split["input_text"], tokenizer=tokenizer, top_k=min(max(ks), num_beams), num_beams=num_beams,
                             batch_size=batch_size)
    seconds = time.perf_counter() - start
    rankings = [[entry["doc_id"] for entry in ranked] for ranked in results]
    return ranking_metrics(rankings, [json.loads(r) for r in split["relevant"]], ks), seconds


def beauty(args) -> dict:
    indexer_dir = Path(args.indexer)
    model = LMIndexerForGenerativeRetrieval.from_indexer(indexer_dir)
    model.config.max_query_length = args.rec_max_length
    tokenizer = model.tokenizer
    history = HistoryFormat(max_history=args.max_history, text_fields=("title",))
    # Saved with the model, as `lmindexer finetune` does: oldest-first histories are cut on the left (oldest items).
    for key, value in history.config_fields().items():
        setattr(model.config, key, value)
    splits = recommendation_splits(Path(args.beauty) / "sequences.jsonl", Path(args.beauty) / "items.jsonl", history,
                                   set(model.id_map.doc_ids))
    train_set = subsample(splits["train"], args.rec_train_samples, args.seed)
    test_set = subsample(splits["test"], args.rec_test_users, args.seed)
    train_s = train(model, tokenizer, train_set, args, "benchmarks/_work/beauty-rec", args.rec_max_length)
    metrics, eval_s = evaluate(model, tokenizer, test_set, [5, 10], args.num_beams)
    # Most popular items over the training interactions (everything but each user's last two items).
    popularity = Counter(item for user in read_jsonl(Path(args.beauty) / "sequences.jsonl") for item in user["items"][:-2])
    top = [item for item, _ in popularity.most_common(10)]
    popular = ranking_metrics([top] * len(test_set), [json.loads(r) for r in test_set["relevant"]], [5, 10])
    return {
        "items_in_trie": len(model.id_map), "train_pairs_available": len(splits["train"]), "train_pairs_used": len(train_set),
        "test_users_available": len(splits["test"]), "test_users_evaluated": len(test_set),
        "max_history": args.max_history, "max_length": args.rec_max_length, "num_beams": args.num_beams,
        "lmindexer": metrics, "most_popular": popular, "train_s": round(train_s, 1), "eval_s": round(eval_s, 1),
    }


def scifact(args) -> dict:
    folder = Path(args.scifact)
    indexer = LMIndexerForSemanticID.from_pretrained(args.indexer).eval()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.indexer)
    corpus = read_jsonl(folder / "corpus.jsonl")
    doc_ids = [str(doc["_id"]) for doc in corpus]
    texts = [join_fields(doc, ["title", "text"]) for doc in corpus]
    start = time.perf_counter()
    codes = assign_corpus(indexer, tokenizer, texts, batch_size=128, max_length=args.doc_max_length, progress=False)
    # Zero-shot documents can share learned codes more than Beauty items did: size the dedup position to fit.
    _, counts = np.unique(prefix_keys(codes, indexer.config.codebook_sizes), return_counts=True)
    dedup = 1 << int(counts.max() - 1).bit_length()
    id_map = SemanticIDMap.from_codes(doc_ids, torch.as_tensor(codes), indexer.config.codebook_sizes, dedup)
    assign_s = time.perf_counter() - start
    model = LMIndexerForGenerativeRetrieval.from_backbone_and_map(indexer.backbone, tokenizer, id_map, config=indexer.config)
    model.config.max_query_length = args.doc_max_length
    splits, report = retrieval_splits(folder, set(doc_ids), indexing=True)
    train_set = subsample(splits["train"], args.scifact_train_samples, args.seed)
    train_s = train(model, tokenizer, train_set, args, "benchmarks/_work/scifact", args.doc_max_length)
    metrics, eval_s = evaluate(model, tokenizer, splits["test"], [10, 100], args.scifact_beams)

    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    queries = splits["test"]["input_text"]
    hits, _ = retriever.retrieve(bm25s.tokenize(queries, stopwords="en", show_progress=False), k=100, show_progress=False)
    bm25 = ranking_metrics([[doc_ids[i] for i in row] for row in hits], [json.loads(r) for r in splits["test"]["relevant"]], [10, 100])
    return {
        "documents": len(doc_ids), "dedup_size": dedup, "id_map": {k: v for k, v in id_map.statistics().items() if k in ("collision_rate", "perplexity", "utilisation")},
        "train_samples_available": len(splits["train"]), "train_samples_used": len(train_set), "qrels_report": report,
        "test_queries": len(splits["test"]), "num_beams": args.scifact_beams,
        "lmindexer": {k: metrics[k] for k in ("ndcg@10", "recall@10", "recall@100")},
        "bm25s": {k: bm25[k] for k in ("ndcg@10", "recall@10", "recall@100")},
        "assign_s": round(assign_s, 1), "train_s": round(train_s, 1), "eval_s": round(eval_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--indexer", default="benchmarks/_work/beauty")
    parser.add_argument("--beauty", default="../shared/data/amazon-beauty")
    parser.add_argument("--scifact", default="../shared/data/scifact")
    parser.add_argument("--output", default="benchmarks/downstream.json")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-history", type=int, default=5)
    parser.add_argument("--rec-max-length", type=int, default=96)
    parser.add_argument("--rec-train-samples", type=int, default=6000)
    parser.add_argument("--rec-test-users", type=int, default=1000)
    parser.add_argument("--num-beams", type=int, default=20)
    parser.add_argument("--doc-max-length", type=int, default=64)
    parser.add_argument("--scifact-train-samples", type=int, default=None)
    parser.add_argument("--scifact-beams", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", choices=["beauty", "scifact"], default=None)
    args = parser.parse_args()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    results = {"command": "python " + " ".join(sys.argv), "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
               "backbone": "bert2bert all-MiniLM-L6-v2 from the Beauty indexer", "settings": vars(args)}
    if args.skip != "beauty":
        results["beauty_recommendation"] = beauty(args)
        print(json.dumps(results["beauty_recommendation"], indent=2), flush=True)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    if args.skip != "scifact":
        results["scifact_retrieval"] = scifact(args)
        print(json.dumps(results["scifact_retrieval"], indent=2), flush=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
