"""The ID tokens of a retriever's vocabulary: adding them to a tokenizer, giving the new rows a start, and the two
forward hooks on the LM head that score them (`CodebookIDScoring`) and restrict the output softmax to them
(`IDOutputVocabulary`).

This file is copied to the Hub: it imports only torch, transformers, the standard library and its siblings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from .configuration_lmindexer import LMIndexerConfig
from .modeling_lmindexer import code_similarity


def add_id_tokens(tokenizer, config: LMIndexerConfig) -> list[int]:
    """Add `<id_t_c>` tokens for every stored position to `tokenizer`; return each position's first token id.

    Tokens already present (a tokenizer saved with them) are reused; either way each position's tokens must be
    contiguous, which is checked.
    """
    offsets = []
    for position, size in enumerate(config.id_vocabulary_sizes, start=1):
        names = [config.id_token(position, code) for code in range(size)]
        tokenizer.add_tokens([name for name in names if name not in tokenizer.get_vocab()])
        ids = tokenizer.convert_tokens_to_ids(names)
        if ids != list(range(ids[0], ids[0] + size)):
            raise ValueError(f"The tokenizer's ID tokens of position {position} are not contiguous.")
        offsets.append(ids[0])
    return offsets


def _resize_vocabulary(backbone, size: int) -> None:
    """Grow the backbone's token tables to `size`; a bert2bert model holds one set per side. The new rows are set by
    `init_new_token_rows` afterwards (mean resizing would make them all the same vector)."""
    if backbone.config.model_type == "encoder-decoder":
        for side in (backbone.encoder, backbone.decoder):
            side.resize_token_embeddings(size, mean_resizing=False)
        backbone.config.encoder.vocab_size = size
        backbone.config.decoder.vocab_size = size
    else:
        backbone.resize_token_embeddings(size, mean_resizing=False)


def _token_tables(backbone) -> list[torch.Tensor]:
    """Every distinct token table of the backbone (input and output embeddings, both sides of a bert2bert)."""
    modules = [backbone.get_input_embeddings(), backbone.get_output_embeddings()]
    if backbone.config.model_type == "encoder-decoder":
        modules += [backbone.decoder.get_input_embeddings()]
    tables = {}
    for module in modules:
        if module is not None:
            tables.setdefault(module.weight.data_ptr(), module.weight)
    return list(tables.values())


@torch.no_grad()
def init_new_token_rows(backbone, first_new: int, seed: int = 0) -> None:
    """Rows `first_new:` of every token table: random directions, each at the mean norm of the table's older rows.

    Distinct rows at the scale of the rows beside them, so that an untrained model can already tell items apart and
    an ID logit moves as fast as a text logit. (`mean_resizing` draws every row from N(mean, 1e-9 cov): identical rows,
    norm ~0.03 against ~5 for T5's text rows, which stalled learning.) Seeded, so every ID method gets the same start.
    """
    generator = torch.Generator().manual_seed(seed)
    for table in _token_tables(backbone):
        if table.shape[0] <= first_new:
            continue
        norm = table[:first_new].float().norm(dim=1).mean()
        rows = torch.randn(table.shape[0] - first_new, table.shape[1], generator=generator)
        table[first_new:] = (F.normalize(rows, dim=1) * norm).to(table.dtype)


def _output_head(backbone) -> tuple[torch.nn.Module, str]:
    """The module that turns the decoder's last hidden state into logits, and the path from it to the output
    projection (whose rows are the output embeddings of the tokens).

    T5 and BART call the projection on the state itself (`lm_head`, path ""). BERT-style decoders call a prediction head
    that transforms the state first (`cls.predictions`: dense, GELU, LayerNorm, then the projection `decoder`), so the
    head is that module and the path is "decoder".
    """
    projection = backbone.get_output_embeddings()
    name = next(name for name, module in backbone.named_modules() if module is projection)
    parent_name, _, leaf = name.rpartition(".")
    parent = backbone.get_submodule(parent_name) if parent_name else backbone
    if isinstance(parent, PreTrainedModel):
        return projection, ""
    return parent, leaf


def _head_input_scale(backbone) -> float:
    """What undoes a scaling the backbone applies to the decoder state before its LM head: original T5 multiplies it
    by `d_model ** -0.5` (`scale_decoder_outputs`; T5 v1.1 and flan-t5 do not)."""
    config = backbone.config
    scaled = getattr(config, "scale_decoder_outputs", None)
    if scaled is None and config.model_type in ("t5", "mt5", "umt5"):
        scaled = getattr(config, "tie_word_embeddings", True)  # how transformers before 5.x decided it
    model_dim = getattr(backbone, "model_dim", None) or getattr(config, "d_model", None)
    return float(model_dim) ** 0.5 if scaled and model_dim else 1.0


class CodebookIDScoring:
    """Forward hook on the backbone's LM head that replaces the logits of ID tokens by the indexer's code logits.

    The logit of ID token `<id_t_k>` becomes `sim(h, w_k) / code_temperature`, where `h` is the decoder's last hidden
    state (any scaling the backbone applied before its head undone), `w_k` is the token's row of the output
    embeddings, and `sim` is cosine or dot product per `code_geometry`: for a retriever whose ID rows are the indexer's
    codebooks, exactly `LMIndexerForSemanticID.code_logits`. A transform in front of the projection (BERT's dense +
    GELU + LayerNorm, random when the checkpoint has no `cls.*` weights, as sentence-embedding checkpoints) is
    bypassed for ID tokens; text tokens keep the head's own logits. The rows stay trainable through these logits.

    It holds plain values only (the rows are read from the hooked module at each call), so a deep copy of the model
    carries a working copy, and the model re-installs it from its config when loaded.
    """

    def __init__(
        self,
        projection: str,
        offsets: list[int],
        sizes: list[int],
        geometry: str,
        temperature: float,
        input_scale: float = 1.0,
    ):
        self.projection = projection
        self.ranges = [(int(start), int(size)) for start, size in zip(offsets, sizes)]
        self.geometry = geometry
        self.temperature = float(temperature)
        self.input_scale = float(input_scale)
        self._index: dict[str, torch.Tensor] = {}

    def token_index(self, device) -> torch.Tensor:
        """The token ids of every ID token, on `device` (built once per device)."""
        key = str(device)
        if key not in self._index:
            self._index[key] = torch.cat([torch.arange(start, start + size) for start, size in self.ranges]).to(device)
        return self._index[key]

    def __call__(self, module, args, output):
        hidden = args[0] if args else None
        if not torch.is_tensor(output) or not torch.is_tensor(hidden):
            return None
        weight = (module.get_submodule(self.projection) if self.projection else module).weight
        index = self.token_index(weight.device)
        rows = weight.index_select(0, index)
        # The scale the backbone applied before its head is undone for dot products (cosine ignores it).
        scores = code_similarity(hidden * self.input_scale, rows, self.geometry, self.temperature)
        return output.index_copy(output.dim() - 1, index.to(output.device), scores.to(output.dtype))


class IDOutputVocabulary:
    """Forward hook on the backbone's LM head that leaves only the ID tokens and EOS scorable
    (`output_vocabulary="ids"`).

    Every other logit becomes the dtype's lowest value, so the softmax that the training loss, beam search and
    `retrieve`'s scores take is over ID tokens and EOS alone: the same normalisation in training and decoding, with no
    probability spent on text tokens that can never be an answer. Installed after `CodebookIDScoring`, so it sees
    the final ID logits. Plain values only, as for `CodebookIDScoring`.
    """

    def __init__(self, offsets: list[int], sizes: list[int], eos_token_id: int | None):
        self.ranges = [(int(start), int(size)) for start, size in zip(offsets, sizes)]
        self.eos_token_id = eos_token_id
        self._masks: dict[tuple[str, int], torch.Tensor] = {}

    def banned(self, vocabulary: int, device) -> torch.Tensor:
        """`[vocabulary]` bool: True for every token that is neither an ID token nor EOS (built once per device)."""
        key = (str(device), vocabulary)
        if key not in self._masks:
            banned = torch.ones(vocabulary, dtype=torch.bool)
            for start, size in self.ranges:
                banned[start : start + size] = False
            if self.eos_token_id is not None:
                banned[self.eos_token_id] = False
            self._masks[key] = banned.to(device)
        return self._masks[key]

    def __call__(self, module, args, output):
        if not torch.is_tensor(output):
            return None
        return output.masked_fill(self.banned(output.shape[-1], output.device), torch.finfo(output.dtype).min)
