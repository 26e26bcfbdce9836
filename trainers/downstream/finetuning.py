"""The Python API behind `lmindexer finetune` and `lmindexer evaluate`: a generative retriever or recommender
fine-tuned from a trained indexer, its card, and its ranking metrics.

```python
from lmindexer.trainers.downstream.finetuning import (
    DownstreamDataArguments, FinetuneArguments, evaluate_retriever, finetune_retriever)
from lmindexer.trainers.downstream.retrieval_trainer import RetrievalTrainingArguments
metrics = finetune_retriever(FinetuneArguments(indexer="runs/idx"), DownstreamDataArguments(task="recommendation",
                             data="data/beauty"), RetrievalTrainingArguments(output_dir="runs/rec"))
```
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ...modeling_lmindexer.configuration_lmindexer import HISTORY_FORMATS, RECOMMENDATION, TASKS
from ...modeling_lmindexer.history import HistoryFormat
from ..data.lists import split_names
from ..folders.fault_points import crash_point
from .causal_recommender import CausalModelArguments
from .data import evaluation_split, load_downstream_splits, sequences_of
from .dedup_order import DEDUP_ORDERS, popularity_ordered_dedup, training_item_counts
from .evaluation import check_evaluation_settings, parse_ks, retrieval_metrics

logger = logging.getLogger("lmindexer")

METRICS_FILE = "retrieval_metrics.json"


@dataclass
class DownstreamDataArguments:
    task: str = field(default=RECOMMENDATION, metadata={"help": " or ".join(TASKS) + "."})
    data: str = field(
        default="",
        metadata={"help": "recommendation: folder with items.jsonl and sequences.jsonl; retrieval: a BEIR folder."},
    )
    item_text_fields: str = field(default="title", metadata={"help": "Item fields that make up a history entry."})
    max_history: int = field(default=20, metadata={"help": "Most recent items kept in a history (0: all)."})
    newest_first: bool = field(
        default=False,
        metadata={
            "help": "Order history items newest first (the input is then cut at its right end), rather than oldest "
            "to newest (cut at its left end): either way an over-long history loses its oldest items."
        },
    )
    history_separator: str = field(default=" ; ")
    history_format: str = field(
        default="text",
        metadata={
            "help": "How each history item reads: text (its text, the paper's), ids (its semantic ID as ID tokens, "
            "TIGER's: short inputs) or text+ids (both).",
            "choices": list(HISTORY_FORMATS),
        },
    )
    indexing: bool = field(default=True, metadata={"help": "retrieval: add document text -> ID samples."})
    pseudo_queries: str | None = field(default=None, metadata={"help": "retrieval: jsonl of {doc_id, query}."})
    max_length: int = field(default=512, metadata={"help": "Input tokens (the paper: 1024 for recommendation)."})
    max_eval_queries: int | None = field(default=None, metadata={"help": "Evaluate on the first N queries only."})
    validation_users: int = field(
        default=0,
        metadata={
            "help": "Evaluations during training (--eval_strategy) score a seeded sample of this many validation "
            "queries or users (0: all of them)."
        },
    )
    eval_rows: list[int] | None = field(
        default=None,
        metadata={"help": "Evaluate on these rows of the test split only (e.g. a seeded sample of users)."},
    )

    def history(self):
        """The `HistoryFormat` these arguments describe."""

        return HistoryFormat(
            max_history=self.max_history,
            newest_first=self.newest_first,
            separator=self.history_separator,
            text_fields=tuple(split_names(self.item_text_fields)),
            history_format=self.history_format,
        )

    def retriever_config_fields(self) -> dict:
        """The retriever config fields these arguments decide. `finetune_retriever` saves them with the model, so that
        `retrieve`, `render_history`, the pipeline and the Space read inputs as fine-tuning did: the task, the input
        length and the end an over-long input is cut at, and for recommendation how histories are rendered."""
        fields = {"task": self.task, "max_query_length": self.max_length, "truncation_side": "right"}
        if self.task == RECOMMENDATION:
            fields.update(self.history().config_fields())
        return fields


ARCHITECTURES = ("seq2seq", "causal")


@dataclass
class FinetuneArguments(CausalModelArguments):
    indexer: str = field(default="", metadata={"help": "Directory of a trained indexer (lmindexer index output)."})
    architecture: str = field(
        default="seq2seq",
        metadata={
            "help": "seq2seq: an encoder-decoder reads the input, its decoder writes the ID (the paper's). causal "
            "(recommendation): a decoder-only model over each user's stream of ID tokens, trained on every "
            "item of a user in one pass, with an ID-only vocabulary (sizes: --causal_*).",
            "choices": list(ARCHITECTURES),
        },
    )
    backbone: str | None = field(
        default=None,
        metadata={
            "help": "Seq2seq or BERT-style checkpoint to fine-tune on the IDs of a two-stage indexer folder "
            "(rqkmeans, rqvae, hkmeans), which has no language model of its own; with an LMIndexer folder, "
            "fine-tune it on the LMIndexer's IDs instead of the indexer's own backbone (one model for "
            "every ID method). With --architecture causal: a causal LM whose config (not weights) sizes the "
            "recommender, instead of the --causal_* sizes."
        },
    )
    output_vocabulary: str = field(
        default="all",
        metadata={
            "help": "Tokens the output softmax spans in training and decoding: all, or ids (ID tokens and EOS "
            "only; text logits masked). A causal ID-stream model has only ID tokens anyway.",
            "choices": ["all", "ids"],
        },
    )
    preset: str | None = field(
        default=None,
        metadata={
            "help": "Named defaults (any flag given still wins): cpu = the causal ID-stream recommender that "
            "learns on a laptop CPU (`lmindexer.trainers.presets.FINETUNE_CPU`)."
        },
    )
    dedup_order: str = field(
        default="index",
        metadata={
            "help": "recommendation: number the dedup position inside each group of items sharing their learned "
            "codes by item ID (index, as indexed) or by training interactions (popularity: 0 is the group's most "
            "popular item, a rule learned once for every group); the retriever saves the map it was trained on.",
            "choices": list(DEDUP_ORDERS),
        },
    )
    lora_target_modules: str | None = field(default=None, metadata={"help": "LoRA on these modules, e.g. q,v."})
    lora_rank: int = field(default=8)


def build_retriever(finetune_args: FinetuneArguments, config_fields: dict | None = None):
    """The untrained retriever: from an LMIndexer folder (its backbone and codebook-initialised ID tokens), or from
    `backbone` and a folder's ID map (a two-stage method's, or an LMIndexer's when `backbone` is given, so that
    every ID method is compared on one model; ID tokens start at random: there is no codebook in the backbone's
    space). `config_fields` are the retriever config fields it is built with (`retriever_config_fields`)."""
    config_fields = config_fields or {}
    from transformers import AutoTokenizer

    from ...modeling_lmindexer import LMIndexerForGenerativeRetrieval, LMIndexerForSemanticID, SemanticIDMap
    from ...modeling_lmindexer.semantic_id_map import ID_MAP_FILE
    from ..folders.inspection import UNRECORDED_METHOD, folder_method

    folder = Path(finetune_args.indexer)
    method = folder_method(folder) if folder.is_dir() else UNRECORDED_METHOD  # a Hub repo id is an LMIndexer
    if method == UNRECORDED_METHOD:
        if not finetune_args.backbone:
            return LMIndexerForGenerativeRetrieval.from_indexer(finetune_args.indexer, **config_fields)
        if not folder.is_dir():
            raise ValueError(
                f"--backbone with a Hub indexer ({folder}): download it first (`huggingface-cli download`) "
                "and pass the local folder, or drop --backbone to fine-tune the indexer's own backbone."
            )
        # The IDs alone on another model, as two-stage IDs are used: compares ID methods on one recommender.
        logger.info(
            "Fine-tuning %s on the IDs of the LMIndexer %s (its own backbone and codebooks are not used).",
            finetune_args.backbone,
            folder,
        )
    elif not finetune_args.backbone:
        raise ValueError(
            f"{folder} was made by the two-stage method {method!r}, which has no language model: name the "
            "seq2seq (or BERT-style) checkpoint to fine-tune with --backbone."
        )
    id_map = SemanticIDMap.load(folder / ID_MAP_FILE)
    tokenizer = AutoTokenizer.from_pretrained(finetune_args.backbone)
    # `from_backbone` turns an encoder-only checkpoint into bert2bert and sets its start and pad tokens.
    backbone = LMIndexerForSemanticID.from_backbone(
        finetune_args.backbone,
        tokenizer=tokenizer,
        id_length=id_map.id_length,
        codebook_sizes=id_map.codebook_sizes,
        dedup_size=id_map.dedup_size,
    ).backbone
    model = LMIndexerForGenerativeRetrieval.from_backbone_and_map(backbone, tokenizer, id_map, **config_fields)
    # `from_backbone_and_map` leaves the tokenizer to its caller; the one built here goes with its model, as
    # `from_indexer` keeps its own.
    model.tokenizer = tokenizer
    return model


def finetune_retriever(finetune_args: FinetuneArguments, data_args: DownstreamDataArguments, training_args) -> dict:
    """Fine-tune a retriever initialised from a trained indexer, evaluate it on the test split, save it with its
    card and metrics to `output_dir` (and push it with `push_to_hub`). Returns the test metrics."""
    from ...hub_cards import push_model_to_hub
    from .collators import RetrievalCollator
    from .retrieval_trainer import GenerativeRetrievalTrainer, apply_lora
    from .run_guard import FinetuneRunGuard, check_splits, finetune_fingerprint

    # Settings that would fail or mislead only after training are refused before the first step.
    check_evaluation_settings(training_args.ks, training_args.eval_num_beams)
    if finetune_args.dedup_order == "popularity" and data_args.task != RECOMMENDATION:
        raise ValueError(
            "--dedup_order popularity ranks items by their interactions: use it with --task recommendation."
        )
    causal = finetune_args.architecture == "causal"
    if causal:
        model, data_args = build_causal(finetune_args, data_args, training_args.seed)
    else:
        model = build_retriever(finetune_args, retriever_config_fields(finetune_args, data_args))
    if finetune_args.dedup_order == "popularity":
        counts = training_item_counts(sequences_of(Path(data_args.data) / "sequences.jsonl"))
        model.id_map = popularity_ordered_dedup(model.id_map, counts)
    tokenizer = model.tokenizer
    splits = load_downstream_splits(data_args, model.id_map, model.config)
    check_splits(splits, data_args, needs_validation=training_args.eval_strategy != "no")
    evaluation_split(splits, data_args)  # --eval_rows outside the test split are refused now, not after training
    if data_args.validation_users and "validation" in splits:
        from .data import sampled_test_rows

        validation = splits["validation"]
        splits["validation"] = validation.select(sampled_test_rows(len(validation), data_args.validation_users, 0))
    if causal:
        from .causal_recommender import causal_training_split
        from .id_streams import CausalStreamCollator

        train = causal_training_split(Path(data_args.data) / "sequences.jsonl", model, data_args.max_history)
        # Streams run from 9 to 85 tokens: batches of similar length (`group_by_length`) pad 5x less than random ones.
        splits["train"] = train.add_column(training_args.length_column_name, [len(ids) for ids in train["input_ids"]])
        collator = CausalStreamCollator(tokenizer.pad_token_id)
    else:
        collator = RetrievalCollator(tokenizer, model, data_args.max_length)
    guard = FinetuneRunGuard(finetune_fingerprint(finetune_args, data_args, training_args), training_args.output_dir)
    resume_from = guard.resume_checkpoint(
        training_args.resume_from_checkpoint,
        training_args.overwrite_output_dir,
        main_process=training_args.process_index == 0,
    )
    if not causal and training_args.train_sampling_strategy in ("group_by_length", "batch_rebalance"):
        splits["train"] = with_token_lengths(
            splits["train"], tokenizer, training_args.length_column_name, data_args.max_length
        )
    trained = model
    if finetune_args.lora_target_modules:
        trained = apply_lora(model, finetune_args.lora_target_modules.split(","), rank=finetune_args.lora_rank)
    trainer = GenerativeRetrievalTrainer(
        model=trained,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"] if "validation" in splits else None,
        data_collator=collator,
        processing_class=tokenizer,
        card_data=retriever_card_data(finetune_args, data_args, training_args),
    )
    trainer.run_guard = guard
    trainer.train(resume_from_checkpoint=resume_from)
    if finetune_args.lora_target_modules:
        model = trained.merge_and_unload()
    output_dir = Path(training_args.output_dir)
    if trainer.is_world_process_zero():  # before scoring: a failure or a kill there never costs the trained model
        save_retriever(model, tokenizer, trainer.card_data, output_dir, guard)
    crash_point("finetune.evaluation")
    try:
        metrics = trainer.evaluate(evaluation_split(splits, data_args), metric_key_prefix="test")
    except Exception as error:
        raise ValueError(
            f"evaluation after training failed ({type(error).__name__}: {error}); the trained model is "
            f"saved in {output_dir}: score it with `lmindexer evaluate`."
        ) from error
    if trainer.is_world_process_zero():
        from ...hub_cards import write_model_card

        write_model_card(model, output_dir, trainer.card_data)  # the card again, with the test metrics
        curve = [entry for entry in trainer.state.log_history if "eval_train_seconds" in entry]
        (output_dir / METRICS_FILE).write_text(
            json.dumps({**metrics, "preset": finetune_args.preset, "learning_curve": curve}, indent=2)
        )
        if training_args.push_to_hub:
            commit = push_model_to_hub(
                model,
                trainer.hub_model_id or training_args.hub_model_id or output_dir.resolve().name,
                tokenizer=tokenizer,
                card_data=trainer.card_data,
                private=training_args.hub_private_repo,
                token=training_args.hub_token,
                revision=training_args.hub_revision,
                commit_message="LMIndexer: fine-tuned retriever",
            )
            logger.info("Pushed the retriever (commit %s)", getattr(commit, "oid", commit))
    return metrics


def save_retriever(model, tokenizer, card_data, output_dir: Path, guard) -> None:
    """The fine-tuned model with its ID map, card, tokenizer and run fingerprint, in `output_dir`."""
    model.card_data = card_data
    model.save_pretrained(output_dir)  # with the ID map and the card
    tokenizer.save_pretrained(output_dir)
    guard.stamp(output_dir)


def build_causal(finetune_args: FinetuneArguments, data_args: DownstreamDataArguments, seed: int = 0):
    """The causal recommender for `finetune_args`, and `data_args` as it reads histories: the items' ID tokens,
    oldest first, with nothing between them, cut to the model's prompt length."""
    from .causal_recommender import build_causal_recommender

    if data_args.task != RECOMMENDATION:
        raise ValueError("--architecture causal is a recommender over ID streams: use it with --task recommendation.")
    if finetune_args.lora_target_modules:
        raise ValueError(
            "--lora_target_modules: a causal recommender is trained whole (it is small and has no "
            "pretrained weights); drop LoRA."
        )
    data_args = dataclasses.replace(data_args, history_format="ids", history_separator="", newest_first=False)
    model = build_causal_recommender(
        finetune_args.indexer,
        finetune_args,
        data_args.max_history,
        backbone=finetune_args.backbone,
        seed=seed,
        config_fields=retriever_config_fields(finetune_args, data_args),
    )
    return model, dataclasses.replace(data_args, max_length=model.config.max_query_length)


