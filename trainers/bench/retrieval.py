"""`lmindexer bench retrieval`: generative retrieval on each ID method's IDs for a BEIR corpus, next to BM25 and
dense retrieval, in one table.

Every indexer folder given (an LMIndexer trained on the corpus, a two-stage baseline with `--backbone`, or atomic
IDs: `lmindexer index --method random --id_length 1 --codebook_size 2`, a random bit and then a dedup token that
alone names the document: arbitrary unique IDs, DSI's atomic docids) is fine-tuned under the same budget on the train
queries plus DSI-style indexing samples (document text -> ID), then evaluated by constrained beam search on the test
queries.
BM25 (`bm25s`, English stopwords) and dense retrieval (cosine over the mean-pooled, normalised embeddings of
`--dense_encoder`, all-MiniLM-L6-v2 by default) rank the whole corpus for the same queries. Output: JSON
(settings, command, one record per run with budget and wall time) and a Markdown table, rewritten after every
run; a re-run with the same settings keeps finished runs.

```python
from lmindexer.trainers.bench.retrieval import BenchRetrievalArguments, bench_retrieval
bench = BenchRetrievalArguments(indexers="runs/lmi,runs/rq,runs/atomic")
bench_retrieval(bench, finetune_args, data_args, training_args)
```
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...modeling_lmindexer import SemanticIDMap
from ...modeling_lmindexer.configuration_lmindexer import RETRIEVAL
from ...modeling_lmindexer.semantic_id_map import ID_MAP_FILE
from ..data.corpus import join_fields, load_records
from ..downstream.data import retrieval_splits
from ..downstream.finetuning import DownstreamDataArguments, FinetuneArguments, finetune_retriever
from ..downstream.ranking_metrics import ranking_metrics
from ..downstream.run_guard import AUTO_RESUME, check_splits
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


@dataclass
class BenchRetrievalArguments:
    indexers: str = field(default="", metadata={"help": "Comma-separated indexer folders whose IDs are compared."})
    seeds: str = field(default="0", metadata={"help": "Comma-separated fine-tuning seeds."})
    lexical: bool = field(default=True, metadata={"help": "Also rank with BM25 (needs `pip install bm25s`)."})
    dense_encoder: str | None = field(
        default="default",
        metadata={
            "help": "Sentence encoder for the dense baseline ('default': all-MiniLM-L6-v2; 'none': no dense baseline)."
        },
    )
    dense_max_length: int = field(default=256, metadata={"help": "Tokens per document for the dense baseline."})
    output: str = field(
        default="benchmarks/retrieval.json", metadata={"help": "JSON results; the table goes beside it."}
    )
    lmindexer_backbone: str = field(default="own", metadata=LMINDEXER_BACKBONE_FIELD)


def corpus_texts(folder: Path, fields: tuple[str, ...] = ("title", "text")) -> tuple[list[str], list[str]]:
    documents = load_records(folder / "corpus.jsonl")
    return [str(doc["_id"]) for doc in documents], [join_fields(doc, list(fields)) for doc in documents]


def bm25_rankings(doc_texts: list[str], queries: list[str], k: int) -> list[list[int]]:
    try:
        import bm25s
    except ImportError as error:
        raise ImportError("The BM25 baseline needs bm25s: pip install bm25s (or pass --lexical false).") from error
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(doc_texts, stopwords="en", show_progress=False), show_progress=False)
    hits, _ = retriever.retrieve(bm25s.tokenize(queries, stopwords="en", show_progress=False), k=k, show_progress=False)
    return hits.tolist()


def dense_rankings(doc_texts: list[str], queries: list[str], encoder: str, max_length: int, k: int) -> list[list[int]]:
    from ..data.embeddings import encode_texts

    documents = encode_texts(doc_texts, encoder, max_length=max_length, progress=False)
    questions = encode_texts(queries, encoder, max_length=max_length, progress=False)
    scores = questions @ documents.T  # normalised: cosine
    return np.argsort(-scores, axis=1, kind="stable")[:, :k].tolist()


def bench_retrieval(
    bench: BenchRetrievalArguments,
    finetune_args: FinetuneArguments,
    data_args: DownstreamDataArguments,
    training_args,
    command: str | None = None,
) -> dict:
    """Fine-tune and evaluate every (indexer, seed), rank with BM25 and dense retrieval, write JSON and Markdown."""
    folder = Path(data_args.data)
    if not (folder / "corpus.jsonl").is_file() or not (folder / "qrels" / "test.tsv").is_file():
        raise FileNotFoundError(f"{folder} needs corpus.jsonl, queries.jsonl and qrels/test.tsv (the BEIR layout).")
    doc_ids, doc_texts = corpus_texts(folder)
    # Every method must be able to return every document; with no folder, the bench ranks with BM25 and dense only.
    indexers = indexer_folders(bench.indexers, set(doc_ids), "of the corpus's documents", required=False)
    if data_args.max_eval_queries or data_args.eval_rows:
        raise ValueError(
            "bench retrieval scores every method on all test queries: drop --max_eval_queries / eval_rows."
        )
    ks = training_args.ks
    if max(ks) > training_args.eval_num_beams:
        raise ValueError(
            f"--eval_ks {max(ks)} exceeds --eval_num_beams {training_args.eval_num_beams}: beam search returns "
            f"at most that many documents, so its recall@{max(ks)} would not match BM25's and dense's."
        )
    data_args = copy.copy(data_args)
    data_args.task = RETRIEVAL
    output = Path(bench.output)
    result = new_result(
        command,
        folder,
        {
            **asdict(bench),
            "finetune": asdict(finetune_args),
            "data": asdict(data_args),
            "training": comparable_training_settings(training_args),
        },
    )
    result["records"] = finished_records(
        earlier_result(output),
        result["settings"],
        ("ids", "seed"),
        varying=("seeds", "indexers", "lexical", "dense_encoder", "dense_max_length"),
        output=output,
    )
    splits = retrieval_splits(folder, set(doc_ids), indexing=False)[0]
    check_splits(splits, data_args, needs_validation=False, needs_training=False)  # one line naming the qrels file
    test = splits["test"]
    queries, relevant = list(test["input_text"]), [json.loads(row) for row in test["relevant"]]
    result["baselines"] = []
    if bench.lexical:
        started = time.perf_counter()
        hits = bm25_rankings(doc_texts, queries, max(ks))
        result["baselines"].append(_baseline("BM25 (bm25s)", hits, doc_ids, relevant, ks, started))
    if bench.dense_encoder and bench.dense_encoder != "none":
        from ..data.embeddings import default_encoder

        encoder = default_encoder() if bench.dense_encoder == "default" else bench.dense_encoder
        started = time.perf_counter()
        hits = dense_rankings(doc_texts, queries, encoder, bench.dense_max_length, max(ks))
        name = "all-MiniLM-L6-v2" if bench.dense_encoder == "default" else Path(encoder).name
        result["baselines"].append(_baseline(f"dense ({name})", hits, doc_ids, relevant, ks, started))
    _write(result, output, folder.name, ks)
    done = {(str(Path(record["indexer"]).resolve()), record["seed"]) for record in result["records"]}
    work = Path(training_args.output_dir)
    for indexer in indexers:
        for seed in seed_list(bench.seeds):
            if (str(Path(indexer).resolve()), seed) in done:
                continue
            run_args = copy.deepcopy(training_args)
            run_args.seed, run_args.output_dir = seed, str(work / f"{Path(indexer).name}-seed{seed}")
            run_args.resume_from_checkpoint = AUTO_RESUME  # the bench's own folder
            run_finetune = run_finetune_arguments(finetune_args, indexer, bench.lmindexer_backbone)
            id_map = SemanticIDMap.load(Path(indexer) / ID_MAP_FILE)
            started = time.perf_counter()
            metrics = finetune_retriever(run_finetune, data_args, run_args)
            result["records"].append(
                {
                    "ids": Path(indexer).name,
                    "indexer": indexer,
                    "seed": seed,
                    "backbone": run_finetune.backbone or "own",
                    "metrics": {
                        key.removeprefix("test_"): value for key, value in metrics.items() if key.startswith("test_")
                    },
                    "collision_rate": id_map.statistics()["collision_rate"],
                    "layout": [*id_map.codebook_sizes, id_map.dedup_size],
                    "epochs": run_args.num_train_epochs,
                    "max_steps": run_args.max_steps,
                    "batch_size": run_args.per_device_train_batch_size,
                    "wall_s": round(time.perf_counter() - started, 1),
                }
            )
            _write(result, output, folder.name, ks)
    return result


def _baseline(
    name: str, hits: list[list[int]], doc_ids: list[str], relevant: list[dict], ks: list[int], started
) -> dict:
    rankings = [[doc_ids[index] for index in row] for row in hits]
    return {
        "ids": name,
        "seed": "-",
        "metrics": ranking_metrics(rankings, relevant, ks),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def _write(result: dict, output: Path, dataset: str, ks: list[int]) -> None:
    names = [f"ndcg@{ks[0]}", *[f"recall@{k}" for k in ks]]
    rows = []
    for record in [*result.get("baselines", []), *result["records"]]:
        cells = [f"{record['metrics'][name]:.4f}" for name in names]
        extra = [
            f"{record['collision_rate']:.3f}" if "collision_rate" in record else "-",
            str(record.get("epochs", "-")),
            str(record.get("batch_size", "-")),
            f"{record['wall_s']:.0f}",
        ]
        model = Path(record["backbone"]).name if record.get("backbone") else "-"
        rows.append([record["ids"], model, str(record["seed"]), *cells, *extra])
    columns = ["IDs", "model", "seed", *names, "collisions", "epochs", "batch", "wall s"]
    title = f"{dataset}: generative retrieval on each method's IDs, BM25 and dense"
    write_result(result, output, markdown_table(title, columns, rows, text_columns=2))
