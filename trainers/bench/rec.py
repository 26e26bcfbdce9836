"""`lmindexer bench rec`: the same generative recommender on each ID method's IDs, next to popularity, in one table.

Every indexer folder given (LMIndexer, a two-stage baseline, or `--method random` IDs) is fine-tuned under the same
budget (the `RetrievalTrainingArguments` given, e.g. `--max_steps`) for each history format and seed, and evaluated
with constrained beam search on the same test users: leave-one-out over the full item set, all users or a seeded
sample (`--test_users`, `--sample_seed`, recorded). Most-popular (items ranked by training interactions: every
user's items but the last two) is scored on the same users. Output: JSON (settings, command, one record per run
with its budget and wall time) and a Markdown table beside it; both are rewritten after every run.

```python
from lmindexer.trainers.bench.rec import BenchRecArguments, bench_rec
bench_rec(BenchRecArguments(data="../shared/data/amazon-beauty", indexers="runs/idx,runs/rq"), data_args, training_args)
```
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...modeling_lmindexer.configuration_lmindexer import RECOMMENDATION
from ..data.lists import split_names
from ..downstream.data import sampled_test_rows, sequences_of
from ..downstream.dedup_order import training_item_counts
from ..downstream.evaluation import check_evaluation_settings, parse_ks
from ..downstream.finetuning import DownstreamDataArguments, FinetuneArguments, finetune_retriever
from ..downstream.ranking_metrics import ranking_metrics
from ..downstream.run_guard import AUTO_RESUME
from .results import (
    LMINDEXER_BACKBONE_FIELD,
    comparable_training_settings,
    earlier_result,
    finished_records,
    indexer_folders,
    markdown_table,
    new_result,
    run_finetune_arguments,
    seed_list,
    write_result,
)

TABLE_METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")


def table_metrics(ks: list[int]) -> list[str]:
    """The table's metric columns for the cut-offs of `--eval_ks`: recall, then NDCG, at each k (`TABLE_METRICS` for
    the default 5,10)."""
    return [f"{name}@{k}" for name in ("recall", "ndcg") for k in ks]


@dataclass
class BenchRecArguments:
    indexers: str = field(default="", metadata={"help": "Comma-separated indexer folders whose IDs are compared."})
    history_formats: str = field(
        default="ids", metadata={"help": "Comma-separated history formats: text, ids, text+ids."}
    )
    seeds: str = field(default="0", metadata={"help": "Comma-separated fine-tuning seeds."})
    test_users: int = field(default=0, metadata={"help": "Evaluate on this many test users, sampled; 0: all of them."})
    sample_seed: int = field(default=0, metadata={"help": "Seed of the test-user sample."})
    output: str = field(
        default="benchmarks/rec.json", metadata={"help": "JSON results; the table goes beside it (.md)."}
    )
    lmindexer_backbone: str = field(default="own", metadata=LMINDEXER_BACKBONE_FIELD)


def test_sequences(sequences_path: str | Path) -> list[list[str]]:
    """The item sequences of the users that have a test sample (3 or more items), in file order: row i is the test
    split's row i when every item is in the ID map."""
    return [items for items in sequences_of(sequences_path) if len(items) >= 3]


def most_popular(users: list[list[str]], test_rows: list[int], ks: list[int]) -> dict:
    """Recall/NDCG of ranking every item by its count in the training part of the sequences (all but each user's last
    two items), for the test users at `test_rows` of `users` (`test_sequences`)."""
    counts = training_item_counts(users)
    ranked = [item for item, _ in counts.most_common(max(ks))]
    return ranking_metrics([ranked] * len(test_rows), [{users[row][-1]} for row in test_rows], ks)


def records_table(records: list[dict], title: str, metrics: list[str] | tuple[str, ...] = TABLE_METRICS) -> str:
    """One row per record; a metric a record lacks (a baseline scored at other cut-offs) shows as -."""
    rows = []
    for record in records:
        values = [record["metrics"].get(f"test_{name}") for name in metrics]
        cells = ["-" if value is None else f"{value:.4f}" for value in values]
        steps = record.get("max_steps", "")
        steps = f"{record['epochs']:g} epochs" if record.get("epochs") and (steps in ("", -1, None)) else str(steps)
        budget = [steps, str(record.get("batch_size", "")), f"{record['wall_s']:.0f}"]
        model = Path(record["backbone"]).name if record.get("backbone") else "-"
        rows.append([record["ids"], model, record["history_format"], str(record["seed"]), *cells, *budget])
    columns = ["IDs", "model", "history", "seed", *metrics, "steps", "batch", "wall s"]
    return markdown_table(title, columns, rows, text_columns=3)


