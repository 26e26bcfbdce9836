"""Save/load time of a large SemanticIDMap in both formats.

python benchmarks/bench_id_map.py --documents 1000000 --output benchmarks/id_map.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from lmindexer import SemanticIDMap


def timed(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--codebook-size", type=int, default=512)
    parser.add_argument("--id-length", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="benchmarks/id_map.json")
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, args.codebook_size, (args.documents, args.id_length), generator=generator)
    doc_ids = [f"doc-{index:08d}" for index in range(args.documents)]
    start = time.perf_counter()
    id_map = SemanticIDMap.from_codes(doc_ids, codes, [args.codebook_size] * args.id_length, dedup_size=64)
    results = {"documents": args.documents, "build_s": round(time.perf_counter() - start, 3), "formats": {}}
    with tempfile.TemporaryDirectory() as folder:
        for suffix in (".safetensors", ".json"):
            path = Path(folder) / f"map{suffix}"
            save_s = timed(lambda: id_map.save(path), args.repeats)
            load_s = timed(lambda: SemanticIDMap.load(path), args.repeats)
            assert SemanticIDMap.load(path) == id_map
            results["formats"][suffix] = {
                "save_s": round(save_s, 3),
                "load_s": round(load_s, 3),
                "size_mb": round(path.stat().st_size / 2**20, 1),
            }
    start = time.perf_counter()
    id_map._sorted_keys = None  # time the index build as well
    rows = id_map.rows_of(id_map.semantic_ids[:100_000])
    results["lookup_100k_semantic_ids_s"] = round(time.perf_counter() - start, 3)
    assert torch.equal(rows, torch.arange(100_000))
    results["machine"] = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, CPU"
    results["command"] = f"python benchmarks/bench_id_map.py --documents {args.documents} --output {args.output}"
    print(json.dumps(results, indent=2))
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
