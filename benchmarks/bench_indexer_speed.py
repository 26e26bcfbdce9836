"""Indexer training-step cost, assignment throughput, and assignment memory against corpus size.

    python benchmarks/bench_indexer_speed.py --output benchmarks/indexer_speed.json

1. One indexer training step (straight-through at t = 2: reconstruction, contrastive and commitment losses)
   over one plain seq2seq step (teacher-forced LM loss) of the same t5-small-sized backbone on the same batch.
   The two are timed alternately in one run, and the ratio of medians is reported.
2. Assignment throughput (documents/s) of the full greedy ID over a generated corpus.
3. Peak resident memory of assigning 10k and 100k documents, each in a fresh process: it should differ by
   little more than the ID arrays themselves.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import T5Config, T5ForConditionalGeneration

from lmindexer import LMIndexerConfig, LMIndexerForSemanticID


def t5_small_config(vocab_size: int = 32128) -> T5Config:
    return T5Config(
        vocab_size=vocab_size,
        d_model=512,
        d_kv=64,
        d_ff=2048,
        num_layers=6,
        num_heads=8,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )


def step_ratio(batch_size: int, length: int, repeats: int) -> dict:
    torch.manual_seed(0)
    backbone_config = t5_small_config()
    indexer = LMIndexerForSemanticID(
        LMIndexerConfig(backbone_config=backbone_config.to_dict(), id_length=3, codebook_sizes=512)
    )
    plain = T5ForConditionalGeneration(backbone_config)
    plain.load_state_dict(indexer.backbone.state_dict())
    input_ids = torch.randint(3, backbone_config.vocab_size, (batch_size, length))
    attention_mask = torch.ones_like(input_ids)
    prefix = torch.randint(0, 512, (batch_size, 1))
    prefix[: batch_size // 2] = 7  # half the batch shares a prefix, so the contrastive loss has pairs
    optimizers = {
        name: torch.optim.AdamW(model.parameters(), lr=1e-5) for name, model in (("indexer", indexer), ("plain", plain))
    }

    def indexer_step():
        loss = indexer(input_ids, attention_mask, prefix_codes=prefix, position=2, mode="straight_through").loss
        loss.backward()
        optimizers["indexer"].step()
        optimizers["indexer"].zero_grad()

    def plain_step():
        loss = plain(input_ids=input_ids, attention_mask=attention_mask, labels=input_ids).loss
        loss.backward()
        optimizers["plain"].step()
        optimizers["plain"].zero_grad()

    times = {"indexer": [], "plain": []}
    for step in range(repeats + 2):
        for name, function in (("indexer", indexer_step), ("plain", plain_step)):
            start = time.perf_counter()
            function()
            if step >= 2:  # the first two are warm-up
                times[name].append(time.perf_counter() - start)
    indexer_s, plain_s = statistics.median(times["indexer"]), statistics.median(times["plain"])
    return {
        "backbone": "t5-small-sized, random (60M)",
        "batch": f"{batch_size} x {length} tokens",
        "indexer_step_s": round(indexer_s, 4),
        "plain_seq2seq_step_s": round(plain_s, 4),
        "ratio_indexer_over_plain": round(indexer_s / plain_s, 3),
    }


def assignment_child(documents: int, batch_size: int) -> None:
    """Runs in a fresh process: assign `documents` generated documents and report time and peak memory."""
    from lmindexer.trainers.data.demo import generate_demo_corpus, tiny_t5_config, train_tokenizer
    from lmindexer.trainers.indexer.corpus_passes import assign_corpus

    torch.manual_seed(0)
    items = generate_demo_corpus(documents)
    texts = [f"{item['title']}; {item['brand']}" for item in items]
    tokenizer = train_tokenizer(texts[:5000])
    model = LMIndexerForSemanticID(
        LMIndexerConfig(backbone_config=tiny_t5_config(len(tokenizer)).to_dict(), id_length=3, codebook_sizes=256)
    ).eval()
    before = _resident_mb()
    _reset_peak()
    start = time.perf_counter()
    codes = assign_corpus(model, tokenizer, texts, batch_size=batch_size, max_length=64, progress=False)
    elapsed = time.perf_counter() - start
    peak = _peak_mb()
    print(
        json.dumps(
            {
                "documents": documents,
                "seconds": elapsed,
                "docs_per_s": documents / elapsed,
                "rss_before_mb": before,
                "peak_rss_during_assignment_mb": peak,
                "peak_growth_mb": peak - before,
                "codes_mb": codes.nbytes / 2**20,
            }
        )
    )


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _resident_mb() -> float:
    return _status_mb("VmRSS")


def _peak_mb() -> float:
    return _status_mb("VmHWM")


def _reset_peak() -> None:
    # Linux resets the peak-RSS mark (VmHWM) when "5" is written here; elsewhere the mark stays and the
    # figure is an upper bound.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default="benchmarks/indexer_speed.json")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--corpus-sizes", default="10000,100000")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        assignment_child(args.child, 256)
        return

    results = {
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
        "command": "python " + " ".join(sys.argv),
    }
    results["training_step"] = step_ratio(args.batch_size, args.length, args.repeats)
    print(json.dumps(results["training_step"], indent=2), flush=True)
    runs = []
    for size in [int(s) for s in args.corpus_sizes.split(",")]:
        output = subprocess.run(
            [sys.executable, __file__, "--child", str(size)], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(output.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), flush=True)
    results["assignment"] = {
        "model": "tiny T5 (d_model 64, 2+2 layers), 3 positions x 256 codes, batch 256, max 64 tokens",
        "runs": runs,
        "peak_growth_ratio_largest_over_smallest": round(
            max(runs[-1]["peak_growth_mb"], 1e-3) / max(runs[0]["peak_growth_mb"], 1e-3), 2
        ),
    }
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
