"""Trie-constrained decoding speed: our vectorised processor against HF's PrefixConstrainedLogitsProcessor fed
by a Python dict trie (the research code's and GENRE's approach), trie build time, and end-to-end `generate`.

    python benchmarks/bench_trie.py --output benchmarks/trie.json

1. Processor step: time of one call at batch 32 x 20 beams, at every decoding depth, for a 12k-ID and a
   1M-ID trie, vocabulary ~34k (a T5-sized text vocabulary plus the ID tokens). Reported per step (averaged
   over depths) with the ratio.
2. Trie build: seconds to build the tensor trie for 1M IDs (and the dict trie, for context).
3. End to end: a whole constrained `generate` call over an unconstrained one, t5-small-sized random model,
   batch 32 x 20 beams, on the 12k-ID trie.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import PrefixConstrainedLogitsProcessor, T5Config, T5ForConditionalGeneration

from lmindexer import SemanticIDTrie, TrieConstrainedLogitsProcessor

TEXT_VOCABULARY = 32100
EOS = 1


def random_ids(count: int, sizes: list[int], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    codes = torch.stack([torch.randint(0, size, (count * 2,), generator=generator) for size in sizes], dim=1)
    codes = torch.unique(codes, dim=0)[:count]
    offsets = torch.tensor([TEXT_VOCABULARY + sum(sizes[:i]) for i in range(len(sizes))])
    return codes + offsets


def dict_trie(sequences: torch.Tensor) -> dict:
    root: dict = {}
    for sequence in sequences.tolist():
        node = root
        for token in sequence:
            node = node.setdefault(token, {})
    return root


def dict_prefix_fn(root: dict, depth: int):
    def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
        node = root
        for token in sent.tolist()[1:]:
            if token == EOS:
                return [EOS]
            node = node.get(token)
            if node is None:
                return [EOS]
        return list(node) if node else [EOS]

    return allowed


def time_call(function, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def processor_step(sequences: torch.Tensor, vocabulary: int, rows: int, repeats: int, device: str) -> dict:
    depth = sequences.shape[1]
    start = time.perf_counter()
    trie = SemanticIDTrie(sequences).to(device)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    root = dict_trie(sequences)
    dict_build_s = time.perf_counter() - start
    ours = TrieConstrainedLogitsProcessor(trie, eos_token_id=EOS)
    theirs = PrefixConstrainedLogitsProcessor(dict_prefix_fn(root, depth), num_beams=20)
    generator = torch.Generator().manual_seed(0)
    picks = sequences[torch.randint(0, len(sequences), (rows,), generator=generator)]
    ours_times, theirs_times = [], []
    for level in range(depth + 1):
        input_ids = torch.cat([torch.zeros(rows, 1, dtype=torch.long), picks[:, :level]], dim=1).to(device)
        scores = torch.randn(rows, vocabulary, device=device)
        # Both get a fresh copy of the scores each call (ours writes in place). Copies are made, and outputs are
        # freed, outside the timed region: releasing an 84 MB tensor costs milliseconds of its own.
        copies = [scores.clone() for _ in range(repeats + 1)]
        kept = []
        ours(input_ids, copies.pop())  # warm-up
        ours_times.append(time_call(lambda: kept.append(_sync(ours(input_ids, copies.pop()), device)), repeats))
        kept.clear()
        cpu_scores = scores.cpu()
        their_repeats = max(1, repeats // 3)
        their_copies = [cpu_scores.clone() for _ in range(their_repeats)]
        theirs_times.append(time_call(lambda: kept.append(theirs(input_ids.cpu(), their_copies.pop())), their_repeats))
        kept.clear()
        a = torch.isfinite(ours(input_ids, scores.clone())).cpu()
        b = torch.isfinite(theirs(input_ids.cpu(), cpu_scores))
        assert torch.equal(a, b), f"allowed sets differ at depth {level}"
    ours_step, theirs_step = statistics.mean(ours_times), statistics.mean(theirs_times)
    return {
        "ids": len(sequences),
        "rows": rows,
        "vocabulary": vocabulary,
        "ours_step_ms": round(ours_step * 1e3, 3),
        "hf_dict_trie_step_ms": round(theirs_step * 1e3, 3),
        "speedup": round(theirs_step / ours_step, 1),
        "tensor_trie_build_s": round(build_s, 3),
        "dict_trie_build_s": round(dict_build_s, 3),
    }


def _sync(value, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return value


def end_to_end(sequences: torch.Tensor, vocabulary: int, repeats: int, device: str) -> dict:
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=vocabulary,
        d_model=512,
        d_kv=64,
        d_ff=2048,
        num_layers=6,
        num_heads=8,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=EOS,
    )
    model = T5ForConditionalGeneration(config).eval().to(device)
    inputs = torch.randint(3, 32000, (32, 32), device=device)
    processor = TrieConstrainedLogitsProcessor(SemanticIDTrie(sequences).to(device), eos_token_id=EOS)
    depth = sequences.shape[1]

    def run(constrained: bool):
        with torch.no_grad():
            out = model.generate(
                input_ids=inputs,
                num_beams=20,
                num_return_sequences=20,
                min_new_tokens=depth + 1,
                max_new_tokens=depth + 1,
                logits_processor=[processor] if constrained else None,
                early_stopping=False,
            )
        return _sync(out, device)

    run(True), run(False)
    constrained_times, free_times = [], []
    for _ in range(repeats):  # alternate, so machine noise hits both
        constrained_times.append(time_call(lambda: run(True), 1))
        free_times.append(time_call(lambda: run(False), 1))
    c, f = statistics.median(constrained_times), statistics.median(free_times)
    return {
        "model": "t5-small-sized random (60M)",
        "batch": "32 x 20 beams",
        "new_tokens": depth + 1,
        "constrained_s": round(c, 3),
        "unconstrained_s": round(f, 3),
        "ratio": round(c / f, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default="benchmarks/trie.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--skip-end-to-end", action="store_true")
    args = parser.parse_args()
    sizes = [256, 256, 256, 8]
    vocabulary = TEXT_VOCABULARY + sum(sizes)
    results = {
        "device": torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
        "command": "python " + " ".join(sys.argv),
        "processor_step": [],
    }
    for count in (12_000, 1_000_000):
        sequences = random_ids(count, sizes, seed=1)
        report = processor_step(sequences, vocabulary, rows=32 * 20, repeats=args.repeats, device=args.device)
        results["processor_step"].append(report)
        print(json.dumps(report), flush=True)
    if not args.skip_end_to_end:
        results["end_to_end"] = end_to_end(
            random_ids(12_000, sizes, seed=1), vocabulary, max(3, args.repeats // 3), args.device
        )
        print(json.dumps(results["end_to_end"]), flush=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
