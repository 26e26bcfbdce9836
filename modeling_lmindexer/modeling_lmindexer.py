"""LMIndexer semantic indexer: a seq2seq semantic encoder, one codebook per ID position, and a reconstructor.

Design decision, codebooks: they are separate parameters (`codebooks.{t-1}.weight`, one `[K_t, D]` table per
learned position), not rows of ID tokens in the backbone's vocabulary. Reasons:
- while IDs are learned, the backbone's vocabulary and tokenizer stay untouched, so the same tokenizer and
  the pretrained language-model head keep working and the indexer can be re-run on new text;
- each position has its own size and geometry (cosine or dot), and k-means writes one whole table at a time;
- code logits are a softmax over one position's codebook only, never mixed with text tokens.
The downstream retrieval model copies these tables into new vocabulary rows, `<id_1_23>` and so on, so that
it is a plain seq2seq LM whose generated ID tokens decode to a readable string.

This file is copied to the Hub next to the weights: it imports only torch, transformers, the standard library
and its sibling files.

Why one long file: as in transformers' `modeling_*.py`, the whole indexer (base class with the ID map and
hooks, codebooks, forward at each position, assignment) reads in one place, and the Hub copies it as one module.
"""

from __future__ import annotations

import enum
import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import ModelOutput, cached_file

from .configuration_lmindexer import LMIndexerConfig
from .losses import commitment_loss, prefix_contrastive_loss
from .reconstructor import Reconstructor, sample_hint_mask
from .semantic_id_map import ID_MAP_FILE, SemanticIDMap, check_code_ranges, warn_model_without_run_id

logger = logging.getLogger(__name__)

HUB_LOADING_KEYS = ("revision", "token", "cache_dir", "local_files_only", "force_download", "subfolder")


def check_model_folder(path) -> None:
    """Raise an `OSError` that says what is wrong when `path` names a local folder that is not there.

    A folder that is missing while `<folder>.old` exists is what a save interrupted between the two renames of its
    folder swap leaves (see `lmindexer.trainers.indexer.trainer.IndexerTrainer.save`). A path that can only be local
    (absolute, starting with `.` or `~`, more than one `/`, or under an existing local folder) is not looked up on
    the Hub, whose repo ids are `name` or `org/name`.
    """
    if not isinstance(path, (str, os.PathLike)):
        return
    text = os.fspath(path)
    folder = Path(text).expanduser()
    if folder.is_dir():
        return
    previous = folder.with_name(folder.name + ".old") if folder.name else None
    if previous is not None and previous.is_dir():
        raise OSError(
            f"{folder} does not exist but {previous} does: a save into {folder} was interrupted while it swapped the "
            f"old folder for the new one. {previous} holds the previous complete model: load it from there, rename it "
            f"back to {folder.name}, or rerun the command that saved it (it restores the folder first)."
        )
    head = text.split("/", 1)[0]
    looks_local = (
        folder.is_absolute()
        or text.startswith((".", "~"))
        or text.count("/") > 1
        or ("/" in text and head != "" and Path(head).is_dir())
        or folder.exists()
    )
    if looks_local:
        what = "is a file, not a model folder" if folder.exists() else "does not exist"
        raise OSError(f"{text} {what}: give the folder of a trained indexer or retriever (or a Hub repo id, org/name).")


