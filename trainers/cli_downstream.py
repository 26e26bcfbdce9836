"""`lmindexer finetune`, `lmindexer evaluate` and `lmindexer retrieve`: the downstream half of the CLI."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("lmindexer")


@dataclass
class DownstreamDataArguments:
    task: str = field(default="recommendation", metadata={"help": "recommendation or retrieval."})
    data: str = field(
        default="",
        metadata={"help": "recommendation: folder with items.jsonl and sequences.jsonl; retrieval: a BEIR folder."},
    )
    item_text_fields: str = field(default="title", metadata={"help": "Item fields that make up a history entry."})
    max_history: int = field(default=20, metadata={"help": "Most recent items kept in a history."})
    newest_first: bool = field(default=False, metadata={"help": "Order history text newest first."})
    history_separator: str = field(default=" ; ")
    indexing: bool = field(default=True, metadata={"help": "retrieval: add document text -> ID samples."})
    pseudo_queries: str | None = field(default=None, metadata={"help": "retrieval: jsonl of {doc_id, query}."})
    max_length: int = field(default=512, metadata={"help": "Input tokens (the paper: 1024 for recommendation)."})
    max_eval_queries: int | None = field(default=None, metadata={"help": "Evaluate on the first N queries only."})


@dataclass
class FinetuneArguments:
    indexer: str = field(default="", metadata={"help": "Directory of a trained indexer (lmindexer index output)."})
    lora_target_modules: str | None = field(default=None, metadata={"help": "LoRA on these modules, e.g. q,v."})
    lora_rank: int = field(default=8)


def load_downstream_splits(data_args: DownstreamDataArguments, id_map):
    from .retrieval_data import HistoryFormat, recommendation_splits, retrieval_splits

    folder = Path(data_args.data)
    if data_args.task == "recommendation":
        history = HistoryFormat(
            max_history=data_args.max_history, newest_first=data_args.newest_first,
            separator=data_args.history_separator, text_fields=tuple(data_args.item_text_fields.split(",")),
        )
        return recommendation_splits(folder / "sequences.jsonl", folder / "items.jsonl", history, set(id_map.doc_ids))
    if data_args.task == "retrieval":
        splits, report = retrieval_splits(folder, set(id_map.doc_ids), data_args.indexing, data_args.pseudo_queries)
        logger.info("qrels report: %s", report)
        return splits
    raise ValueError(f"Unknown task {data_args.task!r}: use recommendation or retrieval.")


def _evaluation_split(splits, data_args):
    split = splits["test"]
    if data_args.max_eval_queries:
        split = split.select(range(min(data_args.max_eval_queries, len(split))))
    return split


def run_finetune(finetune_args: FinetuneArguments, data_args: DownstreamDataArguments, training_args) -> dict:
    """Fine-tune a retriever initialised from a trained indexer, evaluate it on the test split, write its card
    (and push it with `--push_to_hub`)."""
    from ..hub_cards import push_model_to_hub
    from ..modeling_lmindexer import LMIndexerForGenerativeRetrieval
    from .retrieval_data import RetrievalCollator
    from .retrieval_trainer import GenerativeRetrievalTrainer, apply_lora

    model = LMIndexerForGenerativeRetrieval.from_indexer(finetune_args.indexer)
    model.config.task = data_args.task
    model.config.history_separator = data_args.history_separator
    tokenizer = model.tokenizer
    splits = load_downstream_splits(data_args, model.id_map)
    trained = model
    if finetune_args.lora_target_modules:
        trained = apply_lora(model, finetune_args.lora_target_modules.split(","), rank=finetune_args.lora_rank)
    trainer = GenerativeRetrievalTrainer(
        model=trained, args=training_args, train_dataset=splits["train"],
        eval_dataset=splits["validation"] if "validation" in splits else None,
        data_collator=RetrievalCollator(tokenizer, model, data_args.max_length), processing_class=tokenizer,
        card_data=retriever_card_data(finetune_args, data_args, training_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    if finetune_args.lora_target_modules:
        model = trained.merge_and_unload()
    metrics = trainer.evaluate(_evaluation_split(splits, data_args), metric_key_prefix="test")
    if trainer.is_world_process_zero():
        output_dir = Path(training_args.output_dir)
        model.card_data = trainer.card_data
        model.save_pretrained(output_dir)  # with the ID map and the card
        tokenizer.save_pretrained(output_dir)
        (output_dir / "retrieval_metrics.json").write_text(json.dumps(metrics, indent=2))
        if training_args.push_to_hub:
            commit = push_model_to_hub(
                model, trainer.hub_model_id or training_args.hub_model_id or output_dir.resolve().name, tokenizer=tokenizer,
                card_data=trainer.card_data, private=training_args.hub_private_repo, token=training_args.hub_token,
                revision=training_args.hub_revision, commit_message="LMIndexer: fine-tuned retriever",
            )
            logger.info("Pushed the retriever (commit %s)", getattr(commit, "oid", commit))
        print(json.dumps(metrics, indent=2))
    return metrics


def retriever_card_data(finetune_args: FinetuneArguments, data_args: DownstreamDataArguments, training_args):
    from ..hub_cards import LMIndexerCardData

    local = Path(finetune_args.indexer).is_dir()
    indexer_card = LMIndexerCardData.load(finetune_args.indexer)
    if not local:
        base_model = finetune_args.indexer  # a Hub repo id
    elif indexer_card and indexer_card.model_id:
        base_model = indexer_card.model_id  # a local copy of a published indexer
    else:
        base_model = Path(finetune_args.indexer).name  # unpublished: named in the card's body only
    return LMIndexerCardData(
        model_id=training_args.hub_model_id,
        # The retriever's base is its indexer.
        base_model=base_model,
        datasets=[Path(data_args.data).name or data_args.data],
        task=data_args.task,
        # The retriever decodes the indexer's IDs, so the indexer's label-per-first-code plot still describes them.
        label_field=indexer_card.label_field if indexer_card else None,
        label_distribution=indexer_card.label_distribution if indexer_card else None,
    )


@dataclass
class EvaluateArguments:
    model: str = field(default="", metadata={"help": "Directory of a fine-tuned retriever."})
    num_beams: int = field(default=20)
    ks: str = field(default="5,10")
    batch_size: int = field(default=32)


def load_retriever(path: str):
    """A saved retriever in eval mode and its tokenizer (which holds the ID tokens)."""
    from transformers import AutoTokenizer

    from ..modeling_lmindexer import LMIndexerForGenerativeRetrieval

    return LMIndexerForGenerativeRetrieval.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def run_evaluate(args: EvaluateArguments, data_args: DownstreamDataArguments) -> dict:
    from .ranking_metrics import ranking_metrics

    model, tokenizer = load_retriever(args.model)
    split = _evaluation_split(load_downstream_splits(data_args, model.id_map), data_args)
    ks = [int(k) for k in args.ks.split(",")]
    results = model.retrieve(split["input_text"], tokenizer=tokenizer, top_k=min(max(ks), args.num_beams),
                             num_beams=args.num_beams, batch_size=args.batch_size)
    rankings = [[entry["doc_id"] for entry in ranked] for ranked in results]
    metrics = ranking_metrics(rankings, [json.loads(r) for r in split["relevant"]], ks)
    print(json.dumps(metrics, indent=2))
    return metrics


@dataclass
class RetrieveArguments:
    model: str = field(default="", metadata={"help": "Directory (or Hub repo) of a retriever."})
    top_k: int = field(default=10)
    num_beams: int = field(default=20)


def run_retrieve(args: RetrieveArguments, queries: list[str]) -> list:
    if not queries:
        raise ValueError('Give at least one query: lmindexer retrieve --model DIR "moisturizer for dry skin"')
    model, tokenizer = load_retriever(args.model)
    results = model.retrieve(queries, tokenizer=tokenizer, top_k=args.top_k, num_beams=args.num_beams)
    for query, ranked in zip(queries, results):
        print(f"# {query}")
        for rank, entry in enumerate(ranked, start=1):
            readable = "".join(model.config.id_token(p, c) for p, c in enumerate(entry["semantic_id"], start=1))
            print(f"{rank:>3}. {entry['doc_id']}  {readable}  {entry['score']:.3f}  {entry.get('title', '')}")
    return results
