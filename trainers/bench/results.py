"""What the benches share: the result file (JSON with the settings, the command and one record per run, a Markdown table
beside it), keeping finished runs when a bench is run again with the same settings, the table layout, and how one
indexer folder of a downstream comparison is fine-tuned.
"""

from __future__ import annotations

import copy
import json
import platform
import shlex
import sys
from pathlib import Path

from ...modeling_lmindexer import SemanticIDMap
from ...modeling_lmindexer.semantic_id_map import ID_MAP_FILE
from ..data.lists import split_names
from ..downstream.run_guard import WHERE_AND_HOW_PREFIXES
from ..folders.inspection import folder_method

# Training arguments that do not change what a run learns or how it is scored: left out when deciding whether a
# finished run of a comparison can be kept.
BOOKKEEPING_PREFIXES = WHERE_AND_HOW_PREFIXES + ("seed", "data_seed", "eval_batch_queries")

LMINDEXER_BACKBONE_FIELD = {
    "help": "own: an LMIndexer folder fine-tunes its own backbone with codebook-initialised ID tokens (`lmindexer "
    "finetune`'s path); shared: it uses --backbone like the two-stage folders, so that only the IDs differ.",
    "choices": ["own", "shared"],
}


def command_line() -> str:
    """The command that is running, quoted so that it can be pasted into a shell."""
    if sys.argv and Path(sys.argv[0]).name == "lmindexer":
        return shlex.join(["lmindexer", *sys.argv[1:]])
    if sys.argv and sys.argv[0].endswith(".py"):  # a script: python path/to/script.py ...
        return shlex.join(["python", *sys.argv])
    return shlex.join(sys.argv)


def new_result(command: str | None, data, settings: dict, **extra) -> dict:
    """A bench's result before its first run: what ran, on which data and machine, with which settings."""
    return {
        "command": command,
        "data": str(data),
        "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "settings": settings,
        **extra,
        "records": [],
    }


def earlier_result(output: Path) -> dict:
    """The result an earlier run wrote to `output` ({} when there is none). One that cannot be read (cut off, not
    JSON) is never overwritten: it is moved aside (`set_aside`) and the bench starts afresh."""
    if not output.is_file():
        return {}
    try:
        result = json.loads(output.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        set_aside(output, f"it is not readable JSON ({error})")
        return {}
    if not isinstance(result, dict) or "settings" not in result:
        set_aside(output, "it is not a bench result (no settings recorded)")
        return {}
    return result


def set_aside(output: Path, reason: str) -> Path:
    """Rename `output` (and its Markdown table) to the first free `<name>.earlier-<n><suffix>`, saying where and why,
    so that a bench never overwrites finished work it cannot keep."""
    number = 1
    while output.with_name(f"{output.stem}.earlier-{number}{output.suffix}").exists():
        number += 1
    kept = output.with_name(f"{output.stem}.earlier-{number}{output.suffix}")
    output.rename(kept)
    table = output.with_suffix(".md")
    if table.is_file():
        table.rename(kept.with_suffix(".md"))
    print(f"{output}: {reason}; moved it to {kept} instead of overwriting it.", file=sys.stderr)
    return kept


def setting_changes(found: dict, expected: dict, prefix: str = "") -> list[str]:
    """`name: old -> new` for every setting that differs (nested settings as `training.learning_rate`)."""
    changes = []
    for key in sorted(set(found) | set(expected)):
        old, new = found.get(key), expected.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += setting_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes


def finished_records(
    earlier: dict,
    settings: dict,
    key_fields: tuple[str, ...],
    varying: tuple[str, ...] = ("seeds",),
    output: Path | None = None,
) -> list[dict]:
    """The records of an `earlier_result` made with the same settings (those named in `varying`, such as the seed
    list, aside), so that a re-run, or a run with more seeds, goes on from them instead of redoing them. With other
    settings nothing is kept, and the earlier file at `output` is moved aside (`set_aside`), naming what differs."""

    def comparable(values: dict) -> dict:  # as read back from JSON, without the settings that may vary
        return {key: value for key, value in json.loads(json.dumps(values)).items() if key not in varying}

    if not earlier:
        return []
    changes = setting_changes(comparable(earlier.get("settings", {})), comparable(settings))
    if changes:
        if output is not None and output.is_file() and earlier.get("records"):
            set_aside(
                output, f"its {len(earlier['records'])} run(s) were made with other settings ({'; '.join(changes[:6])})"
            )
        return []
    records = earlier.get("records", [])
    if records:
        print(
            f"keeping {len(records)} finished run(s) of the same settings: "
            + ", ".join("/".join(str(record[key]) for key in key_fields) for record in records)
        )
    return records


def comparable_training_settings(training_args) -> dict:
    """Every training argument that can change a run's result, JSON-ready."""
    return {
        key: value
        for key, value in json.loads(json.dumps(training_args.to_dict(), default=str)).items()
        if not key.startswith(BOOKKEEPING_PREFIXES)
    }


def seed_list(seeds: str) -> list[int]:
    """`--seeds 0,1,2` as integers."""
    return [int(seed) for seed in split_names(seeds)]


def markdown_table(title: str, columns: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """A titled Markdown table whose first `text_columns` columns are left-aligned and the others (figures) right."""
    lines = [
        f"### {title}",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + ":--|" * text_columns + "--:|" * (len(columns) - text_columns),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_result(result: dict, output: Path, table: str) -> None:
    """The JSON result and its Markdown table beside it (`.md`), both rewritten whole: a cut-off loses no finished
    run."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    output.with_suffix(".md").write_text(f"{table}\nCommand: `{result['command']}`\n")


def indexer_folders(indexers: str, documents: set[str], what: str, required: bool = True) -> list[str]:
    """The comma-separated indexer folders of `--indexers`, each checked to exist and to map all of `documents`
    (every method must be scored on the same queries); `what` names those documents in the error. With `required`,
    at least one folder must be given."""
    folders = split_names(indexers)
    if required and not folders:
        raise ValueError("Give --indexers: the indexer folders whose IDs are compared.")
    for folder in folders:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--indexers: {folder} is not an indexer folder.")
        missing = documents - set(SemanticIDMap.load(Path(folder) / ID_MAP_FILE).doc_ids)
        if missing:
            raise ValueError(
                f"{folder}'s ID map lacks {len(missing)} {what} (e.g. {sorted(missing)[:3]}): index the "
                "whole collection, so that every method is evaluated on the same queries."
            )
    return folders


def run_finetune_arguments(finetune_args, indexer: str, lmindexer_backbone: str):
    """`finetune_args` for one indexer folder of a comparison: its IDs, and the backbone `lmindexer_backbone` says."""
    if lmindexer_backbone not in ("own", "shared"):
        raise ValueError(f"lmindexer_backbone must be 'own' or 'shared', got {lmindexer_backbone!r}.")
    run = copy.copy(finetune_args)
    run.indexer = indexer
    if lmindexer_backbone == "own" and folder_method(indexer) == "lmindexer":
        run.backbone = None
    return run
