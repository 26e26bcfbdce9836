"""The README's recommendation tables from `lmindexer bench rec` JSON files: one row per ID method, mean ± standard
deviation over every seed found in the files given (one file per seed when seeds ran side by side), most-popular and
any added baselines (SASRec) on the same users.

    python benchmarks/rec_tables.py benchmarks/rec/ids_causal_beauty_seed0.json benchmarks/rec/ids_causal_beauty_seed1.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def table(paths: list[str]) -> str:
    results = [json.loads(Path(path).read_text()) for path in paths]
    users = {result["settings"]["test_users_evaluated"] for result in results}
    if len(users) != 1:
        raise SystemExit(f"The files were evaluated on different numbers of users: {sorted(users)}.")
    by_method: dict[str, list[dict]] = {}
    for result in results:
        for record in result["records"]:
            by_method.setdefault(record["ids"].rsplit("-seed", 1)[0], []).append(record)
    lines = [
        "| IDs | runs (seeds) | " + " | ".join(METRICS) + " | epochs | wall s per run |",
        "|:--|:--|" + "--:|" * (len(METRICS) + 2),
    ]
    popular = results[0]["most_popular"]
    lines.append("| most-popular | - | " + " | ".join(f"{popular[name]:.4f}" for name in METRICS) + " | - | 0 |")
    for baseline in results[0].get("baselines", []):
        lines.append(
            f"| {baseline['ids']} | 1 ({baseline['seed']}) | "
            + " | ".join(f"{baseline['metrics'][f'test_{name}']:.4f}" for name in METRICS)
            + f" | {baseline.get('best_epoch', '')} | {baseline['wall_s']:.0f} |"
        )
    for method, records in by_method.items():
        seeds = ",".join(str(record["seed"]) for record in records)
        cells = [spread([record["metrics"][f"test_{name}"] for record in records]) for name in METRICS]
        epochs = ",".join(sorted({f"{record.get('epochs', '')}" for record in records}))
        wall = statistics.mean(record["wall_s"] for record in records)
        lines.append(f"| {method} | {len(records)} ({seeds}) | " + " | ".join(cells) + f" | {epochs} | {wall:.0f} |")
    commands = sorted({result["command"] for result in results})
    return "\n".join(lines) + f"\n\n{users.pop()} test users. Commands: " + "; ".join(f"`{c}`" for c in commands) + "\n"


if __name__ == "__main__":
    print(table(sys.argv[1:]))
