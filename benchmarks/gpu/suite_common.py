"""Pieces shared by the parts of the GPU suite (`run.sh`): the run context, result files written as a part goes, the
environment record, timers, a host-synchronisation counter, and synthetic ID maps, histories and models.

Everything here imports only what the GPU machine has (torch, transformers, the package's modeling code and its
`trainers.downstream` modules, which import `datasets` only inside functions the suite does not call).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

# The test-time history of every Amazon Beauty user in `sequences.jsonl` (22,363 users): all items but the last,
# at most 20 (the CPU preset's `max_history`), counted by length. The data does not travel to the GPU machine;
# these counts let the suite decode histories of the real lengths with synthetic items.
BEAUTY_TEST_HISTORY_LENGTHS = {
    4: 7162,
    5: 4221,
    6: 2680,
    7: 1811,
    8: 1366,
    9: 881,
    10: 695,
    11: 558,
    12: 439,
    13: 361,
    14: 262,
    15: 207,
    16: 213,
    17: 141,
    18: 118,
    19: 112,
    20: 1136,
}
BEAUTY_ITEMS = 12_101
PAPER_LAYOUT = [256, 256, 256]  # 3 learned positions of 256 codes, plus the dedup position
T5_TEXT_VOCABULARY = 32_100


@dataclass
class PartContext:
    """What a part needs to know: where to write, whether this is the CPU smoke run, its device and its deadline."""

    name: str
    out_dir: Path
    smoke: bool
    command: str
    deadline: float  # time.monotonic() after which the part should start nothing new
    rec_model: str | None = None
    search_model: str | None = None
    device: str = field(init=False)

    def __post_init__(self):
        self.device = "cpu" if self.smoke else "cuda"

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def result_file(self) -> ResultFile:
        return ResultFile(
            self.out_dir / f"{self.name}.json",
            {
                "group": self.name,
                "smoke": self.smoke,
                "command": self.command,
                "environment": environment(self.device),
                "status": "running",
            },
        )


class ResultFile:
    """A part's JSON, rewritten (atomically) after every figure, so that a part stopped at its time limit keeps what
    it measured."""

    def __init__(self, path: Path, header: dict):
        self.path = path
        self.data = dict(header)
        self.save()

    def set(self, key: str, value) -> None:
        self.data[key] = value
        self.save()

    def append(self, key: str, entry: dict) -> None:
        self.data.setdefault(key, []).append(entry)
        self.save()

    def save(self) -> None:
        temporary = self.path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(temporary, self.path)


def environment(device: str) -> dict:
    import transformers

    info = {
        "device": f"{platform.machine()} CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        info.update(
            device=torch.cuda.get_device_name(0),
            gpu_memory_gib=round(properties.total_memory / 2**30, 1),
            multiprocessors=properties.multi_processor_count,
        )
    return info


# --------------------------------------------------------------------------------------------------------- timing
def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(function, device: str) -> tuple[float, object]:
    """Wall seconds of `function()` with the device drained before and after, and its result."""
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return time.perf_counter() - start, result


def summary(samples: list[float], scale: float = 1.0, digits: int = 4) -> dict:
    return {
        "median": round(statistics.median(samples) * scale, digits),
        "min": round(min(samples) * scale, digits),
        "max": round(max(samples) * scale, digits),
        "n": len(samples),
    }


class RegionTimer:
    """Times repeated calls of one region inside another loop (a logits processor inside `generate`) without
    synchronising: CUDA events on the GPU (read after the loop), `perf_counter` on the host everywhere."""

    def __init__(self, device: str):
        self.device = device
        self.events: list[tuple] = []
        self.host_seconds: list[float] = []

    def __enter__(self):
        self._host_start = time.perf_counter()
        if self.device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            self.events.append((start, end))
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            self.events[-1][1].record()
        self.host_seconds.append(time.perf_counter() - self._host_start)
        return False

    def device_seconds(self) -> list[float]:
        """Per region, device-side seconds (CUDA events; on the CPU the host seconds, which are the same thing)."""
        if self.device != "cuda":
            return list(self.host_seconds)
        torch.cuda.synchronize()
        return [start.elapsed_time(end) / 1e3 for start, end in self.events]


class HostSyncCounter:
    """Counts what makes the host wait for the device inside a block.

    `reads`: Python-level reads of tensor values (`item`, `tolist`, `bool`, `int`, `float`, `numpy`, `cpu`, `nonzero`),
    counted on any device, so that the CPU smoke run checks the same property. `cuda_syncs`: the synchronisations
    CUDA itself reports (`torch.cuda.set_sync_debug_mode("warn")`, GPU only), which also catches reads made inside
    torch (a data-dependent output size, a blocking copy).
    """

    READS = ("item", "tolist", "__bool__", "__int__", "__float__", "numpy", "cpu", "nonzero")

    def __init__(self, device: str):
        self.device = device
        self.reads: Counter = Counter()
        self.cuda_syncs = 0

    def __enter__(self):
        self._saved = {name: torch.Tensor.__dict__.get(name) for name in self.READS}
        for name in self.READS:
            setattr(torch.Tensor, name, self._counting(name, getattr(torch.Tensor, name)))
        if self.device == "cuda":
            self._warnings = warnings.catch_warnings(record=True)
            self._caught = self._warnings.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def _counting(self, name, method):
        counter = self.reads

        def counted(tensor, *args, **kwargs):
            counter[name] += 1
            return method(tensor, *args, **kwargs)

        return counted

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.set_sync_debug_mode(0)
            self.cuda_syncs += sum("synchroniz" in str(warning.message) for warning in self._caught)
            self._warnings.__exit__(*exc)
        for name, original in self._saved.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)
        return False

    @property
    def total(self) -> int:
        return sum(self.reads.values()) + self.cuda_syncs


# ------------------------------------------------------------------------------------------------ synthetic data
def synthetic_id_map(count: int, codebook_sizes: list[int], seed: int = 0):
    """A `SemanticIDMap` of `count` items (`item0`, `item1`, ...) with uniformly random learned codes; the dedup
    position is made as wide as the largest group of items sharing all learned codes."""
    from lmindexer import SemanticIDMap

    generator = torch.Generator().manual_seed(seed)
    codes = torch.stack([torch.randint(0, size, (count,), generator=generator) for size in codebook_sizes], dim=1)
    dedup_size = int(torch.unique(codes, dim=0, return_counts=True)[1].max())
    return SemanticIDMap.from_codes([f"item{index}" for index in range(count)], codes, codebook_sizes, dedup_size)


def history_lengths(users: int, seed: int = 0) -> list[int]:
    """History lengths of `users` users: Beauty's exact counts for 22,363 users, otherwise drawn in its proportions."""
    if users == sum(BEAUTY_TEST_HISTORY_LENGTHS.values()):
        return [length for length, count in BEAUTY_TEST_HISTORY_LENGTHS.items() for _ in range(count)]
    lengths = torch.tensor(list(BEAUTY_TEST_HISTORY_LENGTHS))
    weights = torch.tensor(list(BEAUTY_TEST_HISTORY_LENGTHS.values()), dtype=torch.float)
    picks = torch.multinomial(weights, users, replacement=True, generator=torch.Generator().manual_seed(seed))
    return lengths[picks].tolist()


