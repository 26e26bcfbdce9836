"""LMIndexer's own method: a generative indexer trained by `IndexerTrainer` (Algorithm 1 of the paper)."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import AutoModel, AutoTokenizer

from ...modeling_lmindexer import LMIndexerConfig, LMIndexerForSemanticID, SemanticIDMap
from ..data.corpus import TEXT_SEPARATOR, Corpus
from ..data.demo import TINY_BACKBONE, tiny_t5_config, train_tokenizer
from ..data.lists import number_list
from ..folders.inspection import METHOD_FILE, folder_model_type
from ..indexer.arguments import IndexerTrainingArguments
from ..indexer.corpus_passes import assign_new_documents
from ..indexer.id_layout import check_codebook_sizes, resolve_codebook_sizes
from ..indexer.trainer import IndexerTrainer
from .arguments import IndexArguments
from .base import IDMethod, IndexResult, indexer_card_data, register_id_method

logger = logging.getLogger("lmindexer")

# IndexArguments fields that go into the config unchanged.
RECIPE_FIELDS = (
    "later_position_input",
    "center_hidden",
    "pooled_hidden",
    "contrastive_positive",
    "reconstructor_warmup_input",
    "reconstructor_position_norm",
    "reconstruction_vocabulary",
    "reconstruction_weight",
    "contrastive_weight",
    "commitment_weight",
)


def build_indexer(args: IndexArguments, corpus: Corpus) -> tuple[LMIndexerForSemanticID, object]:
    """The untrained indexer and tokenizer `args` describe; the tiny default trains its tokenizer on the corpus."""
    codebook_sizes = resolve_codebook_sizes(args.codebook_size, len(corpus))
    logger.info("codebook sizes %s for %d documents", codebook_sizes, len(corpus))
    check_codebook_sizes(codebook_sizes, args.id_length, len(corpus))
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
        **{name: getattr(args, name) for name in RECIPE_FIELDS},
        # How documents were read, so that `lmindexer assign` reads new ones the same way.
        indexing_max_length=args.max_length,
        indexing_text_fields=args.text_field_list,
        indexing_text_separator=TEXT_SEPARATOR,
    )
    if args.backbone == TINY_BACKBONE:
        tokenizer = train_tokenizer(corpus.texts)
        config = LMIndexerConfig(backbone_config=tiny_t5_config(len(tokenizer)).to_dict(), **settings)
        return LMIndexerForSemanticID(config), tokenizer
    tokenizer = AutoTokenizer.from_pretrained(args.backbone)
    return LMIndexerForSemanticID.from_backbone(args.backbone, tokenizer=tokenizer, **settings), tokenizer


@register_id_method("lmindexer")
class LMIndexerMethod(IDMethod):
    def index(self, corpus: Corpus, args: IndexArguments, training_args: IndexerTrainingArguments) -> IndexResult:
        model, tokenizer = build_indexer(args, corpus)
        trainer = IndexerTrainer(
            model,
            tokenizer,
            corpus,
            training_args,
            max_length=args.max_length,
            auto_dedup=args.dedup_size is None,
            card_data=indexer_card_data(
                args, training_args, corpus, base_model=None if args.backbone == TINY_BACKBONE else args.backbone
            ),
        )
        # The method stamp is one of the final folder's files, swapped in with the rest by `trainer.save()`.
        trainer.extra_files[METHOD_FILE] = self.record()
        id_map = trainer.train()
        return IndexResult(id_map, trainer.final_metrics, Path(training_args.output_dir), trainer.is_main_process)

    def assign_new_documents(self, folder: Path, corpus: Corpus, args) -> tuple[SemanticIDMap, list[int]]:
        """Zero-shot IDs with the folder's indexer, reading documents at the length it was trained with unless
        `args.max_length` says otherwise."""
        model_type = folder_model_type(folder)
        if model_type is None:
            raise FileNotFoundError(f"--model {folder} holds no config.json: it is not a trained indexer folder.")
        if model_type != LMIndexerConfig.model_type:
            what = "a generative retriever" if model_type == "lmindexer-retrieval" else f"a {model_type!r} model"
            raise ValueError(
                f"--model {folder} is {what}, not a trained indexer: give `lmindexer assign` the folder that "
                "`lmindexer index` wrote (a retriever's IDs are fixed by the indexer it was fine-tuned from)."
            )
        model = AutoModel.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if model.id_map is None:
            raise FileNotFoundError(f"{folder} holds no semantic_id_map.safetensors: it is not a trained indexer.")
        max_length = args.max_length or model.config.indexing_max_length or 512
        return assign_new_documents(model, tokenizer, corpus, model.id_map, args.batch_size, max_length)
