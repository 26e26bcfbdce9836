"""Building and feeding the causal (decoder-only) ID-stream recommender of `lmindexer finetune --architecture causal`.

The model is `LMIndexerForGenerativeRetrieval` on a decoder-only backbone made from a config (GPT-2 by default, any
causal LM config with `--backbone`), with an ID-only vocabulary (`id_vocabulary_tokenizer`): every row of its
embedding and output tables is an ID token or one of four specials.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("lmindexer")


@dataclass
class CausalModelArguments:
    """Size of the causal backbone when no `--backbone` config is given (the CPU preset's: 0.5M parameters on a
    3 x 256 + dedup layout)."""

    causal_model_type: str = field(
        default="gpt2", metadata={"help": "Causal LM family of the recommender: gpt2, llama, ..."}
    )
    causal_layers: int = field(default=2, metadata={"help": "Transformer blocks of the causal recommender."})
    causal_hidden_size: int = field(default=128, metadata={"help": "Hidden size of the causal recommender."})
    causal_heads: int = field(default=4, metadata={"help": "Attention heads of the causal recommender."})
    causal_dropout: float = field(
        default=0.1,
        metadata={
            "help": "Dropout of the causal recommender (residual, embedding and attention, where the family has them)."
        },
    )
    causal_positions: str = field(
        default="start",
        metadata={
            "help": "Position ids of the causal recommender: counted from the stream's start, or down to its end "
            "(the predicted item always at the same positions, as SASRec's left-padded windows).",
            "choices": ["start", "end"],
        },
    )


# Generic config names and the family-specific attributes they set (each family's `attribute_map` covers some).
_DROPOUT_NAMES = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "hidden_dropout", "dropout")


def causal_backbone_config(sizes: CausalModelArguments, max_positions: int, source: str | None = None):
    """The backbone config: `source` (a folder, config file or Hub name; only its config is read) or a fresh one of
    `sizes`. Positions are raised to `max_positions` where the family has a learned position table."""
    from transformers import AutoConfig

    if source:
        config = AutoConfig.from_pretrained(source)
    else:
        config = AutoConfig.for_model(sizes.causal_model_type)
        settings = {
            "hidden_size": sizes.causal_hidden_size,
            "num_hidden_layers": sizes.causal_layers,
            "num_attention_heads": sizes.causal_heads,
            "num_key_value_heads": sizes.causal_heads,
            "intermediate_size": 4 * sizes.causal_hidden_size,
        }
        for name, value in settings.items():
            if hasattr(config, name) or name in getattr(config, "attribute_map", {}):
                setattr(config, name, value)
        for name in _DROPOUT_NAMES:
            if hasattr(config, name):
                setattr(config, name, sizes.causal_dropout)
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"--backbone {source}: {config.model_type} is an encoder-decoder model; --architecture causal "
            "needs a decoder-only config (gpt2, llama, ...)."
        )
    if getattr(config, "max_position_embeddings", None) is not None and config.max_position_embeddings < max_positions:
        config.max_position_embeddings = max_positions
    return config


def build_causal_recommender(
    indexer: str,
    sizes: CausalModelArguments,
    max_history: int,
    backbone: str | None = None,
    seed: int = 0,
    config_fields: dict | None = None,
):
    """A fresh causal recommender on the ID map of the indexer folder `indexer` (any ID method's); `config_fields` set
    other retriever config fields (the prompt length and history limit are its own)."""
    import torch

    from ...modeling_lmindexer import LMIndexerForGenerativeRetrieval, SemanticIDMap
    from ...modeling_lmindexer.semantic_id_map import ID_MAP_FILE
    from .id_streams import id_vocabulary_tokenizer

    folder = Path(indexer)
    if not (folder / ID_MAP_FILE).is_file():
        raise FileNotFoundError(f"--indexer {folder}: no {ID_MAP_FILE}; give a folder written by `lmindexer index`.")
    id_map = SemanticIDMap.load(folder / ID_MAP_FILE, allow_foreign_map=True)
    tokenizer = id_vocabulary_tokenizer(id_map.vocabulary_sizes)
    depth = len(id_map.vocabulary_sizes)
    # <bos>, then the history, then the next item's ID.
    longest = 1 + (max_history + 1) * depth if max_history else 4096
    torch.manual_seed(seed)  # the backbone's initialisation: the same for every ID method of one layout
    model = LMIndexerForGenerativeRetrieval.from_causal_config(
        causal_backbone_config(sizes, longest, backbone),
        tokenizer,
        id_map,
        **{
            **(config_fields or {}),
            "history_max_items": max_history,
            "max_query_length": longest,
            "causal_positions": sizes.causal_positions,
        },
    )
    parameters = sum(parameter.numel() for parameter in model.parameters())
    logger.info(
        "Causal recommender: %s, %d parameters, vocabulary of %d tokens (ID tokens and 4 specials only).",
        model.config.backbone_config.model_type,
        parameters,
        len(tokenizer),
    )
    return model


def item_token_ids(model, items) -> dict[str, list[int]]:
    """Each item's ID as the model's token ids, looked up in one batch."""
    import torch

    ordered = sorted(set(items))
    codes = torch.tensor([model.id_map.semantic_id(item) for item in ordered], dtype=torch.long)
    return dict(zip(ordered, model.codes_to_tokens(codes).tolist()))


def causal_training_split(sequences_path: str | Path, model, max_history: int):
    """The training streams of every user of `sequences_path` whose items the model's ID map holds (items it does not
    hold are dropped from the sequences, as `recommendation_splits` drops them)."""
    import datasets

    from ..data.corpus import load_records
    from .id_streams import causal_training_streams

    id_map = model.id_map
    sequences = [[str(item) for item in user["items"] if str(item) in id_map] for user in load_records(sequences_path)]
    item_tokens = item_token_ids(model, [item for sequence in sequences for item in sequence])
    # A window holds `max_history` items of context before its newest target, as decoding sees at most that many.
    streams = causal_training_streams(
        sequences, item_tokens, model.tokenizer.bos_token_id, window_items=max_history + 1 if max_history else 0
    )
    return datasets.Dataset.from_list(streams)
