"""`ModelCardCallback`: fills `LMIndexerCardData` from the Trainer as training runs.

One callback can follow several trainers in turn (the indexer pipeline runs one per stage): the driver sets
`callback.stage` before each, and every stage gets its own hyperparameters and final loss in the card.
"""

from __future__ import annotations

from transformers import TrainerCallback

from .card_data import LMIndexerCardData


class ModelCardCallback(TrainerCallback):
    def __init__(self, card_data: LMIndexerCardData, stage: str = "fine-tuning", metric_prefix: str = "eval_"):
        self.card_data = card_data
        self.stage = stage
        self.metric_prefix = metric_prefix
        # Set by the driver before `evaluate`: which dataset and split the next evaluation reports on.
        self.eval_dataset_name: str | None = None
        self.eval_split: str = "validation"

    def on_train_begin(self, args, state, control, **kwargs):
        self.card_data.record_stage(self.stage, hyperparameters=training_hyperparameters(args, state))

    def on_train_end(self, args, state, control, **kwargs):
        losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
        metrics = {"steps": state.global_step}
        if losses:
            metrics["final_training_loss"] = float(losses[-1])
        self.card_data.record_stage(self.stage, metrics=metrics)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or self.eval_dataset_name is None:
            return
        values = {
            name[len(self.metric_prefix):]: value
            for name, value in metrics.items()
            if name.startswith(self.metric_prefix) and isinstance(value, (int, float)) and "@" in name
        }
        if values:
            self.card_data.add_evaluation(self.eval_dataset_name, self.eval_split, values)


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
