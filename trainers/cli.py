"""`lmindexer` command line: one sub-command per job, each parsed by `HfArgumentParser` from dataclasses."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from .cli_downstream import (
    DownstreamDataArguments,
    EvaluateArguments,
    FinetuneArguments,
    RetrieveArguments,
    run_evaluate,
    run_finetune,
    run_retrieve,
)
from .cli_hub import PushArguments, SpaceArguments, run_push, run_space
from .demo import TINY_BACKBONE

logger = logging.getLogger("lmindexer")


@dataclass
class DemoArguments:
    output_dir: str = field(default="runs/demo", metadata={"help": "Where the demo indexer and its ID map go."})
    num_items: int = field(default=480, metadata={"help": "Size of the generated demo catalogue."})
    seed: int = field(default=0)


def run_demo(args: DemoArguments) -> dict:
    """Build a small untrained indexer, save it, reload it through AutoModel, assign IDs to the demo corpus."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from ..modeling_lmindexer import LMIndexerConfig, LMIndexerForSemanticID, SemanticIDMap
    from .assignment import assign_corpus
    from .demo import generate_demo_corpus, tiny_t5_config, train_tokenizer

    torch.manual_seed(args.seed)
    items = generate_demo_corpus(args.num_items, seed=args.seed)
    texts = [f"{item['title']}; {item['brand']}" for item in items]
    tokenizer = train_tokenizer(texts)
    config = LMIndexerConfig(
        backbone_config=tiny_t5_config(len(tokenizer)).to_dict(), id_length=3, codebook_sizes=[8, 8, 8], dedup_size=args.num_items
    )
    output_dir = Path(args.output_dir)
    LMIndexerForSemanticID(config).save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    model = AutoModel.from_pretrained(output_dir)
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    codes = assign_corpus(model, tokenizer, texts, progress=False)
    id_map = SemanticIDMap.from_codes(
        [item["item_id"] for item in items], torch.as_tensor(codes), config.codebook_sizes, config.dedup_size
    )
    id_map.save(output_dir / "semantic_id_map.safetensors")
    for item in items[:5]:
        print(f"{item['item_id']}  {id_map.semantic_id(item['item_id'])}  {item['title']}")
    stats = id_map.statistics()
    print(json.dumps(stats, indent=2))
    print(f"Saved an untrained indexer, its tokenizer and ID map to {output_dir}.")
    return stats


@dataclass
class IndexArguments:
    corpus: str | None = field(
        default=None, metadata={"help": "jsonl/csv/parquet file or Hub dataset; the generated demo catalogue if unset."}
    )
    id_field: str = field(default="item_id", metadata={"help": "Field holding the document ID."})
    text_fields: str = field(default="title,brand", metadata={"help": "Comma-separated fields joined into the text."})
    label_field: str | None = field(default=None, metadata={"help": "Field to report AMI against (never indexed)."})
    label_level: int | None = field(default=None, metadata={"help": "For list labels: the level to use."})
    title_field: str | None = field(default="title", metadata={"help": "Field kept in the ID map for display."})
    backbone: str = field(
        default=TINY_BACKBONE,
        metadata={"help": f"Seq2seq or BERT-style checkpoint, or `{TINY_BACKBONE}` (random, tokenizer trained on the corpus)."},
    )
    id_length: int = field(default=3, metadata={"help": "Learned ID positions T."})
    codebook_size: str | None = field(
        default=None,
        metadata={
            "help": "Codebook size, or one per position: 64,64,64. Unset: 512 (the paper's size for ~12k items), "
            "lowered to the largest power of two that leaves k-means at least 4 documents per code."
        },
    )
    dedup_size: int | None = field(default=None, metadata={"help": "Dedup capacity; unset: sized to the data."})
    max_length: int = field(default=512, metadata={"help": "Tokens per document."})
    code_geometry: str = field(default="cosine", metadata={"help": "cosine or dot."})
    contrastive_temperature: float = field(default=0.1)
    code_temperature: float = field(default=0.1)
    reconstructor_layers: int = field(default=1)
    hint_ratios: str | None = field(default=None, metadata={"help": "Visible fraction per position, e.g. 0.5,0.3,0.2."})


