"""How much of a trained recommender's top 10 is spent on items the user already has, and what Recall@10 would be
with those dropped. In the Amazon datasets here no test item is in its user's history, so such slots are lost.

Probe only: `lmindexer evaluate` and `bench rec` rank every item, as `bench_sasrec.py` does for SASRec.

    python benchmarks/probe_history_items.py --run runs/rec-causal/scientific --data ../shared/data/amazon-scientific
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModel

from lmindexer.trainers.downstream.data import sequences_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="A fine-tuned recommender folder.")
    parser.add_argument("--data", required=True, help="Folder with sequences.jsonl.")
    parser.add_argument("--users", type=int, default=2000, help="The first N test users (3 or more items).")
    parser.add_argument("--num_beams", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default="benchmarks/rec/history_items_scientific.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = AutoModel.from_pretrained(args.run).eval()
    users = [items for items in sequences_of(Path(args.data) / "sequences.jsonl") if len(items) >= 3][: args.users]
    started = time.perf_counter()
    with torch.no_grad():
        results = model.retrieve(
            [model.render_history(items[:-1]) for items in users], top_k=args.num_beams, num_beams=args.num_beams
        )
    in_history = hits = hits_without_history = repeats = 0
    for items, ranked in zip(users, results):
        docs, history = [entry["doc_id"] for entry in ranked], set(items[:-1])
        repeats += items[-1] in history
        in_history += sum(doc in history for doc in docs[:10])
        hits += items[-1] in docs[:10]
        hits_without_history += items[-1] in [doc for doc in docs if doc not in history][:10]
    count = len(users)
    result = {
        "command": "python " + " ".join(shlex.quote(word) for word in sys.argv),
        "machine": f"{os.uname().machine}, {args.threads} thread(s)",
        "users": count,
        "test_items_in_history": repeats / count,
        "history_items_in_top10_per_user": in_history / count,
        "recall@10": hits / count,
        "recall@10_history_dropped": hits_without_history / count,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result, indent=2))
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