def retriever_config_fields(finetune_args: FinetuneArguments, data_args: DownstreamDataArguments) -> dict:
    """The retriever config fields a fine-tuning run decides, set when the model is built and saved with it, so that
    serving renders, cuts, encodes and scores inputs as these training samples are."""
    return {**data_args.retriever_config_fields(), "output_vocabulary": finetune_args.output_vocabulary}


def with_token_lengths(split, tokenizer, column: str, max_length: int):
    """`split` with each input's token count (capped at `max_length`) in `column`, which the Trainer's length-grouped
    sampler reads: batches of similar length pad little (a TIGER-style ID history is 3-60 tokens)."""
    if column in split.column_names:
        return split
    lengths = [min(len(ids), max_length) for ids in tokenizer(list(split["input_text"]))["input_ids"]]
    return split.add_column(column, lengths)


def retriever_card_data(finetune_args: FinetuneArguments, data_args: DownstreamDataArguments, training_args):
    from ...hub_cards import LMIndexerCardData

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

    from ...modeling_lmindexer import LMIndexerForGenerativeRetrieval
    from ..folders.inspection import folder_model_type, two_stage_folder_error

    two_stage = two_stage_folder_error(path, "evaluate or retrieve with")
    if two_stage is not None:
        raise two_stage
    if Path(path).is_dir() and folder_model_type(path) == "lmindexer":
        raise ValueError(
            f"{path} is an indexer folder (model_type lmindexer), not a fine-tuned retriever: fine-tune "
            f"one first (`lmindexer finetune --indexer {path} --data DIR --output_dir OUT`)."
        )
    return LMIndexerForGenerativeRetrieval.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def evaluate_retriever(args: EvaluateArguments, data_args: DownstreamDataArguments) -> dict:
    """Recall, NDCG, MAP and MRR at each k, and `prefix_right_dedup_wrong@1`, of a saved retriever on the test split
    of `data_args`, as fine-tuning scores it (`evaluation.retrieval_metrics`)."""
    ks = parse_ks(args.ks, "--ks")
    check_evaluation_settings(ks, args.num_beams, "--ks", "--num_beams")
    model, tokenizer = load_retriever(args.model)
    splits = load_downstream_splits(data_args, model.id_map, model.config)
    from .run_guard import check_splits

    check_splits(splits, data_args, needs_validation=False, needs_training=False)  # only the test split is scored
    split = evaluation_split(splits, data_args)
    report_coverage(data_args, len(splits["test"]), len(split))
    return retrieval_metrics(model, tokenizer, split, ks, args.num_beams, args.batch_size)


def report_coverage(data_args: DownstreamDataArguments, test_samples: int, scored: int) -> None:
    """Say how many test users or queries are scored, and warn when the ID map leaves users of the data out."""
    if data_args.task == RECOMMENDATION:
        from ..data.corpus import load_records

        users = len(load_records(Path(data_args.data) / "sequences.jsonl"))
        if test_samples < users:
            logger.warning(
                "Scoring %d of the %d users in %s: the other %d have fewer than 3 items the model's ID map holds.",
                scored,
                users,
                Path(data_args.data) / "sequences.jsonl",
                users - test_samples,
            )
            return
    logger.info("Scoring %d test %s.", scored, "users" if data_args.task == RECOMMENDATION else "queries")
