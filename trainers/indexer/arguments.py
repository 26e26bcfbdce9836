"""`IndexerTrainingArguments`: every `TrainingArguments` flag, plus per-phase epochs, learning rates and batch sizes,
SetFit-style: `phase_arguments` derives each trained phase's `TrainingArguments` from them, so bf16, report_to,
gradient accumulation, deepspeed/fsdp and the rest apply to every phase.

What to index (`IndexArguments`) is in `lmindexer.trainers.id_methods.arguments`: it is shared by every ID method.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .stages import TRAINED_PHASES, Phase

# Set per phase by `phase_arguments`, never shared across phases.
PER_PHASE_FLAGS = (
    "output_dir",
    "push_to_hub",
    "num_train_epochs",
    "learning_rate",
    "per_device_train_batch_size",
    "seed",
    "data_seed",
)


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
        metadata={
            "help": "From t = 2 on, fill encoder warm-up batches with whole prefix groups, as straight-through "
            "training does, so the prefix contrastive loss has partners right before k-means."
        },
    )
    codebook_epochs: float = field(
        default=3.0, metadata={"help": "Epochs of straight-through training per position (the paper: 30 in all)."}
    )
    codebook_learning_rate: float = field(default=1e-3)
    codebook_batch_size: int = field(default=128)
    head_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the reconstructor and codebooks when it should differ from the backbone's."
        },
    )
    encoder_trainable_layers: int | None = field(
        default=None,
        metadata={
            "help": "Train only the top N layers of the backbone's encoder; its lower layers and token embeddings "
            "stay frozen (a CPU preset: they then cost a forward pass only). Default: all layers train."
        },
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
