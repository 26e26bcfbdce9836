"""Training and decoding throughput of the recommender designs, side by side in one process (one thread by default).

Designs, all on the same ID map (e.g. RQ-KMeans 3 x 256 + dedup) and the same users:
- `causal-ids`: the CPU preset, a 2-layer GPT-2 (d 128) over each user's stream of ID tokens, ID-only vocabulary;
  one forward pass trains every item of a user;
- `seq2seq-ids`: TIGER's shape, a small T5 (2 + 2 layers, d 128), the ID history in, the next ID out, one
  (history, next item) example per target, ID-only vocabulary;
- `seq2seq-text` (with `--text_backbone`): the paper's input, the items' titles joined, into the T5 of
  `benchmarks/make_rec_backbone.py` (BPE on the titles), with or without `--output_vocabulary ids`.

Training: targets (items predicted) per second and tokens per second over `--train_steps` steps at
`--batch_size`, batches drawn at random (length-grouped for the causal streams, as the preset trains). Decoding: users
per second with 20 beams under the trie at batch 1 / 32 / 128. Weights are random unless `--causal_model` names a
trained folder: the cost of a step does not depend on them.

    python benchmarks/bench_rec_throughput.py --data ../shared/data/amazon-beauty \
        --indexer runs/ids/beauty/rqkmeans3-seed0 --text_backbone runs/rec-t5 --output benchmarks/rec/throughput_beauty.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import random
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

from lmindexer import LMIndexerForGenerativeRetrieval, SemanticIDMap
from lmindexer.modeling_lmindexer.history import HistoryFormat
from lmindexer.trainers.bench.results import command_line
from lmindexer.trainers.data.corpus import load_records
from lmindexer.trainers.downstream.causal_recommender import (
    CausalModelArguments,
    build_causal_recommender,
    item_token_ids,
)
from lmindexer.trainers.downstream.collators import RetrievalCollator
from lmindexer.trainers.downstream.id_streams import (
    CausalStreamCollator,
    causal_training_streams,
    id_vocabulary_tokenizer,
)


def small_t5(vocabulary: int, pad: int, eos: int) -> T5ForConditionalGeneration:
    return T5ForConditionalGeneration(
        T5Config(
            vocab_size=vocabulary,
            d_model=128,
            d_kv=32,
            d_ff=512,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            dropout_rate=0.1,
            decoder_start_token_id=pad,
            pad_token_id=pad,
            eos_token_id=eos,
        )
    )


def time_training(model, batches, collate, depth: int) -> tuple[float, int, int]:
    """Seconds, targets (items predicted) and tokens of one optimiser step per batch; a causal stream's targets are
    its labelled tokens over the ID length `depth`, a seq2seq example has one."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    targets = tokens = 0
    started = time.perf_counter()
    for features in batches:
        batch = collate(features)
        loss = model(**batch).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        tokens += int(batch["attention_mask"].sum()) + int((batch["labels"] != -100).sum())
        if "target_doc_id" in features[0]:
            targets += len(features)
        else:
            targets += sum(sum(label != -100 for label in feature["labels"]) for feature in features) // depth
    return time.perf_counter() - started, targets, tokens


