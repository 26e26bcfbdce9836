"""Arguments of `lmindexer index` / `assign` and their Python equivalents.

- `IndexArguments`: what to index and with which method and ID layout (corpus, fields, backbone, sizes).
- `IndexerTrainingArguments`: every `TrainingArguments` flag, plus per-phase epochs, learning rates and batch
  sizes, SetFit-style: `phase_arguments` derives each trained phase's `TrainingArguments` from them, so bf16,
  report_to, gradient accumulation, deepspeed/fsdp and the rest apply to every phase.
- `AssignArguments`: zero-shot IDs for new documents with a trained indexer folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..data.demo import TINY_BACKBONE
from .stages import TRAINED_PHASES, Phase


# Set per phase by `phase_arguments`, never shared across phases.
PER_PHASE_FLAGS = ("output_dir", "push_to_hub", "num_train_epochs", "learning_rate", "per_device_train_batch_size",
                   "seed", "data_seed")


@dataclass
class IndexArguments:
    """What to index: the corpus and its fields, the ID method, and the ID layout."""

    method: str = field(default="lmindexer", metadata={"help": "Semantic-ID method (see `lmindexer.trainers.id_methods`)."})
    preset: str | None = field(
        default=None,
        metadata={"help": "Named defaults (any flag given still wins): cpu = a frozen pretrained encoder, one epoch per "
                          "phase (benchmarks/run_bench_lmindexer.sh); gpu = the paper's setting, every layer trained, "
                          "bf16 (`lmindexer.trainers.presets`)."},
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
    # The recipe (see LMIndexerConfig for each option); the defaults are the measured fixes of the quality issue.
    later_position_input: str = field(default="residual", metadata={"help": "raw or residual (h^t minus c^{t-1}'s vector)."})
    center_hidden: bool = field(
        default=False,
        metadata={"help": "Score h^t minus its corpus mean (measured at k-means time). Off by default: with the pooled "
                          "path h^1 is no longer one shared vector, and a centre fixed at k-means time goes stale while "
                          "the decoder trains (ablation: trained AMI(c1) 0.299 with it, 0.324 without)."},
    )
    pooled_hidden: bool = field(default=True, metadata={"help": "Add the mean-pooled encoder states to h^t."})
    contrastive_positive: str = field(default="dropout", metadata={"help": "self or dropout (SimCSE positive view)."})
    reconstructor_warmup_input: str = field(default="hidden", metadata={"help": "zeros or hidden (the frozen h^1)."})
    reconstructor_position_norm: bool = field(default=True, metadata={"help": "Layer-normalise the query positions."})
    reconstruction_vocabulary: str = field(default="batch", metadata={"help": "full or batch (in-batch softmax)."})
    reconstruction_weight: float = field(default=1.0)
    contrastive_weight: float = field(default=1.0)
    commitment_weight: float = field(default=1.0)
    # Two-stage methods (rqkmeans, rqvae, hkmeans): the sentence encoder and the quantiser's own settings.
    encoder: str | None = field(
        default=None, metadata={"help": "Sentence encoder of two-stage methods; unset: the offline all-MiniLM-L6-v2."}
    )
    pooling: str = field(default="mean", metadata={"help": "Two-stage methods: mean or cls pooling."})
    normalize_embeddings: bool = field(default=True, metadata={"help": "Two-stage methods: L2-normalise embeddings."})
    embedding_max_length: int = field(default=128, metadata={"help": "Two-stage methods: tokens per document."})
    embedding_cache_dir: str | None = field(
        default=None, metadata={"help": "Where embeddings are cached (safetensors); unset: <output_dir>/../.embeddings."}
    )
    method_settings: str | None = field(
        default=None, metadata={"help": 'JSON of the quantiser\'s settings, e.g. \'{"epochs": 20}\' for rqvae.'}
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
        default=None, metadata={"help": "Comma-separated fields joined into the text; unset: those the indexer was trained on."}
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
        metadata={"help": "When a group of documents sharing all learned codes outgrows the dedup position, grow it "
                          "(the config's dedup_size and the map's) instead of failing; existing IDs stay as they are."},
    )


def split_names(text: str | None) -> list[str]:
    """`"title, brand"` -> `["title", "brand"]`."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def number_list(text: str | None, cast):
    """`"64,32"` -> `[64, 32]`, `"64"` -> `64`, None -> None."""
    if text is None:
        return None
    values = [cast(part) for part in split_names(str(text))]
    return values[0] if len(values) == 1 else values


