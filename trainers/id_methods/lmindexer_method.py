"""LMIndexer's own method: a generative indexer trained by `IndexerTrainer` (Algorithm 1 of the paper)."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import AutoModel, AutoTokenizer

from ...hub_cards import LMIndexerCardData
from ...modeling_lmindexer import LMIndexerConfig, LMIndexerForSemanticID, SemanticIDMap
from ..arguments import IndexArguments, IndexerTrainingArguments, number_list
from ..corpus import Corpus
from ..corpus_passes import assign_new_documents
from ..demo import TINY_BACKBONE, tiny_t5_config, train_tokenizer
from ..indexer_trainer import IndexerTrainer
from .base import IDMethod, IndexResult, register_id_method

logger = logging.getLogger("lmindexer")

PAPER_CODEBOOK_SIZE = 512
MIN_DOCUMENTS_PER_CODE = 4


def default_codebook_size(num_documents: int) -> int:
    """512 (the paper's size for ~12k items), halved until k-means has at least 4 documents per code."""
    size = PAPER_CODEBOOK_SIZE
    while size > 2 and size * MIN_DOCUMENTS_PER_CODE > num_documents:
        size //= 2
    return size


def build_indexer(args: IndexArguments, corpus: Corpus) -> tuple[LMIndexerForSemanticID, object]:
    """The untrained indexer and tokenizer `args` describe; the tiny default trains its tokenizer on the corpus."""
    codebook_sizes = number_list(args.codebook_size, int)
    if codebook_sizes is None:
        codebook_sizes = default_codebook_size(len(corpus))
        logger.info("codebook size %d for %d documents", codebook_sizes, len(corpus))
    settings = dict(
        id_length=args.id_length,
        codebook_sizes=codebook_sizes,
        dedup_size=args.dedup_size or 1,
        code_geometry=args.code_geometry,
        contrastive_temperature=args.contrastive_temperature,
        code_temperature=args.code_temperature,
        reconstructor_layers=args.reconstructor_layers,
        hint_ratios=number_list(args.hint_ratios, float),
        reconstructor_max_positions=max(args.max_length, 8),
    )
    if args.backbone == TINY_BACKBONE:
        tokenizer = train_tokenizer(corpus.texts)
        config = LMIndexerConfig(backbone_config=tiny_t5_config(len(tokenizer)).to_dict(), **settings)
        return LMIndexerForSemanticID(config), tokenizer
    tokenizer = AutoTokenizer.from_pretrained(args.backbone)
    return LMIndexerForSemanticID.from_backbone(args.backbone, tokenizer=tokenizer, **settings), tokenizer


def indexer_card_data(args: IndexArguments, training_args: IndexerTrainingArguments) -> LMIndexerCardData:
    if args.corpus is None:
        dataset = "lmindexer demo catalogue (generated)"
    else:
        dataset = Path(args.corpus).name if Path(args.corpus).exists() else args.corpus
    return LMIndexerCardData(
        model_id=training_args.hub_model_id, base_model=None if args.backbone == TINY_BACKBONE else args.backbone,
        datasets=[dataset], task="semantic-indexing", label_field=args.label_field,
    )


@register_id_method("lmindexer")
class LMIndexerMethod(IDMethod):
    def index(self, corpus: Corpus, args: IndexArguments, training_args: IndexerTrainingArguments) -> IndexResult:
        model, tokenizer = build_indexer(args, corpus)
        trainer = IndexerTrainer(
            model, tokenizer, corpus, training_args, max_length=args.max_length, auto_dedup=args.dedup_size is None,
            card_data=indexer_card_data(args, training_args),
        )
        id_map = trainer.train()
        if trainer.is_main_process:
            self.stamp(Path(training_args.output_dir))
        return IndexResult(id_map, trainer.final_metrics, Path(training_args.output_dir), trainer.is_main_process)

    def assign_new_documents(self, folder: Path, corpus: Corpus, args) -> tuple[SemanticIDMap, list[int]]:
        model = AutoModel.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if model.id_map is None:
            raise FileNotFoundError(f"{folder} holds no semantic_id_map.safetensors: it is not a trained indexer.")
        return assign_new_documents(model, tokenizer, corpus, model.id_map, args.batch_size, args.max_length)
