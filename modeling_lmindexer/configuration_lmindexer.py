"""Configuration of the LMIndexer semantic indexer.

This file is copied to the Hub next to the weights, so it imports only the standard library and
transformers.
"""

from __future__ import annotations

from typing import ClassVar

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# The single source of the package version: setup.cfg reads it statically, and every config records
# it so that a checkpoint says which code wrote it.
__version__ = "0.1.0"

CODE_GEOMETRIES = ("cosine", "dot")
# What a retriever's inputs are (`LMIndexerRetrievalConfig.task`): queries, or users' histories of items.
RETRIEVAL = "retrieval"
RECOMMENDATION = "recommendation"
TASKS = (RETRIEVAL, RECOMMENDATION)
# What an indexer does, as its model card names it.
SEMANTIC_INDEXING = "semantic-indexing"
# What stands for each item of a history: its text (the paper's), its semantic ID as ID tokens (TIGER's), or both.
HISTORY_FORMATS = ("text", "ids", "text+ids")
# How an ID token reads in a downstream vocabulary (`LMIndexerConfig.id_token_template`); positions count from 1.
ID_TOKEN_TEMPLATE = "<id_{position}_{code}>"


def id_token_text(position: int, code: int, template: str = ID_TOKEN_TEMPLATE) -> str:
    """The token text of `code` at 1-based `position` (the dedup position is `id_length + 1`): `<id_2_13>`."""
    return template.format(position=position, code=int(code))


def semantic_id_text(semantic_id, template: str = ID_TOKEN_TEMPLATE) -> str:
    """A semantic ID as the string of its ID tokens, e.g. `<id_1_3><id_2_17><id_3_0>`."""
    return "".join(id_token_text(position, code, template) for position, code in enumerate(semantic_id, start=1))


ID_TOKEN_INITS = ("codebook", "random", "model", "mean")

# Keys that must never travel inside a nested config: a backbone config copied from a Hub repo could
# otherwise carry an opt-in to remote code into every checkpoint built on top of it.
_UNSAFE_NESTED_KEYS = ("trust_remote_code", "auto_map")


def _strip_unsafe_keys(config_dict: dict) -> dict:
    """A copy of `config_dict` without the unsafe keys at any nesting level (dicts inside dicts or lists)."""
    cleaned = {k: v for k, v in config_dict.items() if k not in _UNSAFE_NESTED_KEYS}
    for key, value in cleaned.items():
        if isinstance(value, dict):
            cleaned[key] = _strip_unsafe_keys(value)
        elif isinstance(value, list):
            cleaned[key] = [_strip_unsafe_keys(item) if isinstance(item, dict) else item for item in value]
    return cleaned


def strip_unsafe_config(config):
    """Remove the unsafe keys from a backbone config at every nesting level; returns it.

    A dict is copied. A config object is cleaned in place, together with its sub-configs (an `EncoderDecoderConfig`'s
    `encoder` and `decoder`, a multimodal model's `text_config`, ...): a model built on it keeps sharing that object,
    so that later changes such as a resized vocabulary reach the saved config.
    """
    if isinstance(config, dict):
        return _strip_unsafe_keys(config)
    if isinstance(config, PreTrainedConfig):
        for key in _UNSAFE_NESTED_KEYS:
            config.__dict__.pop(key, None)
        for key, value in list(config.__dict__.items()):
            if isinstance(value, PreTrainedConfig):
                strip_unsafe_config(value)
            elif isinstance(value, dict) and key != "kwargs":
                config.__dict__[key] = _strip_unsafe_keys(value)
    return config


# The recipe fields as indexers trained before each was added: what a saved config that lacks one means.
BEFORE_RECIPE = {
    "later_position_input": "raw",
    "center_hidden": False,
    "contrastive_positive": "self",
    "reconstructor_warmup_input": "zeros",
    "reconstructor_position_norm": False,
    "pooled_hidden": False,
    "reconstruction_vocabulary": "full",
}


