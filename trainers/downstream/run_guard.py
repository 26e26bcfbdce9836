"""What `finetune_retriever` checks before its first step, so that bad inputs never cost a training run, and the guard
that keeps the checkpoints of different fine-tuning runs apart.

- `check_splits`: every split training and evaluation need exists and holds samples; the error names the file.
- `FinetuneRunGuard`: a fine-tuning run's fingerprint (the indexer, data, history rendering and every training
  argument that changes what is learned, the seed included) goes into `output_dir` and into every checkpoint. Resuming
  from a checkpoint of another run is refused, naming what differs; a new run (no resume) into a folder that holds an
  earlier run's `checkpoint-*` folders is refused unless `--overwrite_output_dir` asks for them to be removed.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from ...modeling_lmindexer.configuration_lmindexer import RECOMMENDATION

logger = logging.getLogger("lmindexer")

FINETUNE_FINGERPRINT = "finetune_fingerprint.json"
TRAINER_STATE = "trainer_state.json"
# `resume_from_checkpoint` of a bench's runs: resume this run's newest complete checkpoint, else start afresh (an
# interrupted bench run is the bench's own folder, and another run's checkpoints there are removed).
AUTO_RESUME = "auto"
CHECKPOINT_FOLDER = re.compile(r"^checkpoint-(\d+)$")
# Training arguments that never change what a run learns: where it writes and logs, how it is resumed and loaded.
# Shared with the benches, which also leave out the seed (their runs vary it on purpose).
WHERE_AND_HOW_PREFIXES = (
    "output_dir",
    "overwrite",
    "logging",
    "save_",
    "save",
    "report_to",
    "run_name",
    "disable_tqdm",
    "push_to_hub",
    "hub_",
    "resume_from_checkpoint",
    "dataloader_",
    "local_rank",
    "ddp_",
    "trackio",
    "project",
)
# ... and, for a fine-tuning run's fingerprint, how it is evaluated along the way (the final model is the same).
BOOKKEEPING_PREFIXES = WHERE_AND_HOW_PREFIXES + (
    "eval_",
    "per_device_eval",
    "do_",
    "prediction_loss_only",
    "include_",
    "use_cpu",
)


def check_splits(splits, data_args, needs_validation: bool, needs_training: bool = True) -> None:
    """Refuse, before training, splits that would make training or evaluation fail or be empty: one line naming
    the file and the problem."""
    folder = Path(data_args.data)
    if data_args.task == RECOMMENDATION:
        source = folder / "sequences.jsonl"
        reason = (
            "no user has 3 or more items known to the ID map (the last is the test target, the one before it "
            "the validation target)"
        )
        for name in (*(["train"] if needs_training else []), "test", *(["validation"] if needs_validation else [])):
            if name not in splits or len(splits[name]) == 0:
                raise ValueError(f"{source}: no {name} sample: {reason}.")
        return
    for name, filename in (("test", "test.tsv"), *([("validation", "dev.tsv")] if needs_validation else [])):
        qrels = folder / "qrels" / filename
        if name not in splits:
            raise ValueError(f"{qrels} is missing: the {name} queries of a BEIR folder are judged there.")
        if len(splits[name]) == 0:
            raise ValueError(
                f"{qrels}: no {name} query survives: every judged query is missing from queries.jsonl "
                "or names only documents the ID map does not hold."
            )
    if needs_training and ("train" not in splits or len(splits["train"]) == 0):
        raise ValueError(f"{folder}: no training sample (no qrels/train.tsv pair, and no document indexing sample).")


def comparable_settings(training_args) -> dict:
    """Every training argument that changes what a run learns, JSON-ready (the seed included)."""
    values = json.loads(json.dumps(training_args.to_dict(), default=str))
    return {key: value for key, value in values.items() if not key.startswith(BOOKKEEPING_PREFIXES)}


def finetune_fingerprint(finetune_args, data_args, training_args) -> dict:
    """What a fine-tuning run is: its indexer, model choices, data and rendering, and training settings."""
    from dataclasses import asdict

    model = {key: value for key, value in asdict(finetune_args).items() if key != "indexer"}
    data = {
        key: value
        for key, value in asdict(data_args).items()
        if key not in ("data", "max_eval_queries", "eval_rows", "validation_users")
    }
    indexer = Path(finetune_args.indexer)
    return json.loads(
        json.dumps(
            {
                "indexer": str(indexer.resolve()) if indexer.exists() else finetune_args.indexer,
                "data": str(Path(data_args.data).resolve()),
                "model": model,
                "rendering": data,
                "training": comparable_settings(training_args),
            },
            default=str,
        )
    )


def fingerprint_differences(found: dict, expected: dict, prefix: str = "") -> list[str]:
    """`key: old -> new` for every leaf that differs."""
    changes = []
    for key in sorted(set(found) | set(expected)):
        old, new = found.get(key), expected.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += fingerprint_differences(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes


def checkpoint_folders(output_dir: Path) -> list[Path]:
    if not output_dir.is_dir():
        return []
    found = [path for path in output_dir.iterdir() if path.is_dir() and CHECKPOINT_FOLDER.match(path.name)]
    return sorted(found, key=lambda path: int(CHECKPOINT_FOLDER.match(path.name).group(1)))


class FinetuneRunGuard:
    """Keeps one fine-tuning run's checkpoints from mixing with another's (see the module docstring)."""

    def __init__(self, fingerprint: dict, output_dir: str | Path):
        self.fingerprint = fingerprint
        self.output_dir = Path(output_dir)

    def resume_checkpoint(
        self, resume_from_checkpoint, overwrite_output_dir: bool = False, main_process: bool = True
    ) -> str | None:
        """The checkpoint to resume from (`--resume_from_checkpoint true` or a path), after checking it belongs to
        this run; None for a fresh run, after checking that no earlier run's checkpoints would stay beside it."""
        wanted = resume_from_checkpoint
        existing = checkpoint_folders(self.output_dir)
        if wanted == AUTO_RESUME:  # a bench's own run folder: go on from this run's newest complete checkpoint
            own = [path for path in existing if (path / TRAINER_STATE).is_file() and self.belongs(path)]
            if own:
                logger.info("Resuming the unfinished run from %s.", own[-1])
                return str(own[-1])
            wanted, overwrite_output_dir = False, True
        if isinstance(wanted, str) and wanted.lower() in ("true", "false", ""):
            wanted = wanted.lower() == "true"
        if not wanted:
            if existing and not overwrite_output_dir:
                names = ", ".join(path.name for path in existing[:4])
                raise ValueError(
                    f"{self.output_dir} holds checkpoints of an earlier run ({names}): resume it with "
                    "--resume_from_checkpoint true, choose another --output_dir, or pass "
                    "--overwrite_output_dir true to remove them."
                )
            for path in existing if main_process else []:  # one process removes them
                logger.warning("Removing %s of an earlier run (--overwrite_output_dir).", path)
                shutil.rmtree(path)
            return None
        if wanted is True:
            if not existing:
                raise ValueError(f"--resume_from_checkpoint true: {self.output_dir} holds no checkpoint-* folder.")
            checkpoint = existing[-1]
        else:
            checkpoint = Path(wanted)
            if not checkpoint.is_dir():
                raise ValueError(f"--resume_from_checkpoint {wanted}: no such checkpoint folder.")
        self.check_checkpoint(checkpoint)
        return str(checkpoint)

    def belongs(self, checkpoint: Path) -> bool:
        """Whether `checkpoint` was written by this run."""
        try:
            self.check_checkpoint(checkpoint)
        except ValueError:
            return False
        return True

    def check_checkpoint(self, checkpoint: Path) -> None:
        stamp = checkpoint / FINETUNE_FINGERPRINT
        if not stamp.is_file():
            raise ValueError(
                f"{checkpoint} has no {FINETUNE_FINGERPRINT}: it was not written by this fine-tuning run "
                "(or by an lmindexer before run fingerprints); start a new run instead of resuming."
            )
        try:
            found = json.loads(stamp.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{stamp} is not readable JSON ({error}); start a new run.") from None
        changes = fingerprint_differences(found, self.fingerprint)
        if changes:
            raise ValueError(
                f"{checkpoint} belongs to another fine-tuning run ({'; '.join(changes[:6])}): resume with "
                "the settings it was trained with, or start a new run in another --output_dir."
            )

    def stamp(self, folder: str | Path) -> None:
        """Write the fingerprint into `folder` (a checkpoint or the output folder)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / FINETUNE_FINGERPRINT).write_text(json.dumps(self.fingerprint, indent=2), encoding="utf-8")