@dataclass
class IndexerTrainingArguments(TrainingArguments):
    """Defaults follow the paper where it reports them (AdamW eps 1e-6, batch 128, lr in {1e-3, 2e-3, 5e-3})."""

    output_dir: str = field(default="runs/indexer", metadata={"help": "Where checkpoints and the final indexer go."})
    adam_epsilon: float = field(default=1e-6, metadata={"help": "AdamW epsilon (the paper uses 1e-6)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "The collator needs the row column."})
    reconstructor_warmup_epochs: float = field(default=1.0, metadata={"help": "Epochs of reconstructor warm-up."})
    reconstructor_warmup_learning_rate: float = field(default=1e-3)
    reconstructor_warmup_batch_size: int = field(default=128)
    encoder_warmup_epochs: float = field(default=1.0, metadata={"help": "Epochs of encoder warm-up per position."})
    encoder_warmup_learning_rate: float = field(default=1e-3)
    encoder_warmup_batch_size: int = field(default=128)
    encoder_warmup_groups_by_prefix: bool = field(
        default=True,
        metadata={"help": "From t = 2 on, fill encoder warm-up batches with whole prefix groups, as straight-through "
                          "training does, so the prefix contrastive loss has partners right before k-means."},
    )
    codebook_epochs: float = field(
        default=3.0, metadata={"help": "Epochs of straight-through training per position (the paper: 30 in all)."}
    )
    codebook_learning_rate: float = field(default=1e-3)
    codebook_batch_size: int = field(default=128)
    head_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the reconstructor and codebooks when it should differ from the backbone's."},
    )
    encoder_trainable_layers: int | None = field(
        default=None,
        metadata={"help": "Train only the top N layers of the backbone's encoder; its lower layers and token embeddings "
                          "stay frozen (a CPU preset: they then cost a forward pass only). Default: all layers train."},
    )
    kmeans_iterations: int = field(default=25, metadata={"help": "faiss k-means iterations per codebook."})
    assignment_batch_size: int = field(default=256, metadata={"help": "Batch size of corpus-wide passes."})
    diagnostics_sample: int = field(default=512, metadata={"help": "Documents sampled for reconstruction F1."})
    resume: bool = field(default=False, metadata={"help": "Continue from the last finished stage in output_dir."})

    def phase_arguments(self, phase: Phase, output_dir: str, seed: int) -> TrainingArguments:
        """Plain `TrainingArguments` for one trained phase, inheriting every shared flag."""
        if phase not in TRAINED_PHASES:
            raise ValueError(f"{phase} runs no Trainer; trained phases are {[p.value for p in TRAINED_PHASES]}.")
        shared = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(TrainingArguments)
            if f.init and f.name not in PER_PHASE_FLAGS
        }
        return TrainingArguments(
            **shared,
            output_dir=output_dir,
            push_to_hub=False,  # phases never push; the indexer trainer pushes the finished indexer once
            num_train_epochs=getattr(self, f"{phase.value}_epochs"),
            learning_rate=getattr(self, f"{phase.value}_learning_rate"),
            per_device_train_batch_size=getattr(self, f"{phase.value}_batch_size"),
            seed=seed,
            data_seed=seed,
        )


@dataclass
class DiagnoseArguments:
    model: str = field(default="", metadata={"help": "Folder (or Hub repo) of a trained LMIndexer indexer."})
    corpus: str = field(default="", metadata={"help": "jsonl/csv/parquet file of documents to diagnose on."})
    id_field: str = field(default="item_id")
    text_fields: str | None = field(default=None, metadata={"help": "Default: the fields the indexer was trained on."})
    label_field: str | None = field(default=None, metadata={"help": "Labels for AMI (e.g. categories); optional."})
    label_level: int | None = field(default=None, metadata={"help": "For list labels: the level to use."})
    backbone: str | None = field(
        default=None, metadata={"help": "The untrained backbone to compare with; default: the one the config names."}
    )
    sample: int = field(default=2000, metadata={"help": "Documents sampled (seeded) from the corpus."})
    batch_size: int = field(default=64)
    seed: int = field(default=0)
    output: str = field(default="diagnosis.json", metadata={"help": "Where the JSON report is written."})
    revision: str | None = field(default=None, metadata={"help": "Model revision (commit SHA) when --model is a repo."})