def _number_list(text: str | None, cast):
    if text is None:
        return None
    values = [cast(part) for part in str(text).split(",") if part.strip()]
    return values[0] if len(values) == 1 else values


def load_corpus_for(args: IndexArguments):
    from .data import build_corpus, load_records
    from .demo import generate_demo_corpus

    if args.corpus is None:
        records = generate_demo_corpus()
        label_field = args.label_field or "subcategory"
    else:
        records = load_records(args.corpus)
        label_field = args.label_field
    text_fields = [f.strip() for f in args.text_fields.split(",") if f.strip()]
    return build_corpus(records, args.id_field, text_fields, label_field, args.label_level, args.title_field)


def build_indexer(args: IndexArguments, corpus):
    """The model and tokenizer named by `--backbone`; the tiny default trains its tokenizer on the corpus."""
    from transformers import AutoTokenizer

    from ..modeling_lmindexer import LMIndexerConfig, LMIndexerForSemanticID
    from .demo import tiny_t5_config, train_tokenizer

    codebook_sizes = _number_list(args.codebook_size, int)
    if codebook_sizes is None:
        codebook_sizes = 512
        while codebook_sizes > 2 and codebook_sizes * 4 > len(corpus):
            codebook_sizes //= 2
        logger.info("codebook size %d for %d documents", codebook_sizes, len(corpus))
    settings = dict(
        id_length=args.id_length,
        codebook_sizes=codebook_sizes,
        dedup_size=args.dedup_size or 1,
        code_geometry=args.code_geometry,
        contrastive_temperature=args.contrastive_temperature,
        code_temperature=args.code_temperature,
        reconstructor_layers=args.reconstructor_layers,
        hint_ratios=_number_list(args.hint_ratios, float),
        reconstructor_max_positions=max(args.max_length, 8),
    )
    if args.backbone == TINY_BACKBONE:
        tokenizer = train_tokenizer(corpus.texts)
        config = LMIndexerConfig(backbone_config=tiny_t5_config(len(tokenizer)).to_dict(), **settings)
        return LMIndexerForSemanticID(config), tokenizer
    tokenizer = AutoTokenizer.from_pretrained(args.backbone)
    return LMIndexerForSemanticID.from_backbone(args.backbone, tokenizer=tokenizer, **settings), tokenizer


def indexer_card_data(args: IndexArguments, training_args):
    from ..hub_cards import LMIndexerCardData

    dataset = "lmindexer demo catalogue (generated)" if args.corpus is None else Path(args.corpus).name if Path(args.corpus).exists() else args.corpus
    return LMIndexerCardData(
        model_id=training_args.hub_model_id, base_model=None if args.backbone == TINY_BACKBONE else args.backbone,
        datasets=[dataset], task="semantic-indexing", label_field=args.label_field or ("subcategory" if args.corpus is None else None),
    )


def run_index(args: IndexArguments, training_args) -> dict:
    """Train an indexer on a corpus with the progressive procedure and save model, tokenizer, ID map, metrics."""
    from .pipeline import IndexerTrainingPipeline

    from transformers import set_seed

    corpus = load_corpus_for(args)
    set_seed(training_args.seed)
    model, tokenizer = build_indexer(args, corpus)
    pipeline = IndexerTrainingPipeline(
        model, tokenizer, corpus, training_args, max_length=args.max_length, auto_dedup=args.dedup_size is None,
        card_data=indexer_card_data(args, training_args),
    )
    id_map = pipeline.run()
    if pipeline.rank == 0:
        summary = {"id_map": pipeline.final_metrics["id_map"], "final": pipeline.final_metrics.get("final")}
        print(json.dumps(summary, indent=2))
        for doc_id in corpus.doc_ids[:5]:
            print(f"{doc_id}  {id_map.semantic_id(doc_id)}  {id_map.title(doc_id) or ''}")
        print(f"Indexer, tokenizer, ID map and metrics saved to {training_args.output_dir}")
    return pipeline.final_metrics


