"""Throughput of the `generative-retrieval` pipeline against `model.retrieve`, side by side in one run.

    python benchmarks/bench_pipeline.py --model benchmarks/_work/beauty-retriever --queries 128 --output benchmarks/pipeline.json

Loads the retriever the way a Hub user does (AutoModel + trust_remote_code from the folder), takes item titles
from its ID map as queries, and times, in interleaved rounds: `model.retrieve` on batches, the pipeline on the
same list with the same batch size, the pipeline one query at a time, and `model.retrieve` at each batch size of
`--sweep`, and the raw constrained decode with and without the shared cross-attention cache. Prints queries per second and writes JSON with the machine and the command.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, pipeline


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="Retriever folder (or Hub repo) to load with trust_remote_code.")
    parser.add_argument("--queries", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-beams", type=int, default=20)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sweep", default="1,4,32", help="Batch sizes at which model.retrieve is also timed.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    model = AutoModel.from_pretrained(args.model, trust_remote_code=True).eval().to(args.device)
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True)
    titles = model.id_map.doc_titles or list(model.id_map.doc_ids)
    queries = [titles[(index * 97) % len(titles)] for index in range(args.queries)]
    retriever = pipeline("generative-retrieval", model=args.model, trust_remote_code=True, device=args.device)
    settings = dict(top_k=args.top_k, num_beams=args.num_beams)

    def direct():
        return model.retrieve(queries, tokenizer=tokenizer, batch_size=args.batch_size, **settings)

    def piped():
        return retriever(queries, batch_size=args.batch_size, **settings)

    def one_by_one():
        return [retriever(query, **settings) for query in queries[: max(8, args.queries // 8)]]

    runs = {
        "retrieve_batched": (direct, args.queries),
        "pipeline_batched": (piped, args.queries),
        "pipeline_unbatched": (one_by_one, max(8, args.queries // 8)),
    }
    batches = [
        tokenizer(queries[start : start + args.batch_size], padding=True, return_tensors="pt")
        for start in range(0, len(queries), args.batch_size)
    ]
    for cache in ("shared", "stock"):
        runs[f"decode_batch_{args.batch_size}_{cache}_cache"] = (
            lambda cache=cache: [
                model.decode_rows(
                    b["input_ids"],
                    b["attention_mask"],
                    num_beams=args.num_beams,
                    share_cross_attention=cache == "shared",
                )
                for b in batches
            ],
            args.queries,
        )
    for size in (int(part) for part in args.sweep.split(",") if part.strip()):
        runs[f"retrieve_batch_{size}"] = (
            lambda size=size: model.retrieve(queries, tokenizer=tokenizer, batch_size=size, **settings),
            args.queries,
        )
    # Same answers first: the pipeline must rank exactly as retrieve does.
    same = [[h["doc_id"] for h in r] for r in direct()] == [[h["doc_id"] for h in r] for r in piped()]
    timings = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (run, _) in runs.items():
            start = time.perf_counter()
            run()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            timings[name].append(time.perf_counter() - start)
    result = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()} {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "model": args.model,
        "documents": len(model.id_map),
        "settings": vars(args),
        "same_rankings": same,
        "queries_per_second": {name: count / statistics.median(timings[name]) for name, (_, count) in runs.items()},
        "seconds": timings,
    }
    qps = result["queries_per_second"]
    result["pipeline_batched_over_retrieve"] = qps["pipeline_batched"] / qps["retrieve_batched"]
    shared, stock = (qps[f"decode_batch_{args.batch_size}_{cache}_cache"] for cache in ("shared", "stock"))
    result["shared_over_stock_cache"] = shared / stock
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "same_rankings",
                    "queries_per_second",
                    "pipeline_batched_over_retrieve",
                    "shared_over_stock_cache",
                )
            },
            indent=2,
        )
    )
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
