"""`ModelCardCallback`: fills `LMIndexerCardData` from the Trainer as training runs.

One callback can follow several trainers in turn (the indexer pipeline runs one per stage): the driver sets
`callback.stage` before each, and every stage gets its own hyperparameters and final loss in the card.
"""

from __future__ import annotations

from transformers import TrainerCallback

from .card_data import LMIndexerCardData

# `Trainer.evaluate(metric_key_prefix=...)` prefixes -> the split named in the card.
SPLIT_OF_PREFIX = {"eval": "validation", "test": "test"}


class ModelCardCallback(TrainerCallback):
    """Records each stage's hyperparameters and final loss, and ranking metrics (`eval_recall@10`, ...) per split."""

    def __init__(self, card_data: LMIndexerCardData, stage: str = "fine-tuning"):
        self.card_data = card_data
        self.stage = stage

    def on_train_begin(self, args, state, control, **kwargs):
        self.card_data.record_stage(self.stage, hyperparameters=training_hyperparameters(args, state))

    def on_train_end(self, args, state, control, **kwargs):
        losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
        metrics = {"steps": state.global_step}
        if losses:
            metrics["final_training_loss"] = float(losses[-1])
        self.card_data.record_stage(self.stage, metrics=metrics)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        by_split: dict[str, dict] = {}
        for name, value in (metrics or {}).items():
            prefix, _, metric = name.partition("_")
            if "@" in metric and isinstance(value, (int, float)):
                by_split.setdefault(SPLIT_OF_PREFIX.get(prefix, prefix), {})[metric] = value
        dataset = self.card_data.datasets[0] if self.card_data.datasets else "evaluation data"
        for split, values in by_split.items():
            self.card_data.add_evaluation(dataset, split, values)


def training_hyperparameters(args, state=None) -> dict:
    """The settings of a `TrainingArguments` that a reader needs to reproduce a stage."""
    world = max(getattr(args, "world_size", 1), 1)
    values = {
        "learning_rate": args.learning_rate,
        "per_device_batch_size": args.per_device_train_batch_size,
        "effective_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * world,
        "optimizer": str(getattr(args.optim, "value", args.optim)),
        "lr_scheduler": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
    }
    if args.max_steps and args.max_steps > 0:
        values["max_steps"] = args.max_steps
    else:
        values["epochs"] = args.num_train_epochs
    if args.warmup_steps:
        values["warmup"] = f"{args.warmup_steps} steps"
    elif getattr(args, "warmup_ratio", 0):
        values["warmup"] = f"{args.warmup_ratio:g} of steps"
    return values
