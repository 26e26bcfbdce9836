"""Write the JSON of one `lmindexer finetune` recommendation run for benchmarks/: its test metrics on every test
user, most-popular on the same users, the learning curve (validation Recall/NDCG against training seconds), the
model's size and settings, wall time and the command.

    python benchmarks/rec_result.py --run runs/rec-causal/beauty --wall_s 900 --command "..." --output benchmarks/rec/x.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from lmindexer.trainers.bench.rec import most_popular, test_sequences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="Output folder of the finetune run.")
    parser.add_argument("--wall_s", type=float, required=True, help="Wall seconds of the whole finetune command.")
    parser.add_argument("--command", required=True)
    parser.add_argument("--data", required=True, help="The dataset folder (items.jsonl, sequences.jsonl).")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    run = Path(args.run)
    metrics = json.loads((run / "retrieval_metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    ks = [5, 10]
    users = test_sequences(Path(args.data) / "sequences.jsonl")
    result = {
        "command": args.command,
        "machine": f"{platform.machine()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
        "python": sys.version.split()[0],
        "wall_s": args.wall_s,
        "test_users": len(users),
        "metrics": {key: value for key, value in metrics.items() if key.startswith("test_")},
        "most_popular": most_popular(users, list(range(len(users))), ks),
        "learning_curve": metrics.get("learning_curve", []),
        "preset": metrics.get("preset"),
        "backbone": config["backbone_config"].get("model_type"),
        "id_token_init": config.get("id_token_init"),
        "id_layout": {
            "id_length": config["id_length"],
            "codebook_sizes": config["codebook_sizes"],
            "dedup_size": config["dedup_size"],
        },
        "data": args.data,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(json.dumps({key: result[key] for key in ("metrics", "most_popular", "wall_s")}, indent=2))


if __name__ == "__main__":
    main()