def time_decoding(model, texts: list[str], tokenizer, batch_size: int, users: int) -> float:
    model.eval()
    chosen = texts[:users]
    started = time.perf_counter()
    model.retrieve(chosen, tokenizer=tokenizer, top_k=10, num_beams=20, batch_size=batch_size)
    return len(chosen) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--indexer", required=True, help="Indexer folder whose ID map every design uses.")
    parser.add_argument(
        "--causal_model", default=None, help="A trained causal recommender folder (else random weights)."
    )
    parser.add_argument(
        "--text_backbone", default=None, help="make_rec_backbone.py folder: adds the text-history design."
    )
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--train_steps", type=int, default=20)
    parser.add_argument("--decode_users", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = random.Random(0)
    folder = Path(args.data)
    sequences = [[str(item) for item in user["items"]] for user in load_records(folder / "sequences.jsonl")]
    id_map = SemanticIDMap.load(Path(args.indexer) / "semantic_id_map.safetensors", allow_foreign_map=True)
    titles = {str(item["item_id"]): item.get("title") or "" for item in load_records(folder / "items.jsonl")}
    results = {}

    # causal-ids
    if args.causal_model:
        causal = LMIndexerForGenerativeRetrieval.from_pretrained(args.causal_model)
        causal.tokenizer = AutoTokenizer.from_pretrained(args.causal_model)
    else:
        causal = build_causal_recommender(args.indexer, CausalModelArguments(), 20)
    item_tokens = item_token_ids(causal, id_map.doc_ids)
    streams = causal_training_streams(sequences, item_tokens, causal.tokenizer.bos_token_id, window_items=21)
    depth = len(id_map.vocabulary_sizes)
    ordered = sorted(streams, key=lambda row: len(row["input_ids"]))
    # Length-grouped batches, as `--train_sampling_strategy group_by_length` makes them; a random sample of them.
    grouped = [ordered[start : start + args.batch_size] for start in range(0, len(ordered), args.batch_size)]
    seconds, targets, tokens = time_training(
        causal, rng.sample(grouped, args.train_steps), CausalStreamCollator(0), depth
    )
    histories = [causal.render_history(items[-21:-1]) for items in sequences if len(items) >= 3]
    results["causal-ids"] = {
        "parameters": sum(p.numel() for p in causal.parameters()),
        "train_targets_per_s": targets / seconds,
        "train_tokens_per_s": tokens / seconds,
        "train_s_per_step": seconds / args.train_steps,
        "decode_users_per_s": {
            str(size): time_decoding(causal, histories, causal.tokenizer, size, args.decode_users if size > 1 else 32)
            for size in (1, 32, 128)
        },
        "weights": "trained" if args.causal_model else "random",
    }
    print(json.dumps({"causal-ids": results["causal-ids"]}), flush=True)

    # seq2seq-ids: TIGER's shape on the same ID-only vocabulary
    tokenizer = id_vocabulary_tokenizer(id_map.vocabulary_sizes)
    seq2seq = LMIndexerForGenerativeRetrieval.from_backbone_and_map(
        small_t5(len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id), tokenizer, id_map
    )
    history = HistoryFormat(max_history=20, separator="", history_format="ids")
    for name, value in history.config_fields().items():
        setattr(seq2seq.config, name, value)
    pairs = [
        {"input_text": history.render(items[:target], titles, id_map.semantic_id), "target_doc_id": items[target]}
        for items in sequences
        for target in range(1, len(items) - 2)
    ]
    batches = [rng.sample(pairs, args.batch_size) for _ in range(args.train_steps)]
    seconds, targets, tokens = time_training(seq2seq, batches, RetrievalCollator(tokenizer, seq2seq, 128), depth)
    results["seq2seq-ids"] = {
        "parameters": sum(p.numel() for p in seq2seq.parameters()),
        "train_targets_per_s": targets / seconds,
        "train_tokens_per_s": tokens / seconds,
        "train_s_per_step": seconds / args.train_steps,
        "decode_users_per_s": {
            str(size): time_decoding(seq2seq, histories, tokenizer, size, args.decode_users if size > 1 else 32)
            for size in (1, 32, 128)
        },
        "weights": "random",
    }
    print(json.dumps({"seq2seq-ids": results["seq2seq-ids"]}), flush=True)

    # seq2seq-text: the paper's input, with and without the ID-only output softmax
    if args.text_backbone:
        text_tokenizer = AutoTokenizer.from_pretrained(args.text_backbone)
        text_history = HistoryFormat(max_history=20, history_format="text")
        text_pairs = [
            {"input_text": text_history.render(items[:target], titles), "target_doc_id": items[target]}
            for items in sequences
            for target in range(1, len(items) - 2)
        ]
        text_batches = [rng.sample(text_pairs, args.batch_size) for _ in range(args.train_steps)]
        text_queries = [text_history.render(items[-21:-1], titles) for items in sequences[: args.decode_users]]
        for output_vocabulary in ("all", "ids"):
            tokenizer_copy = copy.deepcopy(text_tokenizer)
            model = LMIndexerForGenerativeRetrieval.from_backbone_and_map(
                T5ForConditionalGeneration.from_pretrained(args.text_backbone), tokenizer_copy, id_map
            )
            for name, value in text_history.config_fields().items():
                setattr(model.config, name, value)
            model.config.max_query_length = 512
            model.config.output_vocabulary = output_vocabulary
            model.install_id_token_scoring()
            seconds, targets, tokens = time_training(
                model, text_batches, RetrievalCollator(tokenizer_copy, model, 512), depth
            )
            results[f"seq2seq-text ({output_vocabulary} outputs)"] = {
                "parameters": sum(p.numel() for p in model.parameters()),
                "train_targets_per_s": targets / seconds,
                "train_tokens_per_s": tokens / seconds,
                "train_s_per_step": seconds / args.train_steps,
                "decode_users_per_s": {"32": time_decoding(model, text_queries, tokenizer_copy, 32, args.decode_users)},
                "weights": "random",
            }
            print(json.dumps({output_vocabulary: results[f"seq2seq-text ({output_vocabulary} outputs)"]}), flush=True)

    output = {
        "command": command_line(),
        "machine": f"{platform.machine()}, {args.threads} torch thread(s)",
        "batch_size": args.batch_size,
        "train_steps": args.train_steps,
        "num_beams": 20,
        "designs": results,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
