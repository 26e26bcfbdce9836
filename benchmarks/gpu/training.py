"""Part 4 of the GPU suite: training throughput, written to `training.json`.

1. The causal recommender of the CPU preset (GPT-2, 2 layers, d_model 128, ID-only vocabulary) at batch 256: bf16
   autocast, AdamW, one step per batch of per-user training streams made by the training code
   (`causal_training_streams`, `CausalStreamCollator`) from synthetic users at Beauty's lengths. Examples (streams)
   and tokens per second.
2. The indexer at the paper's setting: T5-base with random weights, every layer trained, bf16 autocast, batch 128,
   AdamW (eps 1e-6, lr 1e-3), codebooks of 512, one straight-through step at position 2 (reconstruction,
   contrastive with its dropout view, commitment). Documents are random token ids of 64 tokens (about a Beauty title
   and brand) and of 512 (the paper's maximum length). Documents per second and peak GPU memory.

Each configuration runs warm-up steps, then timed steps (the device drained around each); the first and last losses
are recorded too.
"""

from __future__ import annotations

import gc

import torch
from suite_common import (
    BEAUTY_ITEMS,
    PAPER_LAYOUT,
    T5_TEXT_VOCABULARY,
    PartContext,
    history_lengths,
    random_causal_recommender,
    summary,
    synthetic_histories,
    synthetic_id_map,
    t5_config,
    timed,
)

FULL = {
    "rec_batch": 256,
    "indexer_batch": 128,
    "document_lengths": [64, 512],
    "codebook_size": 512,
    "warmup_steps": 2,
    "timed_steps": 5,
    "layout": PAPER_LAYOUT,
    "items": BEAUTY_ITEMS,
    "reserve_s": 25,
}
SMOKE = {
    "rec_batch": 8,
    "indexer_batch": 8,
    "document_lengths": [12],
    "codebook_size": 8,
    "warmup_steps": 1,
    "timed_steps": 2,
    "layout": [16, 16, 16],
    "items": 500,
    "reserve_s": 1,
}
# reserve_s: the longest one measurement may take; none is started with less of the part's time left.


def run(context: PartContext) -> None:
    settings = SMOKE if context.smoke else FULL
    results = context.result_file()
    results.set(
        "settings",
        {key: value for key, value in settings.items() if key != "layout"}
        | {"precision": "bf16 autocast, fp32 weights (as Trainer's --bf16)", "optimizer": "AdamW"},
    )
    results.set("recommender", recommender_throughput(context, settings))
    results.set("indexer", [])
    for length in settings["document_lengths"]:
        if context.time_left() < settings["reserve_s"]:
            results.append("indexer", {"document_tokens": length, "skipped": "part time limit"})
            continue
        try:
            results.append("indexer", indexer_throughput(context, settings, length))
        except torch.cuda.OutOfMemoryError as error:
            results.append("indexer", {"document_tokens": length, "error": f"out of memory: {str(error)[:300]}"})
        gc.collect()
        if context.device == "cuda":
            torch.cuda.empty_cache()
    results.set("status", "ok")