@dataclass
class AssignArguments:
    model: str = field(metadata={"help": "Directory of a trained indexer (with its semantic_id_map.safetensors)."})
    corpus: str = field(metadata={"help": "jsonl/csv/parquet file or Hub dataset of new documents."})
    id_field: str = field(default="item_id")
    text_fields: str = field(default="title,brand")
    title_field: str | None = field(default="title")
    batch_size: int = field(default=128)
    max_length: int = field(default=512)


def run_assign(args: AssignArguments) -> dict:
    """Give IDs to unseen documents and extend the saved map; documents already mapped keep their IDs."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from ..modeling_lmindexer import SemanticIDMap
    from .assignment import assign_corpus
    from .data import build_corpus, load_records
    from .pipeline import MAP_FILE

    folder = Path(args.model)
    model = AutoModel.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    id_map = SemanticIDMap.load(folder / MAP_FILE, config=model.config)
    text_fields = [f.strip() for f in args.text_fields.split(",") if f.strip()]
    corpus = build_corpus(load_records(args.corpus), args.id_field, text_fields, title_field=args.title_field)
    fresh = [row for row, doc_id in enumerate(corpus.doc_ids) if doc_id not in id_map]
    codes = assign_corpus(model, tokenizer, corpus.texts, batch_size=args.batch_size, max_length=args.max_length, rows=fresh)
    fresh_corpus = corpus.select(fresh)
    extended = id_map.extend(fresh_corpus.doc_ids, torch.as_tensor(codes[fresh]), fresh_corpus.titles)
    extended.save(folder / MAP_FILE)
    report = {"new_documents": len(fresh), "already_mapped": len(corpus) - len(fresh), "map_size": len(extended)}
    for doc_id in fresh_corpus.doc_ids[:5]:
        print(f"{doc_id}  {extended.semantic_id(doc_id)}")
    print(json.dumps(report))
    return report


COMMANDS = {
    "index": ((IndexArguments, "training"), run_index, "Train an indexer on a corpus (the demo catalogue by default)."),
    "assign": (AssignArguments, run_assign, "Give semantic IDs to new documents and extend the saved map."),
    "finetune": (
        (FinetuneArguments, DownstreamDataArguments, "retrieval_training"),
        run_finetune,
        "Fine-tune a retriever from a trained indexer (recommendation or retrieval) and evaluate it.",
    ),
    "evaluate": ((EvaluateArguments, DownstreamDataArguments), run_evaluate, "Recall/NDCG/MAP/MRR of a retriever."),
    "retrieve": (RetrieveArguments, run_retrieve, 'Ranked documents for queries: lmindexer retrieve --model DIR "query".'),
    "push": (PushArguments, run_push, "Publish a trained indexer or retriever (weights, tokenizer, ID map, code, card) to the Hub."),
    "space": (SpaceArguments, run_space, "Run the Gradio demo on a retriever (or --export / --push_space a Space for it)."),
    "demo": (DemoArguments, run_demo, "Build, save, reload and run a small untrained indexer on the demo corpus."),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: lmindexer {" + ",".join(COMMANDS) + "} [options]\n")
        for name, (_, _, help_text) in COMMANDS.items():
            print(f"  {name:<10} {help_text}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    argument_classes, runner, _ = COMMANDS[argv[0]]
    if not isinstance(argument_classes, tuple):
        argument_classes = (argument_classes,)
    from .arguments import IndexerTrainingArguments
    from .retrieval_trainer import RetrievalTrainingArguments

    named = {"training": IndexerTrainingArguments, "retrieval_training": RetrievalTrainingArguments}
    argument_classes = tuple(named.get(c, c) if isinstance(c, str) else c for c in argument_classes)
    parser = HfArgumentParser(argument_classes, prog=f"lmindexer {argv[0]}")
    if runner is run_retrieve:  # queries are positional
        *parsed, queries = parser.parse_args_into_dataclasses(args=argv[1:], return_remaining_strings=True)
        runner(*parsed, queries)
        return 0
    runner(*parser.parse_args_into_dataclasses(args=argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
