"""`LMIndexerForGenerativeRetrieval`: text in, semantic ID out, decoded under the ID trie by default.

It is a plain seq2seq LM whose vocabulary has one token per code and position, `<id_1_23>`, so generated IDs
decode to a readable string such as `<id_1_23><id_2_7><id_3_0>`. When built from a trained indexer, the ID
tokens of the learned positions start from the indexer's codebook vectors, and their logits are the indexer's code
logits (`id_token_scoring="codebook"`, see `CodebookIDScoring`), so that before any fine-tuning the retriever decodes
the IDs the indexer assigns, whatever LM head the backbone has. The semantic-ID map travels with the weights
(`semantic_id_map.safetensors`) and the trie is rebuilt from it on load.

Recommendation inputs are histories rendered by one rule, `HistoryFormat` (`history.py`), in fine-tuning and in
serving (`render_history`), with the settings saved in the config; every input is encoded by `encode_queries`.

This file is copied to the Hub: it imports only torch, transformers, the standard library and its siblings.

Why one long file: it is the retriever's modeling file, copied to the Hub for `trust_remote_code`; as in
transformers' own `modeling_*.py`, a reader finds the whole model (building, ID-token scoring, histories,
constrained decoding, `retrieve`) in one place.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DynamicCache,
    EncoderDecoderCache,
    GenerationConfig,
    GenerationMixin,
    LogitsProcessor,
    LogitsProcessorList,
)
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils.hub import is_offline_mode

from .causal_decoding import causal_position_ids, prefix_shared_beam_search
from .configuration_lmindexer import RECOMMENDATION, LMIndexerConfig, LMIndexerRetrievalConfig, strip_unsafe_config
from .history import render_history_with
from .id_tokens import (
    CodebookIDScoring,
    IDOutputVocabulary,
    _head_input_scale,
    _output_head,
    _resize_vocabulary,
    add_id_tokens,
    init_new_token_rows,
)
from .modeling_lmindexer import LMIndexerPreTrainedModel
from .pipeline_generative_retrieval import TASK_NAME, GenerativeRetrievalPipeline
from .semantic_id_map import ID_MAP_FILE, SemanticIDMap
from .trie import SemanticIDTrie, TrieConstrainedLogitsProcessor

logger = logging.getLogger(__name__)


class _LogSoftmax(LogitsProcessor):
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores.log_softmax(-1)


def _check_positive_int(name: str, value) -> None:
    # `__index__` admits numpy integers too; bool is an int but never a count.
    if isinstance(value, bool) or not hasattr(value, "__index__") or value.__index__() < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def _query_list(texts) -> list[str]:
    """`texts` as a list of str, or a one-line error naming what was given and what is accepted."""
    accepted = "a str or a list/tuple (or other ordered iterable) of str"
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)):
        raise TypeError(
            f"Queries must be {accepted}, got {type(texts).__name__}: decode it first, e.g. `texts.decode('utf-8')`."
        )
    # Sets and mappings have no order the results could follow.
    if not isinstance(texts, Iterable) or isinstance(texts, (set, frozenset, dict)):
        raise TypeError(f"Queries must be {accepted}, got {type(texts).__name__}.")
    texts = list(texts)
    if not texts:
        raise ValueError("`texts` is empty: give at least one query.")
    wrong = [(index, type(text).__name__) for index, text in enumerate(texts) if not isinstance(text, str)]
    if wrong:
        raise TypeError(f"Queries must be {accepted}; position {wrong[0][0]} holds a {wrong[0][1]}.")
    empty = [index for index, text in enumerate(texts) if not text.strip()]
    if empty:
        raise ValueError(f"Queries at positions {empty[:10]} are empty.")
    return [str(text) for text in texts]  # plain str, also from str subclasses such as numpy.str_


class BeamSharedCrossAttentionCache(EncoderDecoderCache):
    """Encoder-decoder cache whose beam reordering leaves the cross-attention states alone.

    Beam search only moves beams within one query, and every beam of a query attends to the same encoder output,
    so the cross-attention keys and values of those rows are identical; the stock reorder copies all of them
    (`[batch x beams, heads, source length, head dim]` per layer) at every step for nothing. Results are
    unchanged (tested bit for bit); on CPU it removes about a quarter of batched decoding time.
    """

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.self_attention_cache.reorder_cache(beam_idx)


class LMIndexerForGenerativeRetrieval(LMIndexerPreTrainedModel, GenerationMixin):
    """Generative retriever / recommender over semantic IDs.

    Build it with [`from_indexer`] (a trained `LMIndexerForSemanticID`) or [`from_backbone_and_map`] (any
    seq2seq backbone and any `SemanticIDMap`, e.g. k-means or rq-VAE IDs), fine-tune it on (text, ID) pairs,
    then call [`retrieve`].
    """

    config_class = LMIndexerRetrievalConfig
    config: LMIndexerRetrievalConfig

    def __init__(self, config: LMIndexerRetrievalConfig, backbone=None, id_map: SemanticIDMap | None = None):
        super().__init__(config)
        if backbone is None:
            auto_class = AutoModelForCausalLM if config.is_causal else AutoModelForSeq2SeqLM
            backbone = auto_class.from_config(config.backbone_config)
        self.backbone = backbone
        self._trie: SemanticIDTrie | None = None
        self._warned_truncation = False
        self._warned_titles = False
        if id_map is not None:
            self.id_map = id_map
        self.post_init()
        self.install_id_token_scoring()

    def install_id_token_scoring(self) -> None:
        """(Re)install the ID-token scoring the config names (`id_token_scoring`) on the backbone's LM head.

        Called on construction and loading; call it again after changing `id_token_scoring`, `code_geometry` or
        `code_temperature` in the config, or after replacing the backbone's output embeddings.
        """
        head, projection = _output_head(self.backbone)
        # Found by class name rather than by a handle, so that copies (deepcopy, pickle) and a class loaded again
        # through remote code are recognised too.
        for key, hook in list(head._forward_hooks.items()):
            if type(hook).__name__ in (CodebookIDScoring.__name__, IDOutputVocabulary.__name__):
                del head._forward_hooks[key]
        config = self.config
        if config.id_token_offsets is None:
            return
        if config.id_token_scoring == "codebook":
            head.register_forward_hook(
                CodebookIDScoring(
                    projection,
                    config.id_token_offsets,
                    config.id_vocabulary_sizes,
                    config.code_geometry,
                    config.code_temperature,
                    _head_input_scale(self.backbone),
                )
            )
        if config.output_vocabulary == "ids":
            eos = getattr(self.generation_config, "eos_token_id", None) if self.generation_config else None
            eos = eos[0] if isinstance(eos, (list, tuple)) else eos
            head.register_forward_hook(IDOutputVocabulary(config.id_token_offsets, config.id_vocabulary_sizes, eos))

    # ------------------------------------------------------------------------------------------ the map
    @property
    def id_map(self) -> SemanticIDMap:
        if self._id_map is None:
            raise ValueError("This model has no semantic-ID map; set `model.id_map = SemanticIDMap.load(...)`.")
        return self._id_map

    @id_map.setter
    def id_map(self, id_map: SemanticIDMap) -> None:
        id_map.check_compatible(self.config)
        offsets = self.config.id_token_offsets
        vocabulary = self.get_input_embeddings().weight.shape[0]
        if offsets is None or any(o + s > vocabulary for o, s in zip(offsets, id_map.vocabulary_sizes)):
            raise ValueError(
                f"The ID map needs ID tokens up to position sizes {id_map.vocabulary_sizes}, but the model's "
                f"vocabulary ({vocabulary} tokens, ID tokens at {offsets}) does not hold them."
            )
        self._id_map = id_map
        self._trie = None

    @property
    def trie(self) -> SemanticIDTrie:
        if self._trie is None:
            self._trie = SemanticIDTrie(self.codes_to_tokens(self.id_map.semantic_ids))
        return self._trie

    def codes_to_tokens(self, semantic_ids: torch.Tensor) -> torch.Tensor:
        return semantic_ids + torch.tensor(self.config.id_token_offsets, device=semantic_ids.device)

    def tokens_to_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens - torch.tensor(self.config.id_token_offsets, device=tokens.device)

    # ---------------------------------------------------------------------------------------- building
    @classmethod
    def from_backbone_and_map(
        cls, backbone, tokenizer, id_map: SemanticIDMap, config: LMIndexerConfig | None = None, **config_kwargs
    ) -> "LMIndexerForGenerativeRetrieval":
        """Any seq2seq backbone (model or path) and any ID map; adds the ID tokens to `tokenizer` in place.

        `config_kwargs` set retriever config fields, e.g. `id_token_scoring="codebook"` when the ID tokens' output rows
        are given vectors in the decoder-state space (as [`from_indexer`] does); by default the backbone's LM head
        scores them like text tokens."""
        if isinstance(backbone, (str, os.PathLike)):
            backbone = AutoModelForSeq2SeqLM.from_pretrained(backbone, use_safetensors=True)
        settings = config.to_dict() if config is not None else {}
        for key in ("model_type", "architectures", "auto_map", "transformers_version", "backbone_config"):
            settings.pop(key, None)
        # A new retriever for this map: it takes the map's layout and is bound to the map's run.
        settings.update(
            id_length=id_map.id_length,
            codebook_sizes=id_map.codebook_sizes,
            dedup_size=id_map.dedup_size,
            id_map_run_id=id_map.run_id,
        )
        settings.update(config_kwargs)
        retrieval_config = LMIndexerRetrievalConfig(backbone_config=backbone.config.to_dict(), **settings)
        retrieval_config.id_token_offsets = add_id_tokens(tokenizer, retrieval_config)
        first_new = backbone.get_input_embeddings().weight.shape[0]
        _resize_vocabulary(backbone, len(tokenizer))
        init_new_token_rows(backbone, first_new)
        retrieval_config.id_token_init = config_kwargs.get("id_token_init", "random")
        # The live backbone config (not a copy) so that the resized vocabulary is what gets saved; cleaned here too,
        # since assigning it skips the config's constructor.
        retrieval_config.backbone_config = strip_unsafe_config(backbone.config)
        model = cls(retrieval_config, backbone=backbone)
        model.id_map = id_map
        model._set_generation_defaults(tokenizer)
        model.install_id_token_scoring()  # again, now that the generation config names EOS
        return model

    @classmethod
    def from_indexer(
        cls, indexer, tokenizer=None, id_map: SemanticIDMap | None = None, **config_kwargs
    ) -> "LMIndexerForGenerativeRetrieval":
        """From a trained indexer (model, directory or Hub repo): backbone, codebook-initialised ID tokens, ID map.
        `config_kwargs` set other retriever config fields (the task, how inputs are rendered and cut)."""
        if isinstance(indexer, (str, os.PathLike)):
            from .modeling_lmindexer import LMIndexerForSemanticID

            source = indexer
            indexer = LMIndexerForSemanticID.from_pretrained(source)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(source)
        id_map = id_map or indexer.id_map
        if tokenizer is None or id_map is None:
            raise ValueError("Pass the indexer's tokenizer and ID map, or a directory that holds them.")
        # ID tokens are scored as the indexer scores codes (see `CodebookIDScoring`), so that the untrained retriever
        # already decodes the indexer's IDs whatever LM head the backbone has.
        model = cls.from_backbone_and_map(
            indexer.backbone,
            tokenizer,
            id_map,
            config=indexer.config,
            **{**config_kwargs, "id_token_scoring": "codebook", "id_token_init": "codebook"},
        )
        # The tokenizer now holds the ID tokens; keep it on the model so `retrieve` and `save` find it.
        model.tokenizer = tokenizer
        # The decoder's input table and the output projection get the codebooks as they are: the decoder was fed
        # exactly these vectors while the IDs were learned (so its states at later steps are the indexer's), and the
        # scoring compares states with these rows. One table in T5 and BART; in bert2bert the decoder's own.
        decoder_tables = {}
        for table in (
            model.backbone.get_decoder().get_input_embeddings().weight,
            model.backbone.get_output_embeddings().weight,
        ):
            decoder_tables.setdefault(table.data_ptr(), table)
        encoder_table = model.get_input_embeddings().weight
        offsets = model.config.id_token_offsets
        with torch.no_grad():
            # A separate encoder table (bert2bert) never saw ID tokens: there they keep the codebook directions at
            # the mean norm of its text rows, so that ID tokens in an input (`ids` histories) are on the text
            # tokens' scale rather than on that of decoder states.
            text_norm = encoder_table[: min(offsets)].norm(dim=1).mean()
            for position in range(1, indexer.config.id_length + 1):
                codebook = indexer.codebooks[position].weight
                start = offsets[position - 1]
                for table in decoder_tables.values():
                    table[start : start + len(codebook)] = codebook.to(table.dtype)
                if encoder_table.data_ptr() not in decoder_tables:
                    rows = F.normalize(codebook.float(), dim=-1) * text_norm.float()
                    encoder_table[start : start + len(codebook)] = rows.to(encoder_table.dtype)
        return model

    @classmethod
    def from_causal_config(
        cls, backbone_config, tokenizer, id_map: SemanticIDMap, **config_kwargs
    ) -> "LMIndexerForGenerativeRetrieval":
        """A causal (decoder-only) recommender over a stream of ID tokens, built from any causal LM config (GPT-2,
        Llama, ... as an object or a dict with `model_type`), with fresh weights.

        `tokenizer` holds the ID tokens and a few specials only (`lmindexer.trainers.downstream.id_vocabulary_tokenizer`
        makes one): the model's input and output vocabulary is then the ID tokens, with no text rows. Every row
        starts from the backbone's own initialisation (`id_token_init="model"`), the same for every ID method.
        Histories are the items' ID tokens, oldest first, after `<bos>`; `config_kwargs` set other retriever fields.
        """
        from transformers import AutoConfig

        if isinstance(backbone_config, dict):
            settings = dict(backbone_config)
            backbone_config = AutoConfig.for_model(settings.pop("model_type"), **settings)
        backbone_config = strip_unsafe_config(backbone_config)
        if getattr(backbone_config, "is_encoder_decoder", False):
            raise ValueError(
                f"`from_causal_config` needs a decoder-only config, got the encoder-decoder "
                f"{backbone_config.model_type!r}; use `from_backbone_and_map` for seq2seq backbones."
            )
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(backbone_config, name, getattr(tokenizer, name))
        backbone_config.vocab_size = len(tokenizer)
        settings = dict(
            id_length=id_map.id_length,
            codebook_sizes=id_map.codebook_sizes,
            dedup_size=id_map.dedup_size,
            id_map_run_id=id_map.run_id,
            task=RECOMMENDATION,
            history_format="ids",
            history_separator="",
            truncation_side="left",
            id_token_init="model",
        )
        settings.update(config_kwargs)
        config = LMIndexerRetrievalConfig(backbone_config=backbone_config.to_dict(), **settings)
        config.id_token_offsets = add_id_tokens(tokenizer, config)
        if len(tokenizer) != backbone_config.vocab_size:
            raise ValueError("The tokenizer of a causal ID-stream model must already hold every ID token of the map.")
        model = cls(config)
        model.id_map = id_map
        model.tokenizer = tokenizer
        model._set_generation_defaults(tokenizer)
        model.install_id_token_scoring()  # again, now that the generation config names EOS
        return model

    def _set_generation_defaults(self, tokenizer=None) -> None:
        """A generation config of the retriever's own, replacing the backbone's: only the start, end and pad tokens
        are taken over. What a backbone's config holds for text generation would break decoding under the trie, e.g.
        BART's `forced_bos_token_id`, `no_repeat_ngram_size` and `min_length`; see [`check_generation_settings`]."""
        backbone_config = self.config.backbone_config
        backbone_generation = getattr(self.backbone, "generation_config", None)

        def token(name):
            value = getattr(backbone_config, name, None)
            return value if value is not None else getattr(backbone_generation, name, None)

        if self.config.is_causal:
            self.generation_config = GenerationConfig(
                bos_token_id=token("bos_token_id"),
                eos_token_id=token("eos_token_id"),
                pad_token_id=token("pad_token_id"),
                max_new_tokens=self.config.id_length + 1,
                num_beams=20,
            )
            self.backbone.generation_config = self.generation_config
            return
        start = token("decoder_start_token_id")
        eos = getattr(tokenizer, "eos_token_id", None) if tokenizer is not None else None
        eos = eos if eos is not None else token("eos_token_id")
        if eos is None and tokenizer is not None:
            eos = tokenizer.sep_token_id
        pad = token("pad_token_id")
        self.generation_config = GenerationConfig(
            decoder_start_token_id=start,
            eos_token_id=eos,
            pad_token_id=pad if pad is not None else eos,
            max_new_tokens=self.config.id_length + 2,
            num_beams=20,
        )
        self.backbone.generation_config = self.generation_config

    # -------------------------------------------------------------------------------------- persistence
    def save_pretrained(self, save_directory, *args, **kwargs):
        """Also registers the `generative-retrieval` pipeline in the config and copies its file, so that
        `pipeline("generative-retrieval", model=folder_or_repo, trust_remote_code=True)` needs no package."""
        self.config.custom_pipelines = {
            TASK_NAME: {
                "impl": f"{GenerativeRetrievalPipeline.__module__.rsplit('.', 1)[-1]}.GenerativeRetrievalPipeline",
                "pt": ["AutoModel"],
                "type": "text",
            }
        }
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            custom_object_save(GenerativeRetrievalPipeline, save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        kwargs.setdefault("use_safetensors", True)
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        if not model._load_saved_id_map(pretrained_model_name_or_path, kwargs):
            cache_only = kwargs.get("local_files_only") or is_offline_mode()
            if cache_only and not Path(str(pretrained_model_name_or_path)).is_dir():
                # Offline, a map missing from the cache is indistinguishable from a repo without one: refuse.
                raise OSError(
                    f"The ID map {ID_MAP_FILE} of {pretrained_model_name_or_path} is not in the local cache and the "
                    "Hub is not reachable in offline mode. A retriever cannot decode without it: download the whole "
                    "repo while online (`hf download REPO`), or load from a folder that holds the map."
                )
            logger.warning(
                "%s holds no %s; set `model.id_map` before retrieving.", pretrained_model_name_or_path, ID_MAP_FILE
            )
        model.backbone.generation_config = model.generation_config
        model.install_id_token_scoring()  # the ID-only output vocabulary keeps the saved generation config's EOS
        return model

    # ------------------------------------------------------------------------------------ forward / generate
    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def get_output_embeddings(self):
        return self.backbone.get_output_embeddings()

    def get_encoder(self):
        return self.backbone.get_encoder()

    def forward(self, input_ids=None, attention_mask=None, labels=None, decoder_input_ids=None, **kwargs):
        """Teacher-forced forward of the backbone. Seq2seq: `labels` are the ID tokens followed by EOS. Causal: `labels`
        are the input stream itself with -100 where nothing is predicted (the backbone shifts them), and positions
        count real tokens only, as in decoding."""
        if self.config.is_causal:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            kwargs.setdefault("position_ids", causal_position_ids(attention_mask, self.config.causal_positions))
            return self.backbone(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        return self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels,
            decoder_input_ids=decoder_input_ids,
            **kwargs,
        )

    @property
    def eos_token_id(self) -> int:
        """The token that ends an ID (the first one, where the generation config lists several)."""
        eos = self.generation_config.eos_token_id
        return int(eos[0] if isinstance(eos, (list, tuple)) else eos)

    def trie_processor(self, raise_on_dead_end: bool = True, prompt_length: int = 1) -> TrieConstrainedLogitsProcessor:
        """The trie constraint; `prompt_length` tokens of each row precede the ID (the decoder start token of a seq2seq
        model, the whole left-padded prompt of a causal one).

        The trie is moved to the model's device here, before decoding: moved by the processor at its first step, the
        copy would synchronise the host inside `generate` (the processor's steps themselves never do)."""
        pad = self.generation_config.pad_token_id
        self.trie.to(self.device)
        return TrieConstrainedLogitsProcessor(
            self.trie,
            eos_token_id=self.eos_token_id,
            pad_token_id=pad,
            prompt_length=prompt_length,
            raise_on_dead_end=raise_on_dead_end,
        )

    def check_generation_settings(self, generation_config: GenerationConfig | None = None, **kwargs) -> None:
        """Raise a `ValueError` naming the first length setting under which the trie cannot produce whole IDs.

        Every ID is `trie.depth` ID tokens then EOS, after the decoder start token. transformers counts
        `min_new_tokens` before EOS may appear, and `min_length` / `max_length` with the start token, hence the bounds
        below. Settings are read the way `generate` reads them: keyword arguments first, then `generation_config`, then
        the backbone's `generation_config` (the model's own, shared). Nothing is overridden silently: no default that
        transformers injects conflicts (its fallback `max_length` of 20 is longer than any ID, and decoding stops at
        EOS), so every conflict is the caller's setting and an error.
        """
        depth = self.trie.depth
        if self.config.is_causal:
            # The ID follows the prompt in one stream, with no EOS after it: only a cut-short ID can go wrong here.
            max_new_tokens = kwargs.get("max_new_tokens", (generation_config or self.generation_config).max_new_tokens)
            if max_new_tokens is not None and max_new_tokens < depth:
                raise ValueError(
                    f"`max_new_tokens={max_new_tokens}` would cut IDs short: every semantic ID is {depth} "
                    f"tokens, so it must be at least {depth}."
                )
            return

        def setting(name):
            if name in kwargs:  # even None: generate lets an explicit keyword replace the config's value
                return kwargs[name]
            for config in (generation_config, self.backbone.generation_config):
                if config is not None and getattr(config, name, None) is not None:
                    return getattr(config, name)
            return None

        forced_bos, forced_eos = setting("forced_bos_token_id"), setting("forced_eos_token_id")
        if forced_bos is not None and forced_bos not in self.trie.allowed_tokens([]):
            raise ValueError(
                f"`forced_bos_token_id={forced_bos}` conflicts with the ID trie: the first generated token must be a "
                "first-position ID token. Unset it (BART-style checkpoints set it for text generation)."
            )
        if forced_eos is not None:
            forced = list(forced_eos) if isinstance(forced_eos, (list, tuple)) else [forced_eos]
            if self.eos_token_id not in forced:
                raise ValueError(
                    f"`forced_eos_token_id={forced_eos}` conflicts with the ID trie: every semantic ID ends with EOS "
                    f"({self.eos_token_id}), so it must name that token (or be unset)."
                )
        min_new_tokens, min_length = setting("min_new_tokens"), setting("min_length")
        max_new_tokens, max_length = setting("max_new_tokens"), setting("max_length")
        ids = f"every semantic ID is {depth} tokens then EOS"
        if min_new_tokens is not None and min_new_tokens > depth:
            raise ValueError(
                f"`min_new_tokens={min_new_tokens}` conflicts with the ID trie: {ids}, so it must be at most {depth} "
                "(or unset)."
            )
        if min_length is not None and min_length > depth + 1:
            raise ValueError(
                f"`min_length={min_length}` conflicts with the ID trie: {ids}, and `min_length` counts the decoder "
                f"start token, so it must be at most {depth + 1} (or unset)."
            )
        # As in `generate`, `max_new_tokens` wins over `max_length` when both are set.
        if max_new_tokens is not None and max_new_tokens < depth + 1:
            raise ValueError(
                f"`max_new_tokens={max_new_tokens}` would cut IDs short: {ids}, so it must be at least {depth + 1}."
            )
        if max_new_tokens is None and max_length is not None and max_length < depth + 2:
            raise ValueError(
                f"`max_length={max_length}` would cut IDs short: {ids}, and `max_length` counts the decoder start "
                f"token, so it must be at least {depth + 2}."
            )

    @torch.no_grad()
    def generate(self, *args, constrained: bool = True, logits_processor=None, **kwargs):
        """The backbone's `generate`, with the trie constraint added unless `constrained=False`.

        The trie comes last among the processors (transformers runs its own, such as `min_length`, before any passed
        in), so that nothing after it can let a non-ID through and its dead-end check sees what the others banned.
        Constrained, length settings that could not yield whole IDs raise a `ValueError` before decoding (see
        [`check_generation_settings`]), and so does, once decoding ends, any step where another setting or processor
        left a row no token the trie allows (the check costs one host sync per call, none per step).
        """
        processors = LogitsProcessorList(logits_processor or [])
        if not constrained:
            return self.backbone.generate(*args, logits_processor=processors, **kwargs)
        self.check_generation_settings(**kwargs)
        prompt_length = 1
        if self.config.is_causal and self.config.causal_positions != "start":
            raise ValueError(
                "`generate` counts positions from the start of the prompt, but this model was trained with "
                "positions counted to the end of the stream (`causal_positions='end'`): decode with "
                "`retrieve` or `decode_rows`, which place them as training did."
            )
        if self.config.is_causal:  # the constraint starts where the ID starts, after the whole prompt
            prompt = kwargs.get("input_ids", args[0] if args else None)
            prompt_length = prompt.shape[1]
        trie_processor = self.trie_processor(raise_on_dead_end=False, prompt_length=prompt_length)
        processors.append(trie_processor)
        try:
            output = self.backbone.generate(*args, logits_processor=processors, **kwargs)
        except RuntimeError:
            # Sampling from a row with no allowed token fails inside torch; report the cause instead.
            error = trie_processor.dead_end_error()
            if error is None:
                raise
            raise error from None
        trie_processor.raise_if_dead_end()
        return output

    # ------------------------------------------------------------------------------------------- inputs
    def render_history(self, history, item_texts=None) -> str:
        """A user's history as the input text this model was fine-tuned on (recommendation), ready for [`retrieve`].

        `history` lists the items from oldest to newest: document IDs of the ID map, or, for the `"text"` format, also
        free texts of items the map does not hold. An item's text is the one given in `item_texts` (a dict by document
        ID, or a list parallel to `history` with None where the map's text should serve), else the map's title. The
        config says how the items are cut, ordered, shown and joined (`history_format`, `history_max_items`,
        `history_newest_first`, `history_separator`; see [`HistoryFormat`]), as fine-tuning saved it, so
        that serving renders exactly what training did. Fine-tuning joins `history_text_fields` into an item's text:
        when that is more than the title, pass the same texts in `item_texts`.
        """
        text, warned = render_history_with(
            self.config, self.id_map, history, item_texts, warn_titles=not self._warned_titles
        )
        self._warned_titles = self._warned_titles or warned
        return text

    def encode_queries(self, texts, tokenizer=None, max_length: int | None = None, warn: bool = True):
        """Tokenise input texts as fine-tuning did: padded, cut to `max_length` tokens (the config's `max_query_length`
        by default) at the config's `truncation_side`. `retrieve`, the pipeline and `RetrievalCollator` all encode
        through here. With `warn`, the first cut input logs one warning."""
        tokenizer = tokenizer or getattr(self, "tokenizer", None) or AutoTokenizer.from_pretrained(self.name_or_path)
        texts = [texts] if isinstance(texts, str) else list(texts)
        max_length = self.config.max_query_length if max_length is None else max_length
        if warn and not self._warned_truncation:
            lengths = [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]
            if max(lengths) > max_length:
                logger.warning(
                    "Queries longer than %d tokens are truncated (at the %s end).",
                    max_length,
                    self.config.truncation_side,
                )
                self._warned_truncation = True
        side = tokenizer.truncation_side
        tokenizer.truncation_side = self.config.truncation_side
        try:
            return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        finally:
            tokenizer.truncation_side = side

    # ---------------------------------------------------------------------------------------- retrieval
    @torch.no_grad()
    def retrieve(
        self, texts: list[str] | str, tokenizer=None, top_k: int = 10, num_beams: int = 20, batch_size: int = 32
    ) -> list[list[dict]]:
        """Ranked documents per input text: `{"doc_id", "semantic_id", "score"}` (+ `"title"` when the map has titles).

        `texts` is a str or a list / tuple (or any other ordered iterable, such as a generator) of str. `top_k`,
        `num_beams` and `batch_size` are positive integers; `num_beams=1` decodes greedily and returns one hit.

        `score` is the length-normalised log-probability of the hit's ID under the model: the sum, over its ID tokens
        and the EOS that ends it, of the log-softmax of the model's logits over the whole vocabulary (the trie only
        removes tokens, it does not renormalise), divided by `(ID tokens + 1) ** length_penalty` as beam search does
        (`length_penalty` from `generation_config`, 1.0 by default: the mean log-probability per token). Every ID has
        the same length, so the normalisation never changes the ranking.

        When fewer valid IDs than `top_k` can be decoded (a small trie), the list is shorter and a warning says so.
        Inputs are encoded by [`encode_queries`]; for a recommender, make a history's text with [`render_history`].
        """
        texts = _query_list(texts)
        for name, value in (("top_k", top_k), ("num_beams", num_beams), ("batch_size", batch_size)):
            _check_positive_int(name, value)
        if top_k > num_beams:
            raise ValueError(
                f"`top_k` ({top_k}) cannot exceed `num_beams` ({num_beams}): beam search returns at most num_beams IDs."
            )
        tokenizer = tokenizer or getattr(self, "tokenizer", None) or AutoTokenizer.from_pretrained(self.name_or_path)
        results: list[list[dict]] = []
        for start in range(0, len(texts), batch_size):
            batch_texts = texts[start : start + batch_size]
            encoded = self.encode_queries(batch_texts, tokenizer)
            rows, scores = self.decode_rows(encoded["input_ids"], encoded["attention_mask"], num_beams=num_beams)
            for query in range(len(batch_texts)):
                ranked = self.rank_rows(rows[query], scores[query], top_k)
                if len(ranked) < top_k:
                    logger.warning(
                        "Query %d: only %d valid IDs could be decoded (top_k=%d).", start + query, len(ranked), top_k
                    )
                results.append(ranked)
        return results

    @torch.no_grad()
    def decode_rows(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        num_beams: int = 20,
        share_cross_attention: bool = True,
    ):
        """Constrained beam search (greedy decoding when `num_beams` is 1) for a batch of encoded queries.

        Returns `(rows, scores)`, both `[batch, num_beams]` on the CPU: the ID-map row of every returned beam (-1
        where a beam ended without a complete, known ID) and its score (see [`retrieve`]). `share_cross_attention=False`
        uses transformers' stock cache (see `BeamSharedCrossAttentionCache`).
        """
        _check_positive_int("num_beams", num_beams)
        device = next(self.parameters()).device
        if self.config.is_causal:
            return self._decode_rows_causal(input_ids.to(device), attention_mask.to(device), num_beams)
        cache = (
            {"past_key_values": BeamSharedCrossAttentionCache(DynamicCache(), DynamicCache())}
            if share_cross_attention
            else {}
        )
        depth = self.trie.depth
        inputs = dict(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=depth + 1,
            return_dict_in_generate=True,
            **cache,
        )
        if num_beams == 1:
            # Greedy search returns no sequence score: rebuild beam search's one so that both mean the same. Like beam
            # search, log-softmax over the whole vocabulary before the trie masks; the argmax is unchanged. (The raw
            # `output_logits` cannot serve: the trie processor masks its input in place, and greedy search stores
            # that very tensor.)
            output = self.generate(**inputs, num_beams=1, output_scores=True, logits_processor=[_LogSoftmax()])
            chosen = output.sequences[:, 1:]
            log_probs = [step.float().gather(1, chosen[:, i : i + 1]) for i, step in enumerate(output.scores)]
            length_penalty = self.backbone.generation_config.length_penalty  # the config beam search reads
            length_penalty = 1.0 if length_penalty is None else length_penalty
            sequence_scores = torch.cat(log_probs, 1).sum(1) / (len(log_probs) ** length_penalty)
        else:
            output = self.generate(
                **inputs, num_beams=num_beams, num_return_sequences=num_beams, early_stopping=True, output_scores=True
            )
            sequence_scores = output.sequences_scores
        tokens = output.sequences[:, 1 : 1 + depth]
        if tokens.shape[1] < depth:
            tokens = torch.nn.functional.pad(tokens, (0, depth - tokens.shape[1]), value=-1)
        ends = (
            output.sequences[:, 1 + depth]
            if output.sequences.shape[1] > 1 + depth
            else torch.full_like(tokens[:, 0], -1)
        )
        complete = self.trie.contains(tokens) & (ends == self.eos_token_id)
        # Beam search pads its output with placeholder beams (score -inf or about -1e9) when the trie holds fewer IDs
        # than beams; any other beam must be a whole ID then EOS, or the trie's exactness was broken somewhere.
        scored = torch.isfinite(sequence_scores) & (sequence_scores > -1e3)
        broken = int((scored & ~complete).sum())
        if broken:
            raise ValueError(
                f"Decoding returned {broken} scored sequence(s) that are not a whole semantic ID ({depth} tokens) "
                "then EOS: a generation setting conflicts with the ID trie (see `check_generation_settings`)."
            )
        valid = complete & scored
        rows = torch.full((tokens.shape[0],), -1, dtype=torch.long)
        if bool(valid.any()):
            rows[valid.cpu()] = self.id_map.rows_of(self.tokens_to_codes(tokens[valid]).cpu())
        scores = sequence_scores.float().cpu()
        return rows.view(-1, num_beams), scores.view(-1, num_beams)

    def _decode_rows_causal(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_beams: int):
        """`decode_rows` of a causal model: the prompt is encoded once and shared by its beams (see
        `prefix_shared_beam_search`); an ID is `trie.depth` tokens with no EOS after it."""
        length_penalty = self.generation_config.length_penalty
        processor = self.trie_processor(raise_on_dead_end=False, prompt_length=0)
        tokens, sequence_scores = prefix_shared_beam_search(
            self.backbone,
            input_ids,
            attention_mask,
            processor,
            num_beams,
            length_penalty=1.0 if length_penalty is None else length_penalty,
            alignment=self.config.causal_positions,
        )
        processor.raise_if_dead_end()
        valid = self.trie.contains(tokens) & torch.isfinite(sequence_scores)
        rows = torch.full((tokens.shape[0],), -1, dtype=torch.long)
        if bool(valid.any()):
            rows[valid.cpu()] = self.id_map.rows_of(self.tokens_to_codes(tokens[valid]).cpu())
        return rows.view(-1, num_beams), sequence_scores.float().cpu().view(-1, num_beams)

    def rank_rows(self, rows: torch.Tensor, scores: torch.Tensor, top_k: int) -> list[dict]:
        """One query's beams (ID-map rows and scores) as ranked result dicts, duplicates and invalid beams dropped."""
        ranked, seen = [], set()
        for row, score in zip(rows.tolist(), scores.tolist()):
            if row < 0 or row in seen:
                continue
            seen.add(row)
            entry = {
                "doc_id": self.id_map.doc_ids[row],
                "semantic_id": tuple(self.id_map.semantic_ids[row].tolist()),
                "score": score,
            }
            if self.id_map.doc_titles is not None:
                entry["title"] = self.id_map.doc_titles[row]
            ranked.append(entry)
        ranked.sort(key=lambda item: -item["score"])
        return ranked[:top_k]