def train_steps(model, batches: list[dict], settings: dict, device: str, learning_rate: float, eps: float = 1e-8):
    """Warm-up steps, then timed steps, each one batch of `batches` (cycled). Returns step seconds and losses."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, eps=eps)
    model.train()
    losses, seconds = [], []

    def step(batch):
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    total = settings["warmup_steps"] + settings["timed_steps"]
    for index in range(total):
        batch = batches[index % len(batches)]
        elapsed, loss = timed(lambda batch=batch: step(batch), device)
        losses.append(float(loss))
        if index >= settings["warmup_steps"]:
            seconds.append(elapsed)
    return seconds, losses


def peak_memory(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def recommender_throughput(context: PartContext, settings: dict) -> dict:
    from lmindexer.trainers.downstream.id_streams import (
        CausalStreamCollator,
        causal_training_streams,
    )

    device = context.device
    model = random_causal_recommender(synthetic_id_map(settings["items"], settings["layout"])).to(device)
    id_map = model.id_map
    item_tokens = dict(zip(id_map.doc_ids, model.codes_to_tokens(id_map.semantic_ids).tolist()))
    batch_size = settings["rec_batch"]
    steps = settings["warmup_steps"] + settings["timed_steps"]
    # A user of test-history length h has h + 1 items; their training stream holds the h - 1 before validation.
    users = synthetic_histories(id_map.doc_ids, [h + 1 for h in history_lengths(batch_size * steps, seed=1)], seed=1)
    rows = causal_training_streams(users, item_tokens, model.tokenizer.bos_token_id, window_items=21)
    collate = CausalStreamCollator(model.tokenizer.pad_token_id)
    batches = [
        {key: value.to(device) for key, value in collate(rows[start : start + batch_size]).items()}
        for start in range(0, len(rows) - batch_size + 1, batch_size)
    ]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds, losses = train_steps(model, batches, settings, device, learning_rate=1e-3)
    tokens = [int(batch["attention_mask"].sum()) for batch in batches]
    step = summary(seconds)
    result = {
        "model": "GPT-2, 2 layers, d_model 128, 4 heads (the CPU preset), random weights",
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "batch_size": batch_size,
        "streams": "causal_training_streams of synthetic users at Beauty's lengths (window 21 items)",
        "mean_stream_tokens": round(sum(tokens) / (len(tokens) * batch_size), 1),
        "step_seconds": step,
        "examples_per_s": round(batch_size / step["median"], 1),
        "tokens_per_s": round(sum(tokens) / len(tokens) / step["median"], 1),
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
        "peak_memory_gib": peak_memory(device),
    }
    print(f"training: recommender {result['examples_per_s']} examples/s", flush=True)
    return result


class IndexerStep(torch.nn.Module):
    """The indexer's straight-through step at position 2 as a module that takes a batch dict (for `train_steps`)."""

    def __init__(self, indexer):
        super().__init__()
        self.indexer = indexer

    def forward(self, **batch):
        return self.indexer(**batch, position=2, mode="straight_through")


def indexer_throughput(context: PartContext, settings: dict, length: int) -> dict:
    from lmindexer import LMIndexerConfig, LMIndexerForSemanticID

    device = context.device
    backbone = t5_config(context.smoke, T5_TEXT_VOCABULARY if not context.smoke else 200)
    config = LMIndexerConfig(
        backbone_config=backbone.to_dict(),
        id_length=3,
        codebook_sizes=settings["codebook_size"],
        dedup_size=16,
        reconstructor_max_positions=max(length, 16),
    )
    torch.manual_seed(0)
    with torch.device(device):
        indexer = LMIndexerForSemanticID(config)
    batch_size = settings["indexer_batch"]
    generator = torch.Generator().manual_seed(length)
    batches = []
    for _ in range(2):
        input_ids = torch.randint(3, backbone.vocab_size, (batch_size, length), generator=generator)
        prefix = torch.randint(0, settings["codebook_size"], (batch_size, 1), generator=generator)
        batches.append(
            {
                "input_ids": input_ids.to(device),
                "attention_mask": torch.ones_like(input_ids).to(device),
                "prefix_codes": prefix.to(device),
            }
        )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_module = IndexerStep(indexer)
    seconds, losses = train_steps(step_module, batches, settings, device, learning_rate=1e-3, eps=1e-6)
    step = summary(seconds)
    result = {
        "model": ("T5-base" if not context.smoke else "tiny T5") + ", random weights, every layer trained",
        "parameters": sum(parameter.numel() for parameter in indexer.parameters()),
        "batch_size": batch_size,
        "document_tokens": length,
        "step_seconds": step,
        "documents_per_s": round(batch_size / step["median"], 1),
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
        "peak_memory_gib": peak_memory(device),
    }
    print(f"training: indexer at {length} tokens, {result['documents_per_s']} documents/s", flush=True)
    del indexer, step_module, batches
    return result
