"""Part 2 of the GPU suite: the trie processor per decoding step inside HF `generate`, against HF's
`PrefixConstrainedLogitsProcessor` fed by a Python dict trie (the research code's and GENRE's way) and against
unconstrained `generate`, written to `trie_steps.json`.

Model: a t5-small-sized seq2seq with random weights and a T5 text vocabulary plus the ID tokens (what a seq2seq
retriever's `generate` runs). IDs: 12,101 (Beauty's item count) and 1,000,000 synthetic IDs of 3 x 256 codes + dedup.
Loads: batch 2 and 32 x 20 beams, and batch 2 x 256 beams. For each, in turn: unconstrained `generate` (EOS banned
until the ID's length, so it runs as many steps), ours, HF's. Per step it reports the processor's own time (CUDA
events inside `generate`, and the host time of the call), the whole `generate` per step, and each processor's cost
over the unconstrained run. The first call of each is a warm-up that also counts host synchronisations inside the
processor (`HostSyncCounter`); ours must make none. Ours and HF's must return the same sequences.
"""

from __future__ import annotations

import statistics

import torch
from suite_common import (
    BEAUTY_ITEMS,
    PAPER_LAYOUT,
    T5_TEXT_VOCABULARY,
    HostSyncCounter,
    PartContext,
    RegionTimer,
    synthetic_id_map,
    t5_config,
    timed,
)
from transformers import (
    LogitsProcessor,
    PrefixConstrainedLogitsProcessor,
    T5ForConditionalGeneration,
)

FULL = {
    "ids": [BEAUTY_ITEMS, 1_000_000],
    "loads": [(2, 20), (32, 20), (2, 256)],
    "layout": PAPER_LAYOUT,
    "text_vocabulary": T5_TEXT_VOCABULARY,
    "query_length": 32,
    "repeats": 5,
    "reserve_s": 20,
}
SMOKE = {
    "ids": [300, 3_000],
    "loads": [(2, 4), (4, 4), (1, 16)],
    "layout": [16, 16, 16],
    "text_vocabulary": 200,
    "query_length": 8,
    "repeats": 1,
    "reserve_s": 1,
}
# reserve_s: the longest one measurement may take; none is started with less of the part's time left.
ANCHOR = "STATIC reports 0.033 ms per decoding step at YouTube scale, measured outside HF generate"


class InstrumentedProcessor(LogitsProcessor):
    """Runs `inner` (or nothing, for the unconstrained baseline) under a region timer, and under a host-sync counter
    when one is set."""

    def __init__(self, inner, timer: RegionTimer, counter: HostSyncCounter | None = None):
        self.inner, self.timer, self.counter = inner, timer, counter

    def __call__(self, input_ids, scores):
        with self.timer:
            if self.counter is None:
                return scores if self.inner is None else self.inner(input_ids, scores)
            with self.counter:
                return scores if self.inner is None else self.inner(input_ids, scores)


def dict_trie(sequences: list[list[int]]) -> dict:
    root: dict = {}
    for sequence in sequences:
        node = root
        for token in sequence:
            node = node.setdefault(token, {})
    return root


def dict_prefix_function(root: dict, eos_token_id: int):
    """`prefix_allowed_tokens_fn` over a dict trie, as the research code writes it (decoder start token skipped)."""

    def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
        node = root
        for token in sent.tolist()[1:]:
            node = node.get(token) if token != eos_token_id else None
            if node is None:
                return [eos_token_id]
        return list(node) if node else [eos_token_id]

    return allowed


