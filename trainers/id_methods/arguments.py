"""Arguments of `lmindexer index` / `assign` that every ID method shares, and their Python equivalents.

- `IndexArguments`: what to index and with which method and ID layout (corpus, fields, backbone, sizes, recipe).
- `AssignArguments`: zero-shot IDs for new documents with a trained indexer folder.

How an LMIndexer trains (per-phase epochs, rates, batch sizes) is `lmindexer.trainers.indexer.arguments`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...modeling_lmindexer.configuration_lmindexer import LMIndexerConfig
from ..data.demo import TINY_BACKBONE
from ..data.lists import split_names


def from_config(name: str, help: str | None = None):
    """An argument whose default is the `LMIndexerConfig` field of that name: one source of defaults."""
    return field(default=getattr(LMIndexerConfig, name), metadata={"help": help} if help else {})


@dataclass
class IndexArguments:
    """What to index: the corpus and its fields, the ID method, and the ID layout."""

    method: str = field(
        default="lmindexer", metadata={"help": "Semantic-ID method (see `lmindexer.trainers.id_methods`)."}
    )
    preset: str | None = field(
        default=None,
        metadata={
            "help": "Named defaults (any flag given still wins): cpu = a frozen pretrained encoder, one epoch per "
            "phase (benchmarks/run_bench_lmindexer.sh); gpu = the paper's setting, every layer trained, "
            "bf16 (`lmindexer.trainers.presets`)."
        },
    )
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
        metadata={
            "help": f"Seq2seq or BERT-style checkpoint, or `{TINY_BACKBONE}` (random, tokenizer trained on the corpus)."
        },
    )
    id_length: int = from_config("id_length", "Learned ID positions T.")
    codebook_size: str | None = field(
        default=None,
        metadata={
            "help": "Codebook size, or one per position: 64,64,64. Unset: 512 (the paper's size for ~12k items), "
            "lowered to the largest power of two that leaves k-means at least 4 documents per code."
        },
    )
    dedup_size: int | None = field(default=None, metadata={"help": "Dedup capacity; unset: sized to the data."})
    max_length: int = field(default=512, metadata={"help": "Tokens per document."})
    code_geometry: str = from_config("code_geometry", "cosine or dot.")
    contrastive_temperature: float = from_config("contrastive_temperature")
    code_temperature: float = from_config("code_temperature")
    reconstructor_layers: int = from_config("reconstructor_layers")
    hint_ratios: str | None = field(default=None, metadata={"help": "Visible fraction per position, e.g. 0.5,0.3,0.2."})
    # The recipe: each default is the config's (`LMIndexerConfig` documents every option), so that an indexer built in
    # Python (`LMIndexerForSemanticID.from_backbone`) trains what `lmindexer index` trains.
    later_position_input: str = from_config("later_position_input", "raw or residual (h^t minus c^{t-1}'s vector).")
    center_hidden: bool = from_config(
        "center_hidden",
        "Score h^t minus its corpus mean (measured at k-means time). Off by default: with the pooled path "
        "h^1 is no longer one shared vector, and a centre fixed at k-means time goes stale while the decoder trains "
        "(ablation: trained AMI(c1) 0.299 with it, 0.324 without).",
    )
    pooled_hidden: bool = from_config("pooled_hidden", "Add the mean-pooled encoder states to h^t.")
    contrastive_positive: str = from_config("contrastive_positive", "self or dropout (SimCSE positive view).")
    reconstructor_warmup_input: str = from_config("reconstructor_warmup_input", "zeros or hidden (the frozen h^1).")
    reconstructor_position_norm: bool = from_config(
        "reconstructor_position_norm", "Layer-normalise the query positions."
    )
    reconstruction_vocabulary: str = from_config("reconstruction_vocabulary", "full or batch (in-batch softmax).")
    reconstruction_weight: float = from_config("reconstruction_weight")
    contrastive_weight: float = from_config("contrastive_weight")
    commitment_weight: float = from_config("commitment_weight")
    # Two-stage methods (rqkmeans, rqvae, hkmeans): the sentence encoder and the quantiser's own settings.
    encoder: str | None = field(
        default=None, metadata={"help": "Sentence encoder of two-stage methods; unset: the offline all-MiniLM-L6-v2."}
    )
    pooling: str = field(default="mean", metadata={"help": "Two-stage methods: mean or cls pooling."})
    normalize_embeddings: bool = field(default=True, metadata={"help": "Two-stage methods: L2-normalise embeddings."})
    embedding_max_length: int = field(default=128, metadata={"help": "Two-stage methods: tokens per document."})
    embedding_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where embeddings are cached (safetensors); unset: <output_dir>/../.embeddings."},
    )
    method_settings: str | None = field(
        default=None, metadata={"help": "JSON of the quantiser's settings, e.g. '{\"epochs\": 20}' for rqvae."}
    )

    @property
    def text_field_list(self) -> list[str]:
        return split_names(self.text_fields)


@dataclass
class AssignArguments:
    model: str = field(metadata={"help": "Directory of a trained indexer (with its semantic_id_map.safetensors)."})
    corpus: str = field(metadata={"help": "jsonl/csv/parquet file or Hub dataset of new documents."})
    id_field: str = field(default="item_id")
    text_fields: str | None = field(
        default=None,
        metadata={"help": "Comma-separated fields joined into the text; unset: those the indexer was trained on."},
    )
    title_field: str | None = field(default="title")
    batch_size: int = field(default=128)
    max_length: int | None = field(
        default=None, metadata={"help": "Tokens per document; unset: the length the indexer was trained with."}
    )
    lock_timeout: float = field(
        default=600.0, metadata={"help": "Seconds to wait for another `lmindexer assign` on the same folder to finish."}
    )
    rededuplicate: bool = field(
        default=False,
        metadata={
            "help": "When a group of documents sharing all learned codes outgrows the dedup position, grow it "
            "(the config's dedup_size and the map's) instead of failing; existing IDs stay as they are."
        },
    )
