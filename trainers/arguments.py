"""Training arguments: every `TrainingArguments` flag, plus per-stage epochs, learning rates and batch sizes.

Stage settings follow SetFit's pattern of one argument set per phase: the pipeline derives each stage's
`TrainingArguments` from these with `stage_arguments`, so bf16, report_to, gradient accumulation,
deepspeed/fsdp and the rest apply to every stage.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from transformers import TrainingArguments

STAGES = ("reconstructor_warmup", "encoder_warmup", "codebook")


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
    codebook_epochs: float = field(
        default=3.0, metadata={"help": "Epochs of straight-through training per position (the paper: 30 in all)."}
    )
    codebook_learning_rate: float = field(default=1e-3)
    codebook_batch_size: int = field(default=128)
    head_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the reconstructor and codebooks when it should differ from the backbone's."},
    )
    kmeans_iterations: int = field(default=25, metadata={"help": "faiss k-means iterations per codebook."})
    assignment_batch_size: int = field(default=256, metadata={"help": "Batch size of corpus-wide passes."})
    diagnostics_sample: int = field(default=512, metadata={"help": "Documents sampled for reconstruction F1."})
    resume: bool = field(default=False, metadata={"help": "Continue from the last finished stage in output_dir."})

    def stage_arguments(self, stage: str, output_dir: str, seed: int) -> TrainingArguments:
        """Plain `TrainingArguments` for one stage, inheriting every shared flag."""
        if stage not in STAGES:
            raise ValueError(f"Unknown stage {stage!r}; stages are {STAGES}.")
        shared = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(TrainingArguments)
            if f.init and f.name not in ("output_dir", "push_to_hub", "num_train_epochs", "learning_rate", "per_device_train_batch_size", "seed", "data_seed")
        }
        return TrainingArguments(
            **shared,
            output_dir=output_dir,
            push_to_hub=False,  # stages never push; the pipeline pushes the finished indexer once
            num_train_epochs=getattr(self, f"{stage}_epochs"),
            learning_rate=getattr(self, f"{stage}_learning_rate"),
            per_device_train_batch_size=getattr(self, f"{stage}_batch_size"),
            seed=seed,
            data_seed=seed,
        )
