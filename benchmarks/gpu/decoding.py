"""Part 3 of the GPU suite: decoding whole test sets, written to `decoding.json` (product search first).

1. Recommendation: the whole Beauty test set, 22,363 users, 20 beams, top 10, with the causal recommender of the
   CPU preset (`--rec_model FOLDER`, e.g. `runs/rec-causal/beauty`, or random weights of the same architecture on a
   synthetic 12,101-item 3 x 256 + dedup map). The Beauty data does not travel to the GPU machine: histories are
   synthetic items at Beauty's exact history lengths (`BEAUTY_TEST_HISTORY_LENGTHS`). Timed twice: `retrieve` from
   the rendered histories (tokenising and ranking included), and `decode_rows` alone on pre-encoded batches, at
   several batch sizes.
2. Product search at the paper's load: 338 queries, 20 beams, with a seq2seq retriever (`--search_model FOLDER`, or
   random T5-base weights, the paper's backbone, on the same synthetic map), fp32 and bf16. Queries are random text
   token ids of 6 to 20 tokens. The anchor: the paper's 12.21 s for its 338 Beauty queries on an A100.
"""

from __future__ import annotations

import torch
from suite_common import (
    BEAUTY_ITEMS,
    PAPER_LAYOUT,
    PartContext,
    history_lengths,
    load_trained,
    random_causal_recommender,
    random_seq2seq_retriever,
    synthetic_histories,
    synthetic_id_map,
    timed,
)

FULL = {
    "users": 22_363,
    "rec_batches": [64, 256, 1024],
    "retrieve_batch": 256,
    "queries": 338,
    "search_batches": [32, 338],
    "layout": PAPER_LAYOUT,
    "items": BEAUTY_ITEMS,
    "beams": 20,
    "reserve_s": 20,
}
SMOKE = {
    "users": 24,
    "rec_batches": [8, 24],
    "retrieve_batch": 8,
    "queries": 10,
    "search_batches": [4, 10],
    "layout": [16, 16, 16],
    "items": 500,
    "beams": 4,
    "reserve_s": 1,
}
# reserve_s: the longest one measurement may take; none is started with less of the part's time left.
ANCHOR = "the paper: 12.21 s for the 338 Beauty product-search queries, T5-base, on an A100"


def run(context: PartContext) -> None:
    settings = SMOKE if context.smoke else FULL
    results = context.result_file()
    results.set(
        "settings",
        {key: value for key, value in settings.items() if key != "layout"}
        | {"layout": " x ".join(map(str, settings["layout"])) + " + dedup", "anchor": ANCHOR},
    )
    # Product search first: it is bounded (four passes over 338 queries) and carries the paper's anchor; the
    # recommendation sweep then uses what is left of the part's time.
    product_search(context, settings, results)
    if context.time_left() > settings["reserve_s"]:
        recommendation(context, settings, results)
    else:
        results.set("recommendation", {"skipped": "part time limit"})
    results.set("status", "ok")


