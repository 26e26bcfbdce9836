"""`lmindexer bench ids`: every semantic-ID method on one dataset folder, over several seeds, in one table.

Any folder with an `items.jsonl` whose label field holds a category path (most general first, as in the Amazon
data of `shared/data`) works. Per method and seed it records AMI of the first code against one category level,
AMI of the whole learned ID against the joined first levels, NMI(c2; c1), the diff ratio, the collision rate
before dedup, utilisation and perplexity per position, the largest dedup group, the method's fitting time (for
two-stage methods without the embedding pass, which is cached and shared) and the wall time; then per-method
means and standard deviations. Output: JSON (settings, seeds, command, records, summary) and a Markdown table.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from ...modeling_lmindexer.semantic_id_map import prefix_keys
from ..data.corpus import load_records
from ..data.lists import split_names
from ..id_methods import get_id_method
from ..id_methods.arguments import IndexArguments
from ..id_methods.indexing import index_corpus
from ..indexer.arguments import IndexerTrainingArguments
from ..indexer.diagnostics import code_diagnostics
from ..indexer.stage_checkpoint import OPTIMISATION_FLAGS, SCHEDULE_PREFIXES
from .results import earlier_result, finished_records, markdown_table, new_result, seed_list, write_result

COLUMNS = [
    ("ami_c1_coarse", "AMI(c1, coarse)"),
    ("ami_full_fine", "AMI(ID, fine)"),
    ("nmi_c2_c1", "NMI(c2;c1)"),
    ("diff_ratio_last", "diff ratio"),
    ("collision_rate", "collisions"),
    ("largest_dedup_group", "max group"),
    ("fit_s", "fit s"),
    ("wall_s", "wall s"),
]


@dataclass
class BenchIDsArguments:
    data: str = field(default="", metadata={"help": "Folder with items.jsonl (shared/data layout)."})
    methods: str = field(default="rqkmeans,rqvae,hkmeans", metadata={"help": "Comma-separated ID methods to run."})
    seeds: str = field(default="0,1,2", metadata={"help": "Comma-separated seeds; each method runs once per seed."})
    coarse_level: int = field(default=1, metadata={"help": "Category level (0-based) for AMI of the first code."})
    fine_levels: int = field(default=3, metadata={"help": "How many leading levels, joined, for AMI of the whole ID."})
    settings_per_method: str | None = field(
        default=None, metadata={"help": 'JSON: quantiser settings per method, e.g. \'{"rqvae": {"epochs": 20}}\'.'}
    )
    output: str = field(
        default="benchmarks/ids.json", metadata={"help": "JSON results; the table goes beside it (.md)."}
    )


def category_labels(records, id_field: str, label_field: str, coarse_level: int, fine_levels: int) -> dict[str, tuple]:
    """doc_id -> (coarse label, fine label) from a category path."""
    labels = {}
    for record in records:
        path = record.get(label_field) or []
        path = [str(part) for part in (path if isinstance(path, (list, tuple)) else [path])]
        coarse = path[coarse_level] if len(path) > coarse_level else ""
        labels[str(record[id_field])] = (coarse, " > ".join(path[:fine_levels]))
    return labels


def id_quality(id_map, labels: dict[str, tuple]) -> dict:
    """The table's figures for one ID map, against labels keyed by document ID."""
    learned = id_map.semantic_ids[:, : id_map.id_length].numpy()
    coarse = [labels[doc_id][0] for doc_id in id_map.doc_ids]
    fine = [labels[doc_id][1] for doc_id in id_map.doc_ids]
    statistics = id_map.statistics()
    record = {
        "ami_c1_coarse": float(adjusted_mutual_info_score(coarse, learned[:, 0])),
        "ami_full_fine": float(adjusted_mutual_info_score(fine, prefix_keys(learned, id_map.codebook_sizes))),
        "nmi_c2_c1": float(normalized_mutual_info_score(learned[:, 0], learned[:, 1]))
        if learned.shape[1] > 1
        else None,
        "collision_rate": statistics["collision_rate"],
        "largest_dedup_group": statistics["max_documents_per_learned_id"],
        "utilisation": statistics["utilisation"],
        "perplexity": statistics["perplexity"],
    }
    diagnostics = code_diagnostics(learned, id_map.codebook_sizes)
    record["diff_ratio_last"] = diagnostics[f"diff_ratio_t{learned.shape[1]}"]
    return record