def run(context: PartContext) -> None:
    from lmindexer import SemanticIDTrie, TrieConstrainedLogitsProcessor

    settings = SMOKE if context.smoke else FULL
    device = context.device
    results = context.result_file()
    sizes = settings["layout"]
    results.set(
        "settings",
        {
            "model": "t5-small-sized seq2seq, random weights" if not context.smoke else "tiny T5, random weights",
            "ids": "uniformly random codes, layout " + " x ".join(map(str, sizes)) + " + dedup",
            "text_vocabulary": settings["text_vocabulary"],
            "query_tokens": settings["query_length"],
            "repeats": settings["repeats"],
            "anchor": ANCHOR,
        },
    )
    results.set("runs", [])
    maps = {count: synthetic_id_map(count, sizes, seed=1) for count in settings["ids"]}
    largest = max(sum(id_map.vocabulary_sizes) for id_map in maps.values())
    vocabulary = settings["text_vocabulary"] + largest
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(t5_config(context.smoke, vocabulary, size="small")).eval().to(device)
    eos = model.config.eos_token_id
    for count, id_map in maps.items():
        offsets = torch.tensor(
            [
                settings["text_vocabulary"] + sum(id_map.vocabulary_sizes[:p])
                for p in range(len(id_map.vocabulary_sizes))
            ]
        )
        sequences = id_map.semantic_ids + offsets
        build_seconds, trie = timed(lambda sequences=sequences: SemanticIDTrie(sequences).to(device), device)
        dict_seconds, root = timed(lambda sequences=sequences: dict_trie(sequences.tolist()), "cpu")
        depth = trie.depth
        processors = {
            "unconstrained": None,
            "ours": TrieConstrainedLogitsProcessor(trie, eos_token_id=eos, raise_on_dead_end=False),
            "hf_dict_trie": None,  # made per load: it needs the beam count
        }
        for batch, beams in settings["loads"]:
            if context.time_left() < settings["reserve_s"]:
                results.append("runs", {"ids": count, "batch": batch, "beams": beams, "skipped": "part time limit"})
                continue
            processors["hf_dict_trie"] = PrefixConstrainedLogitsProcessor(dict_prefix_function(root, eos), beams)
            generator = torch.Generator().manual_seed(batch * 1000 + beams)
            inputs = torch.randint(
                3, settings["text_vocabulary"], (batch, settings["query_length"]), generator=generator
            )
            entry = measure_load(model, inputs.to(device), processors, depth, beams, settings["repeats"], device)
            entry.update(
                ids=count,
                batch=batch,
                beams=beams,
                rows=batch * beams,
                vocabulary=vocabulary,
                tensor_trie_build_s=round(build_seconds, 3),
                dict_trie_build_s=round(dict_seconds, 3),
            )
            results.append("runs", entry)
            print(
                f"trie_steps: {count} IDs, {batch} x {beams}: ours {entry['ours']['processor_ms_per_step']} ms/step, "
                f"HF {entry['hf_dict_trie']['processor_ms_per_step']} ms/step",
                flush=True,
            )
    results.set("status", "ok")


def measure_load(model, inputs, processors: dict, depth: int, beams: int, repeats: int, device: str) -> dict:
    new_tokens = depth + 1  # the ID tokens, then EOS

    def generate(name: str, timer: RegionTimer, counter: HostSyncCounter | None = None):
        unconstrained = processors[name] is None
        with torch.no_grad():
            return model.generate(
                input_ids=inputs,
                attention_mask=torch.ones_like(inputs),
                num_beams=beams,
                num_return_sequences=beams,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens if unconstrained else None,
                logits_processor=[InstrumentedProcessor(processors[name], timer, counter)],
            )

    entry, outputs = {}, {}
    for name in processors:  # warm-up, counting host synchronisations inside the processor
        counter = HostSyncCounter(device)
        timer = RegionTimer(device)
        outputs[name] = generate(name, timer, counter)
        entry[name] = {
            "host_reads_per_step": round(sum(counter.reads.values()) / len(timer.host_seconds), 2),
            "cuda_syncs_per_step": round(counter.cuda_syncs / len(timer.host_seconds), 2),
            "read_kinds": dict(counter.reads),
        }
    samples = {name: {"generate": [], "device": [], "host": [], "steps": 0} for name in processors}
    for _ in range(repeats):  # interleaved, so that drift hits every variant alike
        for name in processors:
            timer = RegionTimer(device)
            seconds, _ = timed(lambda name=name, timer=timer: generate(name, timer), device)
            samples[name]["generate"].append(seconds)
            samples[name]["device"] += timer.device_seconds()
            samples[name]["host"] += timer.host_seconds
            samples[name]["steps"] = len(timer.host_seconds)
    free = statistics.median(samples["unconstrained"]["generate"])
    for name, sample in samples.items():
        steps = sample["steps"]
        generate_s = statistics.median(sample["generate"])
        entry[name].update(
            steps=steps,
            generate_ms=round(generate_s * 1e3, 3),
            generate_ms_per_step=round(generate_s * 1e3 / steps, 3),
            processor_ms_per_step=round(statistics.mean(sample["device"]) * 1e3, 4),
            processor_host_ms_per_step=round(statistics.mean(sample["host"]) * 1e3, 4),
            over_unconstrained_ms_per_step=round((generate_s - free) * 1e3 / steps, 3),
        )
    entry["ours_equals_hf_sequences"] = bool(torch.equal(outputs["ours"].cpu(), outputs["hf_dict_trie"].cpu()))
    entry["hf_over_ours_processor"] = round(
        entry["hf_dict_trie"]["processor_ms_per_step"] / max(entry["ours"]["processor_ms_per_step"], 1e-9), 1
    )
    return entry