def synthetic_histories(doc_ids: list[str], lengths: list[int], seed: int = 0) -> list[list[str]]:
    """One history per length, of items drawn uniformly from `doc_ids`."""
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(doc_ids), (sum(lengths),), generator=generator).tolist()
    histories, start = [], 0
    for length in lengths:
        histories.append([doc_ids[index] for index in picks[start : start + length]])
        start += length
    return histories


# ------------------------------------------------------------------------------------------------------- models
def t5_config(smoke: bool, vocab_size: int, size: str = "base"):
    """T5-base (the paper's backbone) or t5-small-sized; a tiny T5 in the smoke run. Random weights."""
    from transformers import T5Config

    dims = {"base": (768, 3072, 12, 12), "small": (512, 2048, 6, 8), "tiny": (32, 64, 1, 4)}["tiny" if smoke else size]
    d_model, d_ff, layers, heads = dims
    return T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_model // heads,
        d_ff=d_ff,
        num_layers=layers,
        num_heads=heads,
        dropout_rate=0.1,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )


def random_seq2seq_retriever(id_map, smoke: bool, text_vocabulary: int = T5_TEXT_VOCABULARY, device: str = "cpu"):
    """A seq2seq retriever with random T5 weights (T5-base, tiny in the smoke run) over `id_map`: ID tokens after
    `text_vocabulary` text tokens, as `from_backbone_and_map` lays them out, with no tokenizer needed (the suite
    feeds token ids)."""
    from lmindexer import LMIndexerForGenerativeRetrieval, LMIndexerRetrievalConfig

    sizes = id_map.vocabulary_sizes
    offsets = [text_vocabulary + sum(sizes[:position]) for position in range(len(sizes))]
    backbone = t5_config(smoke, text_vocabulary + sum(sizes))
    config = LMIndexerRetrievalConfig(
        backbone_config=backbone.to_dict(),
        id_length=id_map.id_length,
        codebook_sizes=id_map.codebook_sizes,
        dedup_size=id_map.dedup_size,
        id_map_run_id=id_map.run_id,
        id_token_offsets=offsets,
        id_token_init="model",
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LMIndexerForGenerativeRetrieval(config)
    model.id_map = id_map
    model._set_generation_defaults()
    model.install_id_token_scoring()
    return model.eval()


def random_causal_recommender(id_map, max_history: int = 20):
    """The causal recommender of `lmindexer finetune --preset cpu` (GPT-2, 2 layers, d_model 128, 4 heads, ID-only
    vocabulary), built by the preset's own code, with fresh weights."""
    from lmindexer import LMIndexerForGenerativeRetrieval
    from lmindexer.trainers.downstream.causal_recommender import (
        CausalModelArguments,
        causal_backbone_config,
    )
    from lmindexer.trainers.downstream.id_streams import id_vocabulary_tokenizer

    tokenizer = id_vocabulary_tokenizer(id_map.vocabulary_sizes)
    longest = 1 + (max_history + 1) * len(id_map.vocabulary_sizes)
    torch.manual_seed(0)
    return LMIndexerForGenerativeRetrieval.from_causal_config(
        causal_backbone_config(CausalModelArguments(), longest),
        tokenizer,
        id_map,
        history_max_items=max_history,
        max_query_length=longest,
    ).eval()


def load_trained(path: str, device: str):
    """A saved retriever folder (e.g. `runs/rec-causal/beauty`), loaded as users load it, with its tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json; give a model folder written by `lmindexer finetune`.")
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval().to(device)
    model.tokenizer = AutoTokenizer.from_pretrained(folder)
    return model
