"""Named presets of command-line defaults: `lmindexer finetune --preset cpu`, `lmindexer index --preset cpu|gpu`.

A preset only replaces the parser's defaults, so any flag given on the command line still wins. The chosen preset is
a field of the command's arguments (`preset`), recorded with the run's other settings.
"""

from __future__ import annotations

# The recommender that learns on two CPU cores (README, "Recommendation"): a 2-layer GPT-2 (d 128) over each user's
# stream of ID tokens, every item of a user trained in one pass, warm-up then cosine decay, the best epoch on a
# validation sample kept.
FINETUNE_CPU = {
    "task": "recommendation",
    "architecture": "causal",
    "history_format": "ids",
    "max_history": 20,
    "causal_model_type": "gpt2",
    "causal_layers": 2,
    "causal_hidden_size": 128,
    "causal_heads": 4,
    "per_device_train_batch_size": 128,
    "learning_rate": 3e-3,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "weight_decay": 0.0,
    "num_train_epochs": 20,
    "train_sampling_strategy": "group_by_length",
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "load_best_model_at_end": True,
    "metric_for_best_model": "recall@10",
    "greater_is_better": True,
    "validation_users": 1000,
    "eval_num_beams": 20,
    "eval_ks": "5,10",
    "logging_steps": 50,
}

# `benchmarks/run_bench_lmindexer.sh`: a pretrained sentence encoder as a bert2bert backbone with its encoder frozen
# (its states computed once), the decoder, cross-attention, codebooks and reconstructor trained, one epoch per phase.
INDEX_CPU = {
    "encoder_trainable_layers": 0,
    "learning_rate": 1e-4,
    "head_learning_rate": 1e-3,
    "reconstructor_warmup_learning_rate": 1e-3,
    "encoder_warmup_learning_rate": 1e-4,
    "codebook_learning_rate": 1e-4,
    "reconstructor_warmup_epochs": 1,
    "encoder_warmup_epochs": 1,
    "codebook_epochs": 1,
    "reconstructor_warmup_batch_size": 64,
    "encoder_warmup_batch_size": 64,
    "codebook_batch_size": 64,
    "save_strategy": "no",
    "logging_steps": 50,
}

# The paper's setting on a GPU: every layer trained, batch 128, lr 1e-3, bf16, more codebook epochs.
INDEX_GPU = {
    "learning_rate": 1e-3,
    "reconstructor_warmup_batch_size": 128,
    "encoder_warmup_batch_size": 128,
    "codebook_batch_size": 128,
    "codebook_epochs": 10,
    "bf16": True,
}

PRESETS: dict[str, dict[str, dict]] = {
    "finetune": {"cpu": FINETUNE_CPU},
    "bench rec": {"cpu": FINETUNE_CPU},
    "index": {"cpu": INDEX_CPU, "gpu": INDEX_GPU},
}


def preset_name(argv: list[str]) -> str | None:
    """The value of `--preset` in `argv` (`--preset X` or `--preset=X`), if any."""
    for index, word in enumerate(argv):
        if word == "--preset" and index + 1 < len(argv):
            return argv[index + 1]
        if word.startswith("--preset="):
            return word.split("=", 1)[1]
    return None


def preset_defaults(command: str, name: str) -> dict:
    """The defaults preset `name` sets for `command`, or a one-line error naming the presets there are."""
    known = PRESETS.get(command, {})
    if name not in known:
        offered = ", ".join(known) or "none"
        raise ValueError(f"--preset {name!r} is not a preset of `lmindexer {command}` (presets: {offered}).")
    return dict(known[name])