def recommendation(context: PartContext, settings: dict, results) -> None:
    device = context.device
    if context.rec_model:
        model = load_trained(context.rec_model, device)
        weights = f"trained: {context.rec_model}"
    else:
        model = random_causal_recommender(synthetic_id_map(settings["items"], settings["layout"])).to(device)
        weights = (
            "random weights, the CPU preset's architecture (GPT-2, 2 layers, d_model 128, 4 heads, ID-only vocabulary)"
        )
    tokenizer = model.tokenizer
    lengths = history_lengths(settings["users"])
    histories = synthetic_histories(model.id_map.doc_ids, lengths)
    texts = [model.render_history(history) for history in histories]
    beams = settings["beams"]
    top_k = min(10, beams)
    section = {
        "weights": weights,
        "users": len(texts),
        "beams": beams,
        "top_k": top_k,
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "items": len(model.id_map),
        "mean_history_items": round(sum(lengths) / len(lengths), 2),
        "histories": "synthetic items at Beauty's test-history lengths",
        "decode_rows": [],
    }
    results.set("recommendation", section)
    # Warm-up: kernels, the trie on the device, the allocator.
    model.retrieve(
        texts[: settings["rec_batches"][0]], top_k=top_k, num_beams=beams, batch_size=settings["rec_batches"][0]
    )
    seconds, ranked = timed(
        lambda: model.retrieve(texts, top_k=top_k, num_beams=beams, batch_size=settings["retrieve_batch"]), device
    )
    section["retrieve"] = {
        "batch_size": settings["retrieve_batch"],
        "seconds": round(seconds, 3),
        "users_per_s": round(len(texts) / seconds, 1),
        "users_with_top_k_hits": sum(len(hits) == top_k for hits in ranked),
    }
    results.set("recommendation", section)
    print(f"decoding: retrieve over {len(texts)} users in {seconds:.2f} s", flush=True)
    # Longest first, as a server would batch them; encoding is outside the timed loop.
    order = sorted(range(len(texts)), key=lambda index: -lengths[index])
    for batch_size in settings["rec_batches"]:
        if context.time_left() < settings["reserve_s"]:
            section["decode_rows"].append({"batch_size": batch_size, "skipped": "part time limit"})
            continue
        batches = [
            model.encode_queries([texts[index] for index in order[start : start + batch_size]], tokenizer, warn=False)
            for start in range(0, len(order), batch_size)
        ]
        model.decode_rows(batches[0]["input_ids"], batches[0]["attention_mask"], num_beams=beams)

        def decode_all(batches=batches):
            for encoded in batches:
                model.decode_rows(encoded["input_ids"], encoded["attention_mask"], num_beams=beams)

        seconds, _ = timed(decode_all, device)
        section["decode_rows"].append(
            {"batch_size": batch_size, "seconds": round(seconds, 3), "users_per_s": round(len(texts) / seconds, 1)}
        )
        results.set("recommendation", section)
        print(f"decoding: decode_rows at batch {batch_size}: {seconds:.2f} s", flush=True)


def product_search(context: PartContext, settings: dict, results) -> None:
    device = context.device
    if context.search_model:
        model = load_trained(context.search_model, device)
        weights = f"trained: {context.search_model}"
    else:
        model = random_seq2seq_retriever(
            synthetic_id_map(settings["items"], settings["layout"]), context.smoke, device=device
        )
        weights = "random T5-base (the paper's backbone)" if not context.smoke else "random tiny T5"
    text_tokens = min(model.config.id_token_offsets)
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(6, 21, (settings["queries"],), generator=generator)
    queries = [torch.randint(3, text_tokens, (int(length),), generator=generator) for length in lengths]
    section = {
        "weights": weights,
        "queries": len(queries),
        "beams": settings["beams"],
        "query_tokens": "random text token ids, 6 to 20 per query",
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "runs": [],
    }
    results.set("product_search", section)
    for dtype in (torch.float32, torch.bfloat16):
        model.to(dtype)
        for batch_size in settings["search_batches"]:
            if context.time_left() < settings["reserve_s"]:
                section["runs"].append({"dtype": str(dtype), "batch_size": batch_size, "skipped": "part time limit"})
                continue
            batches = [pad(queries[start : start + batch_size]) for start in range(0, len(queries), batch_size)]
            model.decode_rows(*batches[0], num_beams=settings["beams"])

            def decode_all(batches=batches):
                return [model.decode_rows(*batch, num_beams=settings["beams"]) for batch in batches]

            seconds, decoded = timed(decode_all, device)
            valid = sum(int((rows >= 0).sum()) for rows, _ in decoded)
            section["runs"].append(
                {
                    "dtype": str(dtype).removeprefix("torch."),
                    "batch_size": batch_size,
                    "seconds": round(seconds, 3),
                    "queries_per_s": round(len(queries) / seconds, 1),
                    "valid_beams": valid,
                    "beams_total": len(queries) * settings["beams"],
                }
            )
            results.set("product_search", section)
            print(f"decoding: {len(queries)} queries, {dtype}, batch {batch_size}: {seconds:.2f} s", flush=True)


def pad(queries: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded `input_ids` and `attention_mask` (pad id 0), as a seq2seq tokenizer pads."""
    longest = max(len(query) for query in queries)
    input_ids = torch.zeros(len(queries), longest, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, query in enumerate(queries):
        input_ids[row, : len(query)] = query
        attention_mask[row, : len(query)] = 1
    return input_ids, attention_mask
