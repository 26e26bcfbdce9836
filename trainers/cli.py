"""`lmindexer` command line: it only parses arguments (`HfArgumentParser`, one dataclass set per command), calls
the Python API named in each command's help, and prints the result.

Each command and its Python equivalent (functions in `lmindexer.trainers`; `Finetune`, `DownstreamData`,
`RetrievalTraining` stand for the `...Arguments` dataclasses of `downstream`):

- `index`: `id_methods.indexing.index_corpus(IndexArguments, IndexerTrainingArguments)`
- `assign`: `id_methods.indexing.assign_documents(AssignArguments)`
- `finetune`: `downstream.finetuning.finetune_retriever(Finetune, DownstreamData, RetrievalTraining)`
- `evaluate`: `downstream.finetuning.evaluate_retriever(EvaluateArguments, DownstreamData)`
- `retrieve`: `LMIndexerForGenerativeRetrieval.from_pretrained(path).retrieve(queries, top_k=..., num_beams=...)`
- `push`: `AutoModel.from_pretrained(path).push_to_hub(repo_id, card_data=...)` / `lmindexer.hub_cards.save_for_hub`
- `space`: `lmindexer.hub_cards.launch_space` / `export_space` / `push_space`
- `diagnose`: `indexer.diagnose.diagnose_indexer(DiagnoseArguments)`
- `bench rec`: `bench.rec.bench_rec(BenchRecArguments, Finetune, DownstreamData, RetrievalTraining)`
- `bench retrieval`: `bench.retrieval.bench_retrieval(BenchRetrievalArguments, Finetune, DownstreamData,
  RetrievalTraining)`
- `bench ids`: `bench.ids.bench_ids(BenchIDsArguments, IndexArguments, IndexerTrainingArguments)`
- `demo`: `data.demo.build_untrained_demo_indexer(output_dir, num_items, seed)`
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from .bench.ids import BenchIDsArguments
from .bench.rec import BenchRecArguments
from .bench.retrieval import BenchRetrievalArguments
from .downstream.finetuning import DownstreamDataArguments, EvaluateArguments, FinetuneArguments
from .downstream.retrieval_trainer import RetrievalTrainingArguments
from .id_methods.arguments import AssignArguments, IndexArguments
from .indexer.arguments import IndexerTrainingArguments
from .indexer.diagnose import DiagnoseArguments


# ------------------------------------------------------------------------------------------------- runners
def run_index(args: IndexArguments, training_args: IndexerTrainingArguments) -> dict:
    from .id_methods.indexing import index_corpus

    result = index_corpus(args, training_args)
    if result.is_main_process:
        print(json.dumps({"id_map": result.metrics["id_map"], "final": result.metrics.get("final")}, indent=2))
        for doc_id in result.id_map.doc_ids[:5]:
            print(f"{doc_id}  {result.id_map.semantic_id(doc_id)}  {result.id_map.title(doc_id) or ''}")
        print(f"Indexer, tokenizer, ID map and metrics saved to {result.output_dir}")
    return result.metrics


def run_assign(args: AssignArguments) -> dict:
    from .id_methods.indexing import assign_documents

    report = assign_documents(args)
    for doc_id, semantic_id in report.pop("examples").items():
        print(f"{doc_id}  {tuple(semantic_id)}")
    print(json.dumps(report))
    return report


def run_finetune(
    finetune_args: FinetuneArguments, data_args: DownstreamDataArguments, training_args: RetrievalTrainingArguments
) -> dict:
    from .downstream.finetuning import finetune_retriever

    metrics = finetune_retriever(finetune_args, data_args, training_args)
    print(json.dumps(metrics, indent=2))
    return metrics


def run_evaluate(args: EvaluateArguments, data_args: DownstreamDataArguments) -> dict:
    from .downstream.finetuning import evaluate_retriever

    metrics = evaluate_retriever(args, data_args)
    print(json.dumps(metrics, indent=2))
    return metrics


@dataclass
class RetrieveArguments:
    model: str = field(default="", metadata={"help": "Directory (or Hub repo) of a retriever."})
    top_k: int = field(default=10)
    num_beams: int = field(default=20)
    queries: list[str] = field(default_factory=list, metadata={"help": "Positional: the query texts."})


def run_retrieve(args: RetrieveArguments) -> list:
    from .downstream.finetuning import load_retriever

    if not args.queries:
        raise ValueError('Give at least one query: lmindexer retrieve --model DIR "moisturizer for dry skin"')
    model, tokenizer = load_retriever(args.model)
    results = model.retrieve(args.queries, tokenizer=tokenizer, top_k=args.top_k, num_beams=args.num_beams)
    for query, ranked in zip(args.queries, results):
        print(f"# {query}")
        for rank, entry in enumerate(ranked, start=1):
            readable = model.config.semantic_id_text(entry["semantic_id"])
            print(f"{rank:>3}. {entry['doc_id']}  {readable}  {entry['score']:.3f}  {entry.get('title', '')}")
    return results


@dataclass
class PushArguments:
    model: str = field(default="", metadata={"help": "Folder of a trained indexer or retriever."})
    repo_id: str = field(default="", metadata={"help": "Hub repo to publish to, e.g. org/lmindexer-beauty."})
    revision: str | None = field(default=None, metadata={"help": "Branch to commit to (created when missing)."})
    create_pr: bool = field(default=False, metadata={"help": "Open a pull request instead of committing."})
    private: bool | None = field(default=None, metadata={"help": "Create the repo private (when it does not exist)."})
    token: str | None = field(default=None, metadata={"help": "Hub token; default: the logged-in one."})
    commit_message: str | None = field(default=None)
    dataset: str | None = field(default=None, metadata={"help": "Training dataset named in the card (Hub id or name)."})
    license: str | None = field(default=None, metadata={"help": "License in the card's metadata, e.g. apache-2.0."})
    language: str | None = field(default=None, metadata={"help": "Language in the card's metadata, e.g. en."})
    save_to: str | None = field(
        default=None, metadata={"help": "Write the repo folder here instead of uploading (to inspect or upload later)."}
    )


def run_push(args: PushArguments):
    from transformers import AutoModel, AutoTokenizer

    from ..hub_cards import LMIndexerCardData, push_model_to_hub, save_for_hub

    if not args.model or not Path(args.model).is_dir():
        raise ValueError(f"--model must be the folder of a trained indexer or retriever, got {args.model!r}.")
    if not args.repo_id and not args.save_to:
        raise ValueError("Give --repo_id org/name (or --save_to FOLDER to write the repo without uploading).")
    from .folders.inspection import two_stage_folder_error

    two_stage = two_stage_folder_error(args.model, "push")
    if two_stage is not None:
        raise two_stage
    model = AutoModel.from_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    card_data = LMIndexerCardData.load(args.model) or LMIndexerCardData()  # a retriever's task is filled in later
    card_data.set_metadata(dataset=args.dataset, license=args.license, language=args.language)
    if args.save_to:
        written = save_for_hub(
            model, args.save_to, tokenizer=tokenizer, card_data=card_data, repo_id=args.repo_id or None
        )
        print(f"Wrote {len(written)} files to {args.save_to}: {', '.join(written)}")
        return written
    commit = push_model_to_hub(
        model,
        args.repo_id,
        tokenizer=tokenizer,
        card_data=card_data,
        commit_message=args.commit_message,
        private=args.private,
        token=args.token,
        revision=args.revision,
        create_pr=args.create_pr,
    )
    print(f"Pushed to {commit.commit_url}")
    print(f'Pin this commit when loading with remote code: revision="{commit.oid}"')
    return commit


@dataclass
class SpaceArguments:
    model: str = field(default="", metadata={"help": "Retriever folder or Hub repo the demo runs on."})
    revision: str | None = field(default=None, metadata={"help": "Model revision (commit SHA) to load."})
    host: str = field(default="127.0.0.1")
    port: int | None = field(default=None, metadata={"help": "Default: Gradio's (7860, or the next free port)."})
    export: str | None = field(
        default=None, metadata={"help": "Write a Space folder for --model here instead of running."}
    )
    push_space: str | None = field(
        default=None, metadata={"help": "Publish the Space to this repo (e.g. org/lmindexer-demo)."}
    )
    token: str | None = field(default=None)


def run_space(args: SpaceArguments):
    from ..hub_cards import export_space, launch_space, push_space

    if not args.model:
        raise ValueError("Give --model: a retriever folder or Hub repo id.")
    if args.export:
        written = export_space(args.model, args.export, args.revision)
        print(f"Wrote the Space for {args.model} to {args.export}: {', '.join(written)}")
        return written
    if args.push_space:
        commit = push_space(args.model, args.push_space, args.revision, token=args.token)
        print(f"Space published: {commit.commit_url}")
        return commit
    return launch_space(args.model, args.revision, host=args.host, port=args.port)


@dataclass
class BenchArguments:
    suite: list[str] = field(default_factory=list, metadata={"help": "Positional: the benchmark to run, `ids`."})


def run_bench(
    bench: BenchArguments, ids: BenchIDsArguments, index_args: IndexArguments, training_args: IndexerTrainingArguments
) -> dict:
    from .bench.ids import bench_ids
    from .bench.results import command_line

    if bench.suite != ["ids"]:
        raise ValueError(
            f"Unknown benchmark {' '.join(bench.suite) or '(none)'}: the benchmarks are `lmindexer bench ids` "
            "`lmindexer bench rec` and `lmindexer bench retrieval`."
        )
    return bench_ids(ids, index_args, training_args, command=command_line())


def run_diagnose(args: DiagnoseArguments) -> dict:
    from .indexer.diagnose import diagnose_indexer

    report = diagnose_indexer(args)
    for entry in report["positions"]:
        losses = entry["reconstruction_loss"]
        print(
            f"t={entry['position']}: reconstruction loss true/shuffled/zero IDs {losses['true_ids']:.3f} / "
            f"{losses['shuffled_ids']:.3f} / {losses['zero_ids']:.3f}; diff ratio {entry['diff_ratio']:.3f}; "
            f"shared component {entry['shared_share_scored']:.1%}"
        )
    print("\n".join(report["verdicts"]))
    print(f"Report written to {args.output}")
    return report


def downstream_bench_runner(module: str, function: str) -> Callable:
    """A runner for `bench rec` / `bench retrieval`: call the API with the command line, print the Markdown table."""

    def run(
        bench,
        finetune_args: FinetuneArguments,
        data_args: DownstreamDataArguments,
        training_args: RetrievalTrainingArguments,
    ) -> dict:
        import importlib

        from .bench.results import command_line

        bench_function = getattr(importlib.import_module(f".{module}", __package__), function)
        result = bench_function(bench, finetune_args, data_args, training_args, command=command_line())
        print(Path(bench.output).with_suffix(".md").read_text())
        return result

    return run


@dataclass
class DemoArguments:
    output_dir: str = field(default="runs/demo", metadata={"help": "Where the demo indexer and its ID map go."})
    num_items: int = field(default=480, metadata={"help": "Size of the generated demo catalogue."})
    seed: int = field(default=0)


def run_demo(args: DemoArguments) -> dict:
    from ..modeling_lmindexer import SemanticIDMap
    from ..modeling_lmindexer.semantic_id_map import ID_MAP_FILE
    from .data.demo import build_untrained_demo_indexer

    stats = build_untrained_demo_indexer(args.output_dir, args.num_items, args.seed)
    id_map = SemanticIDMap.load(Path(args.output_dir) / ID_MAP_FILE)
    for doc_id in id_map.doc_ids[:5]:
        print(f"{doc_id}  {id_map.semantic_id(doc_id)}  {id_map.title(doc_id)}")
    print(json.dumps(stats, indent=2))
    print(f"Saved an untrained indexer, its tokenizer and ID map to {args.output_dir}.")
    return stats


# ------------------------------------------------------------------------------------------------ commands
@dataclass(frozen=True)
class Command:
    arguments: tuple[type, ...]
    run: Callable
    help: str
    # The field (of one of its dataclasses) that collects the positional arguments, if the command takes any.
    positional: str | None = None


COMMANDS: dict[str, Command] = {
    "index": Command(
        (IndexArguments, IndexerTrainingArguments),
        run_index,
        "Learn semantic IDs for a corpus (--method lmindexer by default; the demo catalogue by default).",
    ),
    "assign": Command((AssignArguments,), run_assign, "Give semantic IDs to new documents and extend the saved map."),
    "finetune": Command(
        (FinetuneArguments, DownstreamDataArguments, RetrievalTrainingArguments),
        run_finetune,
        "Fine-tune a retriever from a trained indexer (recommendation or retrieval) and evaluate it.",
    ),
    "evaluate": Command(
        (EvaluateArguments, DownstreamDataArguments), run_evaluate, "Recall/NDCG/MAP/MRR of a retriever."
    ),
    "retrieve": Command(
        (RetrieveArguments,),
        run_retrieve,
        'Ranked documents for queries: lmindexer retrieve --model DIR "query".',
        positional="queries",
    ),
    "push": Command(
        (PushArguments,),
        run_push,
        "Publish a trained indexer or retriever (weights, tokenizer, ID map, code, card) to the Hub.",
    ),
    "space": Command(
        (SpaceArguments,), run_space, "Run the Gradio demo on a retriever (or --export / --push_space a Space for it)."
    ),
    "bench": Command(
        (BenchArguments, BenchIDsArguments, IndexArguments, IndexerTrainingArguments),
        run_bench,
        "Compare ID methods on a dataset folder: lmindexer bench ids --data DIR --methods rqkmeans,hkmeans.",
        positional="suite",
    ),
    "diagnose": Command(
        (DiagnoseArguments,),
        run_diagnose,
        "Check a trained indexer's health: trained vs untrained AMI, whether IDs are used, prefix copying.",
    ),
    "bench rec": Command(
        (BenchRecArguments, FinetuneArguments, DownstreamDataArguments, RetrievalTrainingArguments),
        downstream_bench_runner("bench.rec", "bench_rec"),
        "Compare ID methods downstream: lmindexer bench rec --data DIR --indexers A,B.",
    ),
    "bench retrieval": Command(
        (BenchRetrievalArguments, FinetuneArguments, DownstreamDataArguments, RetrievalTrainingArguments),
        downstream_bench_runner("bench.retrieval", "bench_retrieval"),
        "Compare ID methods for retrieval, with BM25 and dense: "
        "lmindexer bench retrieval --data BEIR_DIR --indexers A,B.",
    ),
    "demo": Command(
        (DemoArguments,), run_demo, "Build, save, reload and run a small untrained indexer on the demo corpus."
    ),
}


def print_usage() -> None:
    print("usage: lmindexer {" + ",".join(COMMANDS) + "} [options]\n")
    for name, command in COMMANDS.items():
        print(f"  {name:<10} {command.help}")


def parse(name: str, argv: list[str]) -> tuple:
    from .presets import preset_defaults, preset_name

    command = COMMANDS[name]
    parser = HfArgumentParser(command.arguments, prog=f"lmindexer {name}")
    preset = preset_name(argv)
    if preset is not None:  # defaults only: every flag on the command line still wins
        parser.set_defaults(**preset_defaults(name, preset))
    if command.positional is None:
        return parser.parse_args_into_dataclasses(args=argv)
    *parsed, rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    unknown = [word for word in rest if word.startswith("--")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    holder = next(arguments for arguments in parsed if hasattr(arguments, command.positional))
    setattr(holder, command.positional, rest)
    return tuple(parsed)


DEBUG_FLAG = "--debug"
DEBUG_ENVIRONMENT = "LMINDEXER_DEBUG"
# Errors whose message says it all; any other exception type is named in the one-line error.
EXPECTED_ERRORS = (ValueError, OSError, KeyError, TimeoutError, FloatingPointError)
# Arguments that name a model folder (or Hub repo) to load.
MODEL_FIELDS = ("model", "indexer")


def split_debug_flag(name: str, argv: list[str]) -> tuple[list[str], bool]:
    """Remove the global `--debug` flag from `argv`, wherever it is. A command that has a `debug` option of its own
    (`TrainingArguments.debug`) keeps `--debug VALUE` and `--debug=VALUE`."""
    own_debug = any("debug" in getattr(arguments, "__dataclass_fields__", {}) for arguments in COMMANDS[name].arguments)
    kept, debug = [], False
    for index, word in enumerate(argv):
        following = argv[index + 1] if index + 1 < len(argv) else None
        if word == DEBUG_FLAG and not (own_debug and following is not None and not following.startswith("-")):
            debug = True
        else:
            kept.append(word)
    return kept, debug


def check_model_arguments(parsed: tuple) -> None:
    """Name the argument when a model folder it gives is not there (instead of a failed Hub lookup)."""
    from ..modeling_lmindexer.modeling_lmindexer import check_model_folder
    from .folders.inspection import check_folder_files

    for arguments in parsed:
        for name in MODEL_FIELDS:
            value = getattr(arguments, name, None)
            if isinstance(value, str) and value:
                try:
                    check_model_folder(value)
                except OSError as error:
                    raise OSError(f"--{name}: {error}") from None
                check_folder_files(value)  # a cut-off weights or JSON file is named before anything loads it


def error_line(name: str, error: BaseException) -> str:
    """`lmindexer <command>: error: <message>`, on one line."""
    message = " ".join(str(error.args[0] if isinstance(error, KeyError) and error.args else error).split())
    if not isinstance(error, EXPECTED_ERRORS) or not message:
        message = f"{type(error).__name__}: {message}" if message else type(error).__name__
        message += f" (run with {DEBUG_FLAG} for the traceback)"
    return f"lmindexer {name}: error: {message}"


class CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted, not the stream of the first call: a caller that
    swaps stderr (a notebook, a test harness) and closes the old one must not break later messages."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def show_progress_messages() -> None:
    """The package's INFO messages (which stage starts, what a resume continues from) on stderr, once."""
    logger = logging.getLogger("lmindexer")
    if not logger.handlers:
        handler = CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s lmindexer: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status: 0, 1 when the command failed (one line on stderr, the traceback
    too with `--debug` anywhere in the arguments or `LMINDEXER_DEBUG=1`), 2 for a usage error."""
    import os
    import traceback

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENVIRONMENT, "").lower() not in ("", "0", "false", "no")
    while argv and argv[0] == DEBUG_FLAG:  # before the command
        argv, debug = argv[1:], True
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print_usage()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    name, rest = argv[0], argv[1:]
    if rest and f"{name} {rest[0]}" in COMMANDS:  # a two-word command with arguments of its own (`bench rec`)
        name, rest = f"{name} {rest[0]}", rest[1:]
    words, flagged = split_debug_flag(name, rest)
    debug = debug or flagged
    try:
        parsed = parse(name, words)
    except SystemExit as exit:  # argparse has printed the usage error (status 2) or the help (status 0)
        return exit.code if isinstance(exit.code, int) else 2
    except ValueError as error:  # HfArgumentParser's unknown or malformed arguments
        print(error_line(name, error), file=sys.stderr)
        return 2
    show_progress_messages()
    try:
        check_model_arguments(parsed)
        COMMANDS[name].run(*parsed)
    except Exception as error:  # KeyboardInterrupt and SystemExit go through
        if debug:
            traceback.print_exc()
        print(error_line(name, error), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