def summarise(records: list[dict]) -> dict[str, dict]:
    summary: dict[str, dict] = {}
    for method in dict.fromkeys(record["method"] for record in records):
        rows = [record for record in records if record["method"] == method]
        summary[method] = {"runs": len(rows)}
        for key, _ in COLUMNS:
            values = [row[key] for row in rows if row.get(key) is not None]
            if values:
                summary[method][key] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
        for key in ("utilisation", "perplexity"):  # one value per position
            per_position = np.asarray([row[key] for row in rows], dtype=float)
            summary[method][key] = {
                "mean": per_position.mean(axis=0).tolist(),
                "std": per_position.std(axis=0).tolist(),
            }
    return summary


def summary_table(summary: dict[str, dict], title: str) -> str:
    """The bench's table: one row per method, means (and standard deviations over seeds) of every column."""
    rows = []
    for method, row in summary.items():
        cells = []
        for key, _ in COLUMNS:
            if key not in row:
                cells.append("")
            elif key in ("largest_dedup_group", "fit_s", "wall_s"):
                cells.append(f"{row[key]['mean']:.0f}" + (f" ± {row[key]['std']:.0f}" if row["runs"] > 1 else ""))
            else:
                cells.append(f"{row[key]['mean']:.4f}" + (f" ± {row[key]['std']:.4f}" if row["runs"] > 1 else ""))
        rows.append([method, str(row["runs"]), *cells])
    return markdown_table(title, ["method", "runs", *(name for _, name in COLUMNS)], rows)


def bench_ids(
    bench: BenchIDsArguments,
    index_args: IndexArguments,
    training_args: IndexerTrainingArguments,
    command: str | None = None,
) -> dict:
    """Run every method for every seed on `bench.data` and write the JSON and Markdown results."""
    items = Path(bench.data) / "items.jsonl"
    if not items.is_file():
        raise FileNotFoundError(f"{bench.data} has no items.jsonl: give a dataset folder in the shared/data layout.")
    # The shared/data layout keeps its category path in `categories`; on a copy: the caller's arguments stay as given.
    index_args = dataclasses.replace(index_args, label_field=index_args.label_field or "categories")
    labels = category_labels(
        load_records(items), index_args.id_field, index_args.label_field, bench.coarse_level, bench.fine_levels
    )
    per_method = json.loads(bench.settings_per_method) if bench.settings_per_method else {}
    methods = split_names(bench.methods)
    for method in methods:  # an unknown name fails now, not after the first methods have run
        get_id_method(method)
    work = Path(training_args.output_dir)
    output = Path(bench.output)
    result = new_result(
        command,
        bench.data,
        {
            **asdict(bench),
            "index": asdict(index_args),
            "training": {
                key: value
                for key, value in training_args.to_dict().items()
                if key.startswith(SCHEDULE_PREFIXES) or key in OPTIMISATION_FLAGS
            },
        },
    )
    result["records"] = finished_records(earlier_result(output), result["settings"], ("method", "seed"), output=output)
    done = {(record["method"], record["seed"]) for record in result["records"]}
    layout = f"{index_args.id_length} x {index_args.codebook_size} + dedup"
    title = f"{Path(bench.data).name}: {layout}, text {index_args.text_fields}"
    for method in methods:
        for seed in seed_list(bench.seeds):
            if (method, seed) in done:
                continue
            method_args = copy.copy(index_args)
            method_args.method, method_args.corpus, method_args.label_level = method, str(items), bench.coarse_level
            method_args.method_settings = (
                json.dumps(per_method[method]) if method in per_method else index_args.method_settings
            )
            method_args.embedding_cache_dir = index_args.embedding_cache_dir or str(work / ".embeddings")
            run_args = copy.deepcopy(training_args)
            run_args.seed, run_args.output_dir = seed, str(work / f"{method}-seed{seed}")
            started = time.perf_counter()
            indexed = index_corpus(method_args, run_args)
            wall = round(time.perf_counter() - started, 1)
            stages = indexed.metrics.get("stages", {})
            # Two-stage methods: the quantiser's own time, without embedding (shared by all, cached after the first).
            fit = stages["quantize"]["seconds"] if "quantize" in stages else wall
            record = {
                "method": method,
                "seed": seed,
                **id_quality(indexed.id_map, labels),
                "fit_s": fit,
                "wall_s": wall,
                "embed_s": stages.get("embed", {}).get("seconds"),
                "method_settings": stages.get("quantize"),
            }
            result["records"].append(record)
            result["summary"] = summarise(result["records"])
            write_result(result, output, summary_table(result["summary"], title))  # after every run
            print(
                json.dumps({key: record[key] for key in ("method", "seed", "ami_c1_coarse", "ami_full_fine", "wall_s")})
            )
    result["summary"] = summarise(result["records"])
    table = summary_table(result["summary"], title)
    write_result(result, output, table)
    print(table)
    return result
