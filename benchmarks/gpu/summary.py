"""`summary.md` of a GPU-suite run: the environment, each part's status, and the figures of each JSON as tables."""

from __future__ import annotations

import time
from pathlib import Path


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join("" if cell is None else str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def _cuda_tests(data: dict) -> list[str]:
    counts = data.get("counts", {})
    lines = [
        (
            f"{counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed, {counts.get('skipped', 0)} skipped "
            f"({', '.join(data.get('files', []))})."
        ),
        "",
    ]
    failures = [entry for entry in data.get("tests", []) if entry["outcome"] == "failed"]
    return (
        lines
        + _table(
            ["failed test", "error (end)"],
            [[entry["test"], entry.get("error", "")[-200:].replace("\n", " ").replace("|", "/")] for entry in failures],
        )
        if failures
        else lines
    )


def _trie_steps(data: dict) -> list[str]:
    rows = []
    for run in data.get("runs", []):
        if "skipped" in run:
            rows.append([f"{run['ids']:,}", f"{run['batch']} x {run['beams']}", "skipped"] + [None] * 8)
            continue
        ours, hf, free = run["ours"], run["hf_dict_trie"], run["unconstrained"]
        rows.append(
            [
                f"{run['ids']:,}",
                f"{run['batch']} x {run['beams']}",
                ours["processor_ms_per_step"],
                hf["processor_ms_per_step"],
                run["hf_over_ours_processor"],
                free["generate_ms_per_step"],
                ours["over_unconstrained_ms_per_step"],
                hf["over_unconstrained_ms_per_step"],
                ours["host_reads_per_step"] + ours["cuda_syncs_per_step"],
                hf["host_reads_per_step"] + hf["cuda_syncs_per_step"],
                run["ours_equals_hf_sequences"],
            ]
        )
    header = [
        "IDs",
        "batch x beams",
        "ours ms/step",
        "HF dict ms/step",
        "HF / ours",
        "unconstrained generate ms/step",
        "ours over unconstrained ms/step",
        "HF over unconstrained ms/step",
        "ours host syncs/step",
        "HF host syncs/step",
        "same sequences",
    ]
    anchor = data.get("settings", {}).get("anchor", "")
    return _table(header, rows) + [
        f"Processor time is measured inside `generate` (CUDA events on a GPU). Anchor: {anchor}.",
        "",
    ]


def _decoding(data: dict) -> list[str]:
    lines = []
    rec = data.get("recommendation")
    if rec and "users" in rec:
        lines.append(
            f"Recommendation ({rec['weights']}): {rec['users']:,} users, {rec['beams']} beams, "
            f"{rec['histories']} (mean {rec['mean_history_items']} items)."
        )
        lines.append("")
        rows = []
        if "retrieve" in rec:
            rows.append(
                [
                    "retrieve (tokenising, ranking)",
                    rec["retrieve"]["batch_size"],
                    rec["retrieve"]["seconds"],
                    rec["retrieve"]["users_per_s"],
                ]
            )
        rows += [
            ["decode_rows", run["batch_size"], run.get("seconds", run.get("skipped")), run.get("users_per_s")]
            for run in rec.get("decode_rows", [])
        ]
        lines += _table(["how", "batch", "seconds", "users/s"], rows)
    search = data.get("product_search")
    if search and "runs" in search:
        lines.append(
            f"Product search ({search['weights']}): {search['queries']} queries, {search['beams']} beams, "
            f"{search['query_tokens']}."
        )
        lines.append("")
        lines += _table(
            ["dtype", "batch", "seconds", "queries/s"],
            [
                [run["dtype"], run["batch_size"], run.get("seconds", run.get("skipped")), run.get("queries_per_s")]
                for run in search["runs"]
            ],
        )
        lines += [f"Anchor: {data.get('settings', {}).get('anchor', '')}.", ""]
    return lines


def _training(data: dict) -> list[str]:
    rows = []
    rec = data.get("recommender")
    if rec:
        rows.append(
            [
                f"recommender: {rec['model']}",
                rec["batch_size"],
                f"{rec['examples_per_s']} examples/s",
                f"{rec['tokens_per_s']} tokens/s",
                rec["step_seconds"]["median"],
                rec["peak_memory_gib"],
                f"{rec['loss_first']} -> {rec['loss_last']}",
            ]
        )
    for run in data.get("indexer", []):
        if "documents_per_s" not in run:
            rows.append(
                [f"indexer, {run['document_tokens']} tokens", None, run.get("skipped", run.get("error"))] + [None] * 4
            )
            continue
        rows.append(
            [
                f"indexer: {run['model']}, {run['document_tokens']} tokens",
                run["batch_size"],
                f"{run['documents_per_s']} documents/s",
                None,
                run["step_seconds"]["median"],
                run["peak_memory_gib"],
                f"{run['loss_first']} -> {run['loss_last']}",
            ]
        )
    precision = data.get("settings", {}).get("precision", "")
    return _table(["what", "batch", "throughput", "tokens", "s/step", "peak GiB", "loss first -> last"], rows) + [
        f"Precision: {precision}.",
        "",
    ]


SECTIONS = {
    "cuda_tests": ("CUDA tests", _cuda_tests),
    "trie_steps": ("Trie processor per decoding step", _trie_steps),
    "decoding": ("Decoding whole test sets", _decoding),
    "training": ("Training throughput", _training),
}


def write_summary(out_dir: Path, verdicts: dict, command: str, seconds: float, smoke: bool) -> Path:
    environment = next((data["environment"] for data in verdicts.values() if "environment" in data), {})
    lines = [
        "# GPU suite" + (" (smoke run: CPU, toy sizes; these are not GPU figures)" if smoke else ""),
        "",
        f"- command: `{command}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        (
            f"- device: {environment.get('device', 'unknown')}; torch {environment.get('torch')}, CUDA "
            f"{environment.get('cuda')}, transformers {environment.get('transformers')}, Python {environment.get('python')}"
        ),
        f"- wall time of the parts: {seconds:.0f} s",
        "",
    ]
    lines += _table(
        ["part", "status", "seconds", "limit"],
        [[name, data["status"], data.get("wall_s"), data.get("time_limit_s")] for name, data in verdicts.items()],
    )
    for name, data in verdicts.items():
        title, render = SECTIONS[name]
        lines += [f"## {title} (`{name}.json`)", ""]
        if data["status"] != "ok":
            lines += [f"**{data['status']}**: {data.get('error', '')}", ""]
        try:
            lines += render(data)
        except (KeyError, TypeError) as error:  # a part stopped half-way: its JSON still holds what it measured
            lines += [f"(incomplete figures: missing {error})", ""]
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines))
    return path