def pooled_states(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of `states` `[batch, length, hidden]` over the tokens `attention_mask` keeps: `[batch, hidden]`."""
    weights = attention_mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def code_similarity(hidden: torch.Tensor, vectors: torch.Tensor, geometry: str, temperature: float) -> torch.Tensor:
    """`[..., K]` similarity of `hidden` to each row of `vectors`, cosine or dot product, over `temperature`: how
    the indexer scores codes, and how a retriever built from it scores ID tokens."""
    if geometry == "cosine":
        return F.normalize(hidden, dim=-1) @ F.normalize(vectors, dim=-1).t() / temperature
    return hidden @ vectors.t() / temperature


class IndexerMode(str, enum.Enum):
    """What one forward pass trains (Algorithm 1 of the paper)."""

    RECONSTRUCTOR_WARMUP = "reconstructor_warmup"  # reconstructor learns from hints alone
    CONTINUOUS = "continuous"  # encoder warm-up: the continuous h^t stands in for the code vector
    STRAIGHT_THROUGH = "straight_through"  # hard code vector forward, softmax-weighted vector backward


@dataclass
class SemanticIndexerOutput(ModelOutput):
    """Output of [`LMIndexerForSemanticID.forward`] at one ID position.

    Args:
        loss: weighted total of the loss terms that apply in the mode.
        reconstruction_loss: cross-entropy on the hidden tokens of the hint.
        contrastive_loss: push-apart loss over documents sharing the prefix `c^{<t}` (None in reconstructor mode).
        commitment_loss: cross-entropy of still predicting the earlier codes (None at t = 1).
        hidden_state: `h^t`, `[batch, hidden]`.
        code_logits: similarity of `h^t` to every vector of codebook t over the code temperature, `[batch, K_t]`.
        codes: argmax codes at position t, `[batch]`.
        reconstruction_predictions, reconstruction_targets: predicted and true ids of every hidden hint token,
            flattened; they feed the token-level F1 diagnostic.
    """

    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    hidden_state: torch.FloatTensor | None = None
    code_logits: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    reconstruction_predictions: torch.LongTensor | None = None
    reconstruction_targets: torch.LongTensor | None = None


class LMIndexerPreTrainedModel(PreTrainedModel):
    """Base of the indexer and the retriever: the ID map, the tokenizer and card data that travel with a model,
    and the hooks through which the lmindexer package writes model cards and publishes.

    Attributes (declared here, set by whoever builds or trains the model):
        id_map: the [`SemanticIDMap`] saved and published with the weights.
        tokenizer: the tokenizer saved next to the weights (the retriever's holds the ID tokens).
        card_data: what the model card says (an `lmindexer.hub_cards.LMIndexerCardData`), filled by training.

    Hooks (class attributes naming a function as `"module:function"`, imported when first called): with the
    lmindexer package installed, `save_pretrained` writes the model card through `card_writer(model, folder)` and
    `push_to_hub` publishes through `hub_publisher(model, repo_id, **kwargs)`, whichever way the class was loaded
    (the package or a Hub repo's remote code). Without the package, or with a hook set to None, transformers'
    own behaviour applies. Subclass and point a hook elsewhere to customise it.
    """

    config_class = LMIndexerConfig
    config: LMIndexerConfig
    base_model_prefix = "lmindexer"
    supports_gradient_checkpointing = False
    card_writer: ClassVar[str | None] = "lmindexer.hub_cards.model_card:write_model_card"
    hub_publisher: ClassVar[str | None] = "lmindexer.hub_cards.publishing:push_model_to_hub"

    def __init__(self, config: LMIndexerConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self._id_map: SemanticIDMap | None = None
        self.tokenizer = None
        self.card_data = None

    @staticmethod
    def resolve_hook(hook: str | None) -> Callable | None:
        """The function a hook names, or None when the hook is unset or its package is not installed."""
        if not hook:
            return None
        module_name, function_name = hook.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            return None
        return getattr(module, function_name)

    # ---------------------------------------------------------------------------------------- the ID map
    @property
    def id_map(self) -> SemanticIDMap | None:
        """The semantic-ID map saved and published with the weights (None until one is set)."""
        return self._id_map

    @id_map.setter
    def id_map(self, id_map: SemanticIDMap) -> None:
        id_map.check_compatible(self.config)
        self._id_map = id_map

    def attach_id_map(self, id_map: SemanticIDMap, force: bool = False) -> None:
        """Set `id_map` on this model (as `model.id_map = id_map` does).

        A map made by another run than the one this model was trained with is refused, unless `force=True`: a
        deliberate reuse (e.g. a baseline's map on a new backbone), after which the model is bound to that map,
        so the two are saved, and load, as a pair.
        """
        id_map.check_compatible(self.config, allow_foreign_map=force)
        self.id_map = id_map

    # -------------------------------------------------------------------------------------- persistence
    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' save, plus the ID map, the attached tokenizer (`model.tokenizer`) and, with the lmindexer
        package, the model card, when there are ones; `model_card=False` skips the card.

        The config records the `run_id` of the map saved with it (`id_map_run_id`), so that a map of another run
        put in the folder later is refused when loading. Files are written in place one after the other: to
        replace a model folder as a whole, write into a new folder and swap it in (as `lmindexer index` does).
        """
        write_card = kwargs.pop("model_card", True)
        if self._id_map is not None and self._id_map.run_id is not None:
            if self.config.id_map_run_id is None:
                self.config.id_map_run_id = self._id_map.run_id
            elif self.config.id_map_run_id != self._id_map.run_id:
                raise ValueError(
                    f"The model's config names the ID map of run {self.config.id_map_run_id} but holds the map of run "
                    f"{self._id_map.run_id}; attach the map with `model.attach_id_map(id_map, force=True)` to save "
                    "them as a pair."
                )
        super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", True):
            return
        folder = Path(save_directory)
        if self._id_map is not None:
            self._id_map.save(folder / ID_MAP_FILE)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(folder)
        writer = self.resolve_hook(type(self).card_writer)
        if write_card and writer is not None and self._id_map is not None:
            writer(self, folder)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' `from_pretrained`, after checking that a local folder it names is there (and saying so
        when only `<folder>.old` is, the trace of an interrupted save)."""
        check_model_folder(pretrained_model_name_or_path)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def _load_saved_id_map(self, pretrained_model_name_or_path, loading_kwargs: dict) -> bool:
        """Read `semantic_id_map.safetensors` from a folder or Hub repo into `self.id_map`; False when there is none."""
        hub_kwargs = {key: loading_kwargs[key] for key in HUB_LOADING_KEYS if key in loading_kwargs}
        map_file = cached_file(
            pretrained_model_name_or_path, ID_MAP_FILE, _raise_exceptions_for_missing_entries=False, **hub_kwargs
        )
        if map_file is None:
            return False
        id_map = SemanticIDMap.load(map_file)
        if (
            type(self.config).model_type == LMIndexerConfig.model_type
            and id_map.dedup_size > self.config.dedup_size
            and id_map.codebook_sizes == self.config.codebook_sizes
        ):
            # An indexer's dedup position is no parameter: `lmindexer assign --rededuplicate` grows it in the map
            # first and in the config second, so a map ahead of its config is that update, half written.
            logger.warning(
                "The ID map's dedup position (%d) is larger than the config's (%d): using the map's.",
                id_map.dedup_size,
                self.config.dedup_size,
            )
            self.config.dedup_size = id_map.dedup_size
        if self.config.id_map_run_id is None and id_map.run_id is not None:
            warn_model_without_run_id()
        id_map.check_compatible(self.config, allow_foreign_map=bool(loading_kwargs.get("allow_foreign_map")))
        self.id_map = id_map
        return True

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload to the Hub: with the lmindexer package installed, weights, code, tokenizer, ID map and a model
        card in one commit (see `lmindexer.hub_cards.push_model_to_hub` for the arguments); otherwise
        transformers' `push_to_hub`."""
        publisher = self.resolve_hook(type(self).hub_publisher)
        if publisher is None:
            return super().push_to_hub(repo_id, **kwargs)
        return publisher(self, repo_id, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module):
        # The `init` functions skip tensors already flagged as loaded, so a k-means codebook read from a
        # checkpoint is never overwritten here.
        if isinstance(module, CodebookStack):
            for table in module.tables:
                init.normal_(table.weight, mean=0.0, std=self.config.decoder_hidden_size**-0.5)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding) and not isinstance(module, CodebookTable):
            init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.MultiheadAttention):
            init.xavier_uniform_(module.in_proj_weight)
            init.zeros_(module.in_proj_bias)
            init.zeros_(module.out_proj.bias)


class CodebookTable(nn.Embedding):
    """One position's codebook; a subclass only so that initialisation can tell it from token tables."""


class CodebookStack(nn.Module):
    def __init__(self, sizes: list[int], hidden_size: int):
        super().__init__()
        self.tables = nn.ModuleList(CodebookTable(size, hidden_size) for size in sizes)

    def __getitem__(self, position: int) -> CodebookTable:
        """The codebook of 1-based `position`."""
        return self.tables[position - 1]


class LMIndexerForSemanticID(LMIndexerPreTrainedModel):
    """The semantic indexer of LMIndexer: document in, semantic ID out, learned self-supervised.

    Build it from a config (random backbone), from a pretrained backbone with [`from_backbone`], or load a
    trained indexer with `from_pretrained`, which also accepts a bare backbone path.
    """

    def __init__(self, config: LMIndexerConfig, backbone: PreTrainedModel | None = None):
        super().__init__(config)
        self.backbone = backbone if backbone is not None else AutoModelForSeq2SeqLM.from_config(config.backbone_config)
        hidden_size = config.decoder_hidden_size
        self.codebooks = CodebookStack(config.codebook_sizes, hidden_size)
        self.reconstructor = Reconstructor(
            hidden_size=hidden_size,
            num_heads=config.reconstructor_heads,
            num_layers=config.reconstructor_layers,
            max_positions=config.reconstructor_max_positions,
            dropout=float(getattr(config.backbone_config, "dropout_rate", 0.1) or 0.0),
            normalize_positions=config.reconstructor_position_norm,
        )
        # Corpus mean of h^t per position (zero until `center_hidden` training sets it at codebook initialisation).
        self.register_buffer("hidden_centers", torch.zeros(config.id_length, hidden_size))
        token_dim = self.get_input_embeddings().weight.shape[1]
        if token_dim != hidden_size:
            raise ValueError(
                f"The backbone's token embeddings have {token_dim} dimensions but its decoder states have "
                f"{hidden_size}; LMIndexer feeds codes to the decoder as embeddings and needs them equal."
            )
        self.post_init()

    # ----------------------------------------------------------------------------------------- construction
    @classmethod
    def from_backbone(
        cls, backbone_name_or_path: str | os.PathLike, tokenizer=None, **config_kwargs
    ) -> "LMIndexerForSemanticID":
        """A fresh indexer on a pretrained backbone, e.g. `from_backbone("google-t5/t5-base", id_length=3)`.

        A seq2seq checkpoint (T5, BART, ...) is used as is. An encoder-only checkpoint (BERT-style) becomes a
        bert2bert `EncoderDecoderModel` whose decoder starts from the same weights; its tokenizer (loaded from
        the same path unless given) supplies the start and pad tokens.
        """
        if "codebook_size" in config_kwargs:  # the singular reads naturally when every position has one size
            config_kwargs["codebook_sizes"] = config_kwargs.pop("codebook_size")
        backbone_config = AutoConfig.from_pretrained(backbone_name_or_path)
        if getattr(backbone_config, "is_encoder_decoder", False):
            backbone = AutoModelForSeq2SeqLM.from_pretrained(backbone_name_or_path, use_safetensors=True)
        else:
            from transformers import EncoderDecoderModel

            tokenizer = tokenizer or AutoTokenizer.from_pretrained(backbone_name_or_path)
            backbone = EncoderDecoderModel.from_encoder_decoder_pretrained(
                backbone_name_or_path, backbone_name_or_path, use_safetensors=True
            )
            start_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
            backbone.config.decoder_start_token_id = start_id
            backbone.config.pad_token_id = tokenizer.pad_token_id
            backbone.config.eos_token_id = tokenizer.sep_token_id or tokenizer.eos_token_id
        config = LMIndexerConfig(backbone_config=backbone.config.to_dict(), **config_kwargs)
        return cls(config, backbone=backbone)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Load a trained indexer, or start a fresh one when the path holds only a backbone.

        `allow_foreign_map=True` loads the folder's ID map even when it was made by another run than the one
        the weights were trained with (see `SemanticIDMap.check_compatible`)."""
        check_model_folder(pretrained_model_name_or_path)
        allow_foreign_map = kwargs.pop("allow_foreign_map", False)
        if kwargs.get("config") is None and not model_args:
            config = AutoConfig.from_pretrained(
                pretrained_model_name_or_path,
                **{k: kwargs[k] for k in HUB_LOADING_KEYS if k in kwargs},
            )
            if config.model_type != LMIndexerConfig.model_type:
                config_keys = set(LMIndexerConfig.__dataclass_fields__) | {"codebook_size"}
                return cls.from_backbone(
                    pretrained_model_name_or_path, **{k: v for k, v in kwargs.items() if k in config_keys}
                )
        kwargs.setdefault("use_safetensors", True)
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model._load_saved_id_map(pretrained_model_name_or_path, {**kwargs, "allow_foreign_map": allow_foreign_map})
        return model

    # -------------------------------------------------------------------------------------------- plumbing
    def get_input_embeddings(self) -> nn.Embedding:
        return self.backbone.get_input_embeddings()

    def _decoder_start_embedding(self, batch_size: int) -> torch.Tensor:
        backbone_config = self.config.backbone_config
        start_id = getattr(backbone_config, "decoder_start_token_id", None)
        if start_id is None:
            start_id = getattr(backbone_config.get_text_config(decoder=True), "decoder_start_token_id", None)
        if start_id is None:
            raise ValueError(
                "The backbone config has no `decoder_start_token_id`; set it (e.g. to the [CLS] id for bert2bert)."
            )
        embeddings = self.backbone.get_decoder().get_input_embeddings()
        start = embeddings.weight[start_id]
        return start.expand(batch_size, 1, -1)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> BaseModelOutput:
        """Run the backbone's encoder once; the result can be reused for every ID position."""
        return self.backbone.get_encoder()(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)

    def code_vectors(self, position: int, codes: torch.Tensor) -> torch.Tensor:
        """Codebook vectors of `codes` at 1-based `position`."""
        return self.codebooks[position](codes)

    def position_representation(
        self, states: torch.Tensor, position: int, prefix_codes: torch.Tensor | None
    ) -> torch.Tensor:
        """What codebook `position` scores, k-means clusters and the contrastive loss spreads: the decoder state
        `h^t` (`states[:, t - 1]`), minus the previous code's vector with `later_position_input="residual"`, minus
        the position's corpus centre (zero unless `center_hidden` set it)."""
        hidden = states[:, position - 1]
        if position >= 2 and self.config.later_position_input == "residual":
            hidden = hidden - self.code_vectors(position - 1, prefix_codes[:, position - 2])
        return hidden - self.hidden_centers[position - 1].to(hidden.dtype)

    def code_logits(self, hidden: torch.Tensor, position: int) -> torch.Tensor:
        """Similarity of `hidden` to every vector of codebook `position`, in the config's geometry."""
        return code_similarity(
            hidden, self.codebooks[position].weight, self.config.code_geometry, self.config.code_temperature
        )

    def decoder_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prefix_codes: torch.Tensor | None,
        encoder_outputs: BaseModelOutput | None = None,
    ) -> torch.Tensor:
        """Decoder states `[batch, t, hidden]` for steps 1..t, given the earlier codes `c^{<t}` as embeddings.

        The decoder is causal, so the state at step s depends only on `c^{<s}`: one pass yields `h^1..h^t`.
        """
        batch_size = input_ids.shape[0]
        pieces = [self._decoder_start_embedding(batch_size)]
        if prefix_codes is not None:
            for index in range(prefix_codes.shape[1]):
                pieces.append(self.code_vectors(index + 1, prefix_codes[:, index]).unsqueeze(1))
        if encoder_outputs is None:
            encoder_outputs = self.encode(input_ids, attention_mask)
        outputs = self.backbone(
            attention_mask=attention_mask,
            encoder_outputs=encoder_outputs,
            decoder_inputs_embeds=torch.cat(pieces, dim=1),
            output_hidden_states=True,
            use_cache=False,
            return_dict=True,
        )
        states = outputs.decoder_hidden_states[-1]
        if self.config.pooled_hidden:
            states = states + pooled_states(encoder_outputs.last_hidden_state, attention_mask)[:, None, :].to(
                states.dtype
            )
        return states

    # ------------------------------------------------------------------------------------------ validation
    def _check_inputs(self, input_ids, attention_mask, prefix_codes, position) -> torch.Tensor:
        if input_ids is None or input_ids.dim() != 2 or input_ids.shape[0] == 0:
            raise ValueError("`input_ids` must be a non-empty `[batch, length]` tensor.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"`attention_mask` has shape {tuple(attention_mask.shape)} but `input_ids` has "
                f"{tuple(input_ids.shape)}."
            )
        empty_rows = (attention_mask.sum(dim=1) == 0).nonzero().flatten().tolist()
        if empty_rows:
            raise ValueError(f"Documents at batch rows {empty_rows[:10]} are empty: they have no tokens to index.")
        if not 1 <= position <= self.config.id_length:
            raise ValueError(f"`position` must be in 1..{self.config.id_length}, got {position}.")
        given = 0 if prefix_codes is None else prefix_codes.shape[1]
        if given != position - 1:
            raise ValueError(f"Position {position} needs the {position - 1} earlier codes, got {given}.")
        if prefix_codes is not None:
            self.check_codes(prefix_codes)
        return attention_mask

    def check_codes(self, codes: torch.Tensor) -> None:
        """Raise if any code lies outside its position's codebook."""
        if codes.shape[1] > self.config.id_length:
            raise ValueError(f"Got {codes.shape[1]} code positions; this indexer learns {self.config.id_length}.")
        check_code_ranges(codes, self.config.codebook_sizes)

    # --------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        prefix_codes: torch.LongTensor | None = None,
        position: int | None = None,
        mode: IndexerMode | str = IndexerMode.STRAIGHT_THROUGH,
        hint_generator: torch.Generator | None = None,
        hint_visible: torch.BoolTensor | None = None,
        encoder_hidden_states: torch.FloatTensor | None = None,
    ) -> SemanticIndexerOutput:
        """Train or probe ID position `position` (1-based; defaults to one past the given earlier codes).

        Args:
            input_ids, attention_mask: the tokenised documents.
            prefix_codes: `[batch, position - 1]` frozen earlier codes `c^{<t}`, or None at t = 1.
            mode: an [`IndexerMode`] or its string value.
            hint_generator: optional generator that makes hint sampling reproducible.
            hint_visible: optional `[batch, length]` boolean mask of the tokens left visible in the hint, e.g. drawn
                per document by a collator so that hints do not depend on how documents are batched. Sampled at the
                position's hint ratio when absent.
            encoder_hidden_states: optional `[batch, length, hidden]` last states of the encoder for these documents,
                e.g. computed once for a frozen encoder; the encoder is not run when they are given.
        """
        mode = IndexerMode(mode)
        if position is None:
            position = 1 if prefix_codes is None else prefix_codes.shape[1] + 1
        if prefix_codes is not None and prefix_codes.shape[1] == 0:
            prefix_codes = None
        attention_mask = self._check_inputs(input_ids, attention_mask, prefix_codes, position)
        config = self.config
        encoder_outputs = None
        if encoder_hidden_states is not None:
            encoder_outputs = BaseModelOutput(last_hidden_state=encoder_hidden_states.to(self.dtype))

        if mode is IndexerMode.RECONSTRUCTOR_WARMUP:
            if config.reconstructor_warmup_input == "hidden":
                with torch.no_grad():
                    states = self.decoder_states(input_ids, attention_mask, None, encoder_outputs)
                    warmup_vector = self.position_representation(states, 1, None)
            else:
                warmup_vector = self.get_input_embeddings().weight.new_zeros(
                    input_ids.shape[0], config.decoder_hidden_size
                )
            reconstruction, predictions, targets = self._reconstruction_loss(
                input_ids, attention_mask, [warmup_vector], position, hint_generator, hint_visible, frozen_tokens=True
            )
            return SemanticIndexerOutput(
                loss=config.reconstruction_weight * reconstruction,
                reconstruction_loss=reconstruction,
                reconstruction_predictions=predictions,
                reconstruction_targets=targets,
            )

        states = self.decoder_states(input_ids, attention_mask, prefix_codes, encoder_outputs)
        hidden = self.position_representation(states, position, prefix_codes)
        logits = self.code_logits(hidden, position)
        codes = logits.argmax(dim=-1)
        if mode is IndexerMode.CONTINUOUS:
            current = hidden
        else:
            table = self.codebooks[position].weight
            soft = logits.softmax(dim=-1).to(table.dtype) @ table
            current = soft + (table[codes] - soft).detach()
        id_vectors = [self.code_vectors(index + 1, prefix_codes[:, index]) for index in range(position - 1)]
        id_vectors.append(current)

        reconstruction, predictions, targets = self._reconstruction_loss(
            input_ids, attention_mask, id_vectors, position, hint_generator, hint_visible
        )
        positive = None
        if config.contrastive_positive == "dropout" and self.training:
            # A second pass draws other dropout masks: the document's own positive view (SimCSE). It is a target,
            # not trained through (stop-gradient), which halves its cost and leaves the loss's pull unchanged.
            with torch.no_grad():
                second_states = self.decoder_states(input_ids, attention_mask, prefix_codes, encoder_outputs)
                positive = self.position_representation(second_states, position, prefix_codes)
        contrastive = prefix_contrastive_loss(hidden, prefix_codes, config.contrastive_temperature, positive)
        earlier_logits = [
            self.code_logits(self.position_representation(states, index + 1, prefix_codes), index + 1)
            for index in range(position - 1)
        ]
        commitment = commitment_loss(earlier_logits, prefix_codes)
        loss = config.reconstruction_weight * reconstruction + config.contrastive_weight * contrastive
        if commitment is not None:
            loss = loss + config.commitment_weight * commitment
        return SemanticIndexerOutput(
            loss=loss,
            reconstruction_loss=reconstruction,
            contrastive_loss=contrastive,
            commitment_loss=commitment,
            hidden_state=hidden,
            code_logits=logits,
            codes=codes,
            reconstruction_predictions=predictions,
            reconstruction_targets=targets,
        )

    def _reconstruction_loss(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        id_vectors: list[torch.Tensor],
        position: int,
        generator: torch.Generator | None,
        visible: torch.Tensor | None = None,
        frozen_tokens: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cross-entropy on the hidden hint tokens, with the predicted and true ids of those tokens."""
        if visible is None:
            visible, targets = sample_hint_mask(attention_mask, self.config.hint_ratios[position - 1], generator)
        else:
            visible = visible.bool() & attention_mask.bool()
            targets = attention_mask.bool() & ~visible
        token_weight = self.get_input_embeddings().weight
        if frozen_tokens:
            token_weight = token_weight.detach()
        hint_embeddings = F.embedding(input_ids, token_weight)
        target_ids = input_ids[targets]
        if self.training and self.config.reconstruction_vocabulary == "batch":
            # In-batch sampled softmax: the batch's own distinct tokens are the classes; the targets are among them.
            vocabulary = torch.unique(input_ids[attention_mask.bool()])
            logits = self.reconstructor(id_vectors, hint_embeddings, visible, targets, token_weight[vocabulary])
            labels = torch.searchsorted(vocabulary, target_ids)
        else:
            vocabulary = None
            logits = self.reconstructor(id_vectors, hint_embeddings, visible, targets, token_weight)
            labels = target_ids
        if logits.shape[0] == 0:
            return token_weight.sum() * 0.0, target_ids, target_ids
        predictions = logits.argmax(dim=-1).detach()
        if vocabulary is not None:
            predictions = vocabulary[predictions]
        return F.cross_entropy(logits.float(), labels), predictions, target_ids

    # ------------------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def encode_position(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prefix_codes: torch.Tensor | None,
    ) -> torch.Tensor:
        """The representation of position t = one past `prefix_codes` (see `position_representation`): what k-means
        clusters into codebook t."""
        position = 1 if prefix_codes is None else prefix_codes.shape[1] + 1
        if prefix_codes is not None and prefix_codes.shape[1] == 0:
            prefix_codes = None
        attention_mask = self._check_inputs(input_ids, attention_mask, prefix_codes, position)
        return self.position_representation(
            self.decoder_states(input_ids, attention_mask, prefix_codes), position, prefix_codes
        )

    @torch.no_grad()
    def assign_codes(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        num_positions: int | None = None,
        prefix_codes: torch.Tensor | None = None,
    ) -> torch.LongTensor:
        """Greedy semantic IDs `[batch, num_positions]`: the argmax code at each position given the earlier ones.

        `prefix_codes` pins the first positions (e.g. codes frozen by training); the rest are decoded.
        The encoder runs once; each position re-runs only the short decoder.
        """
        num_positions = self.config.id_length if num_positions is None else num_positions
        if not 1 <= num_positions <= self.config.id_length:
            raise ValueError(f"`num_positions` must be in 1..{self.config.id_length}, got {num_positions}.")
        attention_mask = self._check_inputs(input_ids, attention_mask, None, 1)
        codes = input_ids.new_zeros(input_ids.shape[0], 0)
        if prefix_codes is not None:
            self.check_codes(prefix_codes)
            codes = prefix_codes.to(input_ids.device).long()
        encoder_outputs = self.encode(input_ids, attention_mask)
        for position in range(codes.shape[1] + 1, num_positions + 1):
            prefix = codes if codes.shape[1] else None
            states = self.decoder_states(input_ids, attention_mask, prefix, encoder_outputs)
            next_codes = self.code_logits(self.position_representation(states, position, prefix), position).argmax(
                dim=-1
            )
            codes = torch.cat([codes, next_codes[:, None]], dim=1)
        return codes[:, :num_positions]