class LMIndexerConfig(PreTrainedConfig):
    r"""Configuration of [`LMIndexerForSemanticID`].

    Args:
        backbone_config (`PreTrainedConfig` or `dict`):
            Config of the encoder-decoder backbone (T5, BART, or an `encoder-decoder` bert2bert). Any model that
            `AutoModelForSeq2SeqLM` can build works.
        id_length (`int`, defaults to 3):
            Number of learned semantic-ID positions `T`. The stored ID has one more, the dedup position.
        codebook_sizes (`list[int]` or `int`, defaults to 512):
            Codebook size per learned position. An int is repeated for every position.
        dedup_size (`int`, defaults to 64):
            Capacity of the final dedup position: the largest number of documents that may share all learned codes.
        reconstructor_layers (`int`, defaults to 1):
            Depth of the reconstructor. The paper found deeper reconstructors produce worse IDs because they learn
            what the IDs should hold.
        reconstructor_heads (`int`, defaults to 4):
            Attention heads of the reconstructor. Must divide the decoder hidden size.
        reconstructor_max_positions (`int`, defaults to 512):
            Longest document (in tokens) the reconstructor can place query streams for.
        hint_ratios (`list[float]` or `float`, defaults to `[0.5, 0.3, 0.2]` truncated or extended to `id_length`):
            Fraction of a document's tokens left visible in the reconstructor's hint at each position. Later
            positions see less, so their codes have to carry finer detail.
        reconstruction_weight, contrastive_weight, commitment_weight (`float`, default 1.0 each):
            Weights of the three loss terms in the total loss.
        contrastive_temperature (`float`, defaults to 0.1):
            Temperature of the contrastive loss over cosine similarities of `h^t`.
        code_geometry (`str`, defaults to `"cosine"`):
            `"cosine"`: codes are assigned by cosine similarity and codebooks are initialised by spherical k-means.
            `"dot"`: unnormalised dot product for assignment, and k-means that assigns by inner product.
            One geometry serves both, unlike the research code.
        code_temperature (`float`, defaults to 0.1):
            Divides the code logits (the similarity of `h^t` to every codebook vector). With cosine geometry the
            similarities live in [-1, 1], so a temperature below 1 keeps the softmax from being flat.
        later_position_input (`str`, defaults to `"residual"`):
            What codebook t >= 2 scores, k-means clusters and the contrastive loss spreads: `"raw"`, the decoder
            state `h^t`, which is dominated by the vector of `c^{t-1}` fed at that step (so `c^t` tends to copy
            `c^{t-1}`); or `"residual"`, `h^t` minus that code vector.
        center_hidden (`bool`, defaults to `False`):
            Subtract the corpus mean of `h^t` (measured when codebook t is initialised) before scoring and
            clustering, so that a component shared by every document does not dominate cosine similarity.
        contrastive_positive (`str`, defaults to `"dropout"`):
            `"self"`: the contrastive loss's only positive is the document itself (pure uniformity within a prefix
            group); `"dropout"`: a second forward pass with other dropout masks is the positive (SimCSE-style).
        reconstructor_warmup_input (`str`, defaults to `"hidden"`):
            What the reconstructor reads as the ID vector during its warm-up: `"zeros"`, or `"hidden"`, the frozen
            backbone's `h^1`, so that the reconstructor meets the kind of vector it will read later.
        reconstructor_position_norm (`bool`, defaults to `True`):
            Layer-normalise the reconstructor's position embeddings before adding them to the ID query, so that
            every target position starts with a query stream of its own (unnormalised, they are ~50x smaller).
        pooled_hidden (`bool`, defaults to `True`):
            Add the masked mean of the encoder's last hidden states to every decoder state `h^t`. A bert2bert
            decoder's cross-attention is new and random, so its `h^1` starts as one vector shared by every document;
            the pooled path makes the untrained indexer start from the pretrained encoder's sentence representation.
        reconstruction_vocabulary (`str`, defaults to `"batch"`):
            What the reconstructor's softmax ranges over while training: `"full"`, the whole vocabulary; or
            `"batch"`, the distinct tokens of the batch (an in-batch sampled softmax: a ~30k-row output projection
            shrinks to the ~1k tokens present, the costliest part of a step on CPU). Evaluation always uses the
            full vocabulary.
        id_token_template (`str`, defaults to `"<id_{position}_{code}>"`):
            How an ID token reads in a downstream tokenizer; positions count from 1.
        id_map_run_id (`str`, *optional*):
            The `run_id` of the semantic-ID map this model was trained (or built) with. A map of another run is
            refused when loaded for this model unless asked for on purpose (see `SemanticIDMap.check_compatible`).
            Unset in models saved before it was recorded, and in a model not yet given a map.
        indexing_max_length (`int`, *optional*):
            Tokens per document the IDs were learned with; `lmindexer assign` encodes new documents the same way.
        indexing_text_fields (`list[str]`, *optional*):
            The record fields joined into a document's text when the IDs were learned.
        indexing_text_separator (`str`, defaults to `"; "`):
            What joined those fields.
        lmindexer_version (`str`):
            Version of the package that wrote this config.
    """

    model_type: ClassVar[str] = "lmindexer"
    sub_configs_defaults: ClassVar = {
        "backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="t5"),
    }

    backbone_config: PreTrainedConfig | dict | None = None
    id_length: int = 3
    codebook_sizes: list[int] | int = 512
    dedup_size: int = 64
    reconstructor_layers: int = 1
    reconstructor_heads: int = 4
    reconstructor_max_positions: int = 512
    hint_ratios: list[float] | float | None = None
    reconstruction_weight: float = 1.0
    contrastive_weight: float = 1.0
    commitment_weight: float = 1.0
    contrastive_temperature: float = 0.1
    code_geometry: str = "cosine"
    code_temperature: float = 0.1
    # The recipe: each default fixes a defect measured on Amazon Beauty (README, "The recipe"); `lmindexer index` takes
    # its defaults from here. Checkpoints saved before a field existed load with `BEFORE_RECIPE` (see `from_dict`).
    later_position_input: str = "residual"
    center_hidden: bool = False
    contrastive_positive: str = "dropout"
    reconstructor_warmup_input: str = "hidden"
    reconstructor_position_norm: bool = True
    pooled_hidden: bool = True
    reconstruction_vocabulary: str = "batch"
    id_token_template: str = ID_TOKEN_TEMPLATE
    id_map_run_id: str | None = None
    indexing_max_length: int | None = None
    indexing_text_fields: list[str] | None = None
    indexing_text_separator: str = "; "
    lmindexer_version: str = __version__
    is_encoder_decoder: bool = True

    def __post_init__(self, **kwargs):
        self.backbone_config = strip_unsafe_config(self.backbone_config)
        super().__post_init__(**kwargs)
        # Again on the config object built from the dict, in case building it added any of the keys back.
        strip_unsafe_config(self.backbone_config)
        if isinstance(self.codebook_sizes, int):
            self.codebook_sizes = [self.codebook_sizes] * self.id_length
        if self.hint_ratios is None:
            self.hint_ratios = _default_hint_ratios(self.id_length)
        elif isinstance(self.hint_ratios, (int, float)):
            self.hint_ratios = [float(self.hint_ratios)] * self.id_length
        self.codebook_sizes = [int(size) for size in self.codebook_sizes]
        self.hint_ratios = [float(ratio) for ratio in self.hint_ratios]
        self.check_lmindexer_fields()

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """A saved config. A recipe field it lacks was saved before that field existed, when the indexer trained
        without the fix: it loads as `BEFORE_RECIPE` says, so the model computes what it was trained to."""
        before = {name: value for name, value in BEFORE_RECIPE.items() if name not in config_dict}
        return super().from_dict({**before, **config_dict}, **kwargs)

    def to_dict(self) -> dict:
        # Also on save: `backbone_config` may have been replaced, or given the keys, after construction. Only the
        # nested levels are cleaned; the top-level `auto_map` that `save_pretrained` writes for our own classes stays.
        output = super().to_dict()
        if isinstance(output.get("backbone_config"), dict):
            output["backbone_config"] = _strip_unsafe_keys(output["backbone_config"])
        return output

    def validate(self):
        super().validate()
        self.check_lmindexer_fields()

    def check_lmindexer_fields(self) -> None:
        """Raise a `ValueError` that names the first inconsistent field."""
        if not isinstance(self.id_length, int) or self.id_length < 1:
            raise ValueError(f"`id_length` must be a positive integer, got {self.id_length!r}.")
        if len(self.codebook_sizes) != self.id_length:
            raise ValueError(
                f"`codebook_sizes` has {len(self.codebook_sizes)} entries but `id_length` is {self.id_length}: "
                "give one size per learned position, or a single int for all of them."
            )
        for position, size in enumerate(self.codebook_sizes, start=1):
            if size < 2:
                raise ValueError(f"`codebook_sizes[{position - 1}]` must be at least 2, got {size}.")
        if len(self.hint_ratios) != self.id_length:
            raise ValueError(f"`hint_ratios` has {len(self.hint_ratios)} entries but `id_length` is {self.id_length}.")
        for position, ratio in enumerate(self.hint_ratios, start=1):
            if not 0.0 < ratio < 1.0:
                raise ValueError(
                    f"`hint_ratios[{position - 1}]` must lie strictly between 0 and 1, got {ratio}: "
                    "it is the fraction of tokens left visible in the hint."
                )
        if self.dedup_size < 1:
            raise ValueError(f"`dedup_size` must be at least 1, got {self.dedup_size}.")
        if self.reconstructor_layers < 1:
            raise ValueError(f"`reconstructor_layers` must be at least 1, got {self.reconstructor_layers}.")
        if self.reconstructor_max_positions < 1:
            raise ValueError("`reconstructor_max_positions` must be positive.")
        for name in ("contrastive_temperature", "code_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)}.")
        for name in ("reconstruction_weight", "contrastive_weight", "commitment_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must not be negative, got {getattr(self, name)}.")
        if self.code_geometry not in CODE_GEOMETRIES:
            raise ValueError(f"`code_geometry` must be one of {CODE_GEOMETRIES}, got {self.code_geometry!r}.")
        for name, allowed in (
            ("later_position_input", ("raw", "residual")),
            ("contrastive_positive", ("self", "dropout")),
            ("reconstructor_warmup_input", ("zeros", "hidden")),
            ("reconstruction_vocabulary", ("full", "batch")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}.")
        if "{position}" not in self.id_token_template or "{code}" not in self.id_token_template:
            raise ValueError("`id_token_template` must contain both `{position}` and `{code}`.")
        if not getattr(self.backbone_config, "is_encoder_decoder", False) and not self.allows_causal_backbone:
            raise ValueError(
                f"The backbone `{self.backbone_config.model_type}` is not an encoder-decoder model. LMIndexer needs "
                "one (T5, BART, or an `encoder-decoder` bert2bert)."
            )
        hidden_size = self.decoder_hidden_size
        if hidden_size % self.reconstructor_heads:
            raise ValueError(
                f"`reconstructor_heads` ({self.reconstructor_heads}) must divide the decoder hidden size "
                f"({hidden_size})."
            )

    # Only a retriever may sit on a decoder-only backbone; the indexer needs an encoder for its documents.
    allows_causal_backbone: ClassVar[bool] = False

    @property
    def decoder_hidden_size(self) -> int:
        decoder_config = self.backbone_config.get_text_config(decoder=True)
        return int(getattr(decoder_config, "d_model", None) or decoder_config.hidden_size)

    @property
    def id_vocabulary_sizes(self) -> list[int]:
        """Sizes of every stored ID position: the learned codebooks, then the dedup position."""
        return [*self.codebook_sizes, self.dedup_size]

    def id_token(self, position: int, code: int) -> str:
        """The token text of `code` at 1-based `position` (the dedup position is `id_length + 1`)."""
        return id_token_text(position, code, self.id_token_template)

    def semantic_id_text(self, semantic_id) -> str:
        """A semantic ID as the string of this model's ID tokens, e.g. `<id_1_3><id_2_17><id_3_0>`."""
        return semantic_id_text(semantic_id, self.id_token_template)


def _default_hint_ratios(id_length: int) -> list[float]:
    # The paper shows 50% of tokens visible at t=1 and 30% at t=2; later positions keep shrinking the hint
    # geometrically, never below 5%.
    ratios = [0.5, 0.3]
    while len(ratios) < id_length:
        ratios.append(max(0.05, round(ratios[-1] * 0.6, 4)))
    return ratios[:id_length]


class LMIndexerRetrievalConfig(LMIndexerConfig):
    r"""Configuration of [`LMIndexerForGenerativeRetrieval`]: the indexer's settings plus where the ID tokens sit.

    Args:
        id_token_offsets (`list[int]`):
            Token id of `<id_{t}_0>` for every stored position t = 1..T+1 (the last one is the dedup position). The
            tokens of one position are contiguous, so code c at position t is token `id_token_offsets[t-1] + c`.
        max_query_length (`int`, defaults to 512):
            Longest input in tokens; longer queries are truncated with a warning.
        task (`str`, defaults to `"retrieval"`):
            What the inputs are: `"retrieval"` (a query or product search text) or `"recommendation"` (a user's
            history of item texts). Cards and the Spaces demo read it.
        history_separator (`str`, defaults to `" ; "`):
            Between the items of a history, as in fine-tuning (recommendation only).
        history_format (`str`, defaults to `"text"`):
            What stands for each item of a history: `"text"` (its text, as in the paper), `"ids"` (its semantic ID
            as ID tokens, `<id_1_3><id_2_17><id_3_0>`, as in TIGER) or `"text+ids"` (the ID tokens, a space, the text).
        history_max_items (`int`, defaults to 20):
            Only the most recent items of a history are kept (0 keeps all).
        history_newest_first (`bool`, defaults to `False`):
            Order of the kept items in the input: oldest to newest (the default) or newest first.
        history_text_fields (`list[str]`, *optional*):
            The item fields joined into each item's text in fine-tuning. Serving without given item texts uses the
            ID map's titles, which are the same text only when this is the title field alone (or unset).
        truncation_side (`str`, defaults to `"right"`):
            Which end of an input longer than `max_query_length` tokens is cut, in fine-tuning and in serving alike.
            Fine-tuning on histories sets `"left"` when they read oldest to newest, so that the newest items (the
            end of the text) are the ones kept; queries and newest-first histories keep `"right"`.
        id_token_init (`str`, defaults to `"mean"`):
            How the rows of the ID tokens were initialised when the retriever was built, recorded for the reader:
            `"codebook"` (an indexer's codebook vectors), `"random"` (random directions at the mean norm of the
            rows beside them), `"model"` (the backbone's own initialisation, for a model built from a config) or
            `"mean"` (transformers' `mean_resizing`, which makes all rows near-identical; retrievers saved before this
            field existed).
        output_vocabulary (`str`, defaults to `"all"`):
            Which tokens the output softmax spans, in training and decoding alike: `"all"` (the whole vocabulary) or
            `"ids"` (the ID tokens and EOS only; every text logit is masked). A causal ID-stream model has no text rows
            at all, so the two are the same there.
        causal_positions (`str`, defaults to `"start"`):
            Causal retrievers only: position ids count from the stream's first token (`"start"`) or down to its last
            (`"end"`: a token's position is how many tokens follow it, the predicted ID's always the same ones, as in
            SASRec's left-padded windows). Training and decoding place them the same way.
        id_token_scoring (`str`, defaults to `"lm_head"`):
            How the logits of ID tokens are computed. `"lm_head"`: by the backbone's own LM head, like any token.
            `"codebook"`: as the indexer scores codes, the similarity (`code_geometry`, over `code_temperature`) of
            the decoder's last hidden state to the ID token's row of the output embeddings, bypassing any transform
            an LM head applies first (BERT's dense + GELU + LayerNorm, random when the checkpoint lacks it) and the
            row norms. A retriever built from an indexer uses `"codebook"`, so that before any fine-tuning it picks
            the codes the indexer assigns; text tokens keep the LM head.
    """

    model_type: ClassVar[str] = "lmindexer-retrieval"

    id_token_offsets: list[int] | None = None
    max_query_length: int = 512
    task: str = RETRIEVAL
    history_separator: str = " ; "
    # Defaults below describe retrievers saved before these fields were recorded, so those keep rendering and
    # scoring as they were fine-tuned.
    history_format: str = "text"
    history_max_items: int = 20
    history_newest_first: bool = False
    history_text_fields: list[str] | None = None
    truncation_side: str = "right"
    id_token_scoring: str = "lm_head"
    id_token_init: str = "mean"
    output_vocabulary: str = "all"
    causal_positions: str = "start"

    allows_causal_backbone: ClassVar[bool] = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # A decoder-only backbone (GPT-2, Llama, ...) makes a causal retriever: the prompt and the ID share one stream.
        self.is_encoder_decoder = bool(getattr(self.backbone_config, "is_encoder_decoder", True))

    @property
    def is_causal(self) -> bool:
        return not getattr(self.backbone_config, "is_encoder_decoder", True)

    def check_lmindexer_fields(self) -> None:
        super().check_lmindexer_fields()
        if self.causal_positions not in ("start", "end"):
            raise ValueError(f"`causal_positions` must be 'start' or 'end', got {self.causal_positions!r}.")
        if self.output_vocabulary not in ("all", "ids"):
            raise ValueError(f"`output_vocabulary` must be 'all' or 'ids', got {self.output_vocabulary!r}.")
        if self.id_token_init not in ID_TOKEN_INITS:
            raise ValueError(f"`id_token_init` must be one of {ID_TOKEN_INITS}, got {self.id_token_init!r}.")
        for name, allowed in (
            ("task", TASKS),
            ("history_format", HISTORY_FORMATS),
            ("truncation_side", ("left", "right")),
            ("id_token_scoring", ("lm_head", "codebook")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}.")
        if (
            isinstance(self.history_max_items, bool)
            or not isinstance(self.history_max_items, int)
            or self.history_max_items < 0
        ):
            raise ValueError(
                f"`history_max_items` must be a non-negative integer (0 keeps all), got {self.history_max_items!r}."
            )
        if self.id_token_offsets is not None and len(self.id_token_offsets) != self.id_length + 1:
            raise ValueError(
                f"`id_token_offsets` has {len(self.id_token_offsets)} entries; expected {self.id_length + 1} "
                "(every learned position plus the dedup position)."
            )