def bench_rec(
    bench: BenchRecArguments,
    finetune_args: FinetuneArguments,
    data_args: DownstreamDataArguments,
    training_args,
    command: str | None = None,
) -> dict:
    """Fine-tune and evaluate every (indexer, history format, seed), score most-popular, write JSON and Markdown."""
    folder = Path(data_args.data)
    if not (folder / "sequences.jsonl").is_file() or not (folder / "items.jsonl").is_file():
        raise FileNotFoundError(f"{folder} needs items.jsonl and sequences.jsonl (the shared/data layout).")
    # Refused before any run: metrics past the beam count would be understated.
    check_evaluation_settings(training_args.ks, training_args.eval_num_beams)
    users = test_sequences(folder / "sequences.jsonl")
    # The test users must be the same for every ID method and for most-popular.
    indexers = indexer_folders(bench.indexers, {item for items in users for item in items}, "items of the sequences")
    formats = split_names(bench.history_formats)
    rows = sampled_test_rows(len(users), bench.test_users, bench.sample_seed)
    data_args = copy.copy(data_args)
    data_args.task, data_args.eval_rows = RECOMMENDATION, rows
    output = Path(bench.output)
    result = new_result(
        command,
        folder,
        {
            **asdict(bench),
            "test_users_evaluated": len(rows),
            "finetune": asdict(finetune_args),
            "data": {key: value for key, value in asdict(data_args).items() if key != "eval_rows"},
            "training": comparable_training_settings(training_args),
        },
        most_popular=most_popular(users, rows, training_args.ks),
    )
    earlier = earlier_result(output)
    result["records"] = finished_records(
        earlier,
        result["settings"],
        ("ids", "history_format", "seed"),
        varying=("seeds", "indexers", "history_formats"),
        output=output,
    )
    if result["records"]:  # records added by other tools on the same users (bench_sasrec.py)
        result["baselines"] = earlier.get("baselines", [])
    done = {
        (str(Path(record["indexer"]).resolve()), record["history_format"], record["seed"])
        for record in result["records"]
    }
    work = Path(training_args.output_dir)
    for indexer in indexers:
        for history_format in formats:
            for seed in seed_list(bench.seeds):
                if (str(Path(indexer).resolve()), history_format, seed) in done:
                    continue
                run_data = copy.copy(data_args)
                run_data.history_format = history_format
                run_args = copy.deepcopy(training_args)
                run_args.seed = seed
                run_args.resume_from_checkpoint = AUTO_RESUME  # the bench's own folder
                run_args.output_dir = str(work / f"{Path(indexer).name}-{history_format}-seed{seed}")
                run_finetune = run_finetune_arguments(finetune_args, indexer, bench.lmindexer_backbone)
                started = time.perf_counter()
                metrics = finetune_retriever(run_finetune, run_data, run_args)
                result["records"].append(
                    {
                        "ids": Path(indexer).name,
                        "indexer": indexer,
                        "history_format": history_format,
                        "seed": seed,
                        "backbone": run_finetune.backbone
                        or (
                            f"{run_finetune.causal_model_type} (causal)"
                            if run_finetune.architecture == "causal"
                            else "own"
                        ),
                        "architecture": run_finetune.architecture,
                        "epochs": run_args.num_train_epochs,
                        "metrics": metrics,
                        "max_steps": run_args.max_steps,
                        "batch_size": run_args.per_device_train_batch_size,
                        "wall_s": round(time.perf_counter() - started, 1),
                    }
                )
                write_bench_rec(result, output, folder.name)
    write_bench_rec(result, output, folder.name)
    return result


def write_bench_rec(result: dict, output: Path, dataset: str) -> None:
    popular = {
        "ids": "most-popular",
        "history_format": "-",
        "seed": "-",
        "wall_s": 0.0,
        "metrics": {f"test_{key}": value for key, value in result["most_popular"].items()},
    }
    ks = parse_ks(result["settings"]["training"].get("eval_ks", "5,10"))
    users = result["settings"]["test_users_evaluated"]
    table = records_table(
        [popular, *result.get("baselines", []), *result["records"]],
        f"{dataset}: leave-one-out, full ranking, {users} test users",
        table_metrics(ks),
    )
    write_result(result, output, table)
