"""Resumable progressive training: what a run is (its fingerprint), finished-stage checkpoints, and the guard
on mid-stage Trainer checkpoints.

- `checkpoint-stage/` holds the model, the codes frozen so far and the metrics after the last finished stage.
  It is replaced as a whole (written beside it, then swapped by renames); a kill between the two renames
  leaves `checkpoint-stage.old`, which `restore` falls back to.
- `stages/<stage>/` holds the Trainer's own checkpoints while a stage runs, with `fingerprint.json`: a later
  run reuses them only when resuming the same run (same config, corpus, schedule and seed), picks the newest
  *complete* one by step number, and refuses a folder left by another run, naming what differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger("lmindexer")

STATE_FILE = "pipeline_state.json"
CODES_FILE = "codes.safetensors"
STAGE_CHECKPOINT = "checkpoint-stage"
STAGE_FINGERPRINT = "fingerprint.json"
# The config keys that change with versions or with training itself, not with what the run is.
VOLATILE_CONFIG_KEYS = ("lmindexer_version", "transformers_version", "dedup_size", "_name_or_path", "architectures")
SCHEDULE_PREFIXES = ("reconstructor_warmup_", "encoder_warmup_", "codebook_", "kmeans_")
TRAINER_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_fingerprint(model_config, corpus, args) -> dict[str, str]:
    """What a resumed run must match: the model config, the corpus (IDs and texts) and the training schedule."""
    config = model_config.to_dict()
    for volatile in VOLATILE_CONFIG_KEYS:
        config.pop(volatile, None)
    corpus_hash = hashlib.sha256()
    for doc_id, text in zip(corpus.doc_ids, corpus.texts):
        corpus_hash.update(f"{doc_id}\t{text}\n".encode())
    schedule = {key: getattr(args, key) for key in sorted(vars(type(args))) if key.startswith(SCHEDULE_PREFIXES)}
    schedule["seed"] = args.seed
    return {"config": _digest(config), "corpus": corpus_hash.hexdigest()[:16], "schedule": _digest(schedule)}


def describe_mismatch(found: dict, expected: dict) -> list[str]:
    return [key for key in expected if found.get(key) != expected[key]]


@dataclass
class RestoredState:
    folder: Path
    completed_stages: int
    stage_names: list[str]
    codes: np.ndarray
    metrics: dict
    card: dict | None


class StageCheckpoints:
    """Checkpoints of one run in `output_dir`, guarded by the run's `fingerprint`."""

    def __init__(self, output_dir: str | Path, fingerprint: dict[str, str]):
        self.output_dir = Path(output_dir)
        self.fingerprint = fingerprint

    # ------------------------------------------------------------------------------------- finished stages
    def save(self, model, codes: np.ndarray, state: dict) -> None:
        """Replace `checkpoint-stage/` with the model, codes and `state` (plus the fingerprint)."""
        staging = self.output_dir / f"{STAGE_CHECKPOINT}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging, model_card=False)
        save_file({"codes": torch.as_tensor(np.ascontiguousarray(codes, dtype=np.int64))}, str(staging / CODES_FILE))
        (staging / STATE_FILE).write_text(json.dumps({**state, "fingerprint": self.fingerprint}, indent=2))
        final = self.output_dir / STAGE_CHECKPOINT
        previous = self.output_dir / f"{STAGE_CHECKPOINT}.old"
        shutil.rmtree(previous, ignore_errors=True)
        if final.exists():
            final.rename(previous)
        staging.rename(final)
        shutil.rmtree(previous, ignore_errors=True)

    def latest_folder(self) -> Path | None:
        for name in (STAGE_CHECKPOINT, f"{STAGE_CHECKPOINT}.old"):  # .old: killed between the two renames
            if (self.output_dir / name / STATE_FILE).exists():
                return self.output_dir / name
        return None

    def restore(self) -> RestoredState | None:
        """The last finished stage's state, or None when there is none; raises when it is another run's."""
        folder = self.latest_folder()
        if folder is None:
            return None
        state = json.loads((folder / STATE_FILE).read_text())
        differing = describe_mismatch(state.get("fingerprint", {}), self.fingerprint)
        if differing:
            raise ValueError(
                f"{self.output_dir} was made by a run with a different {', '.join(differing)}; it cannot be resumed "
                "with these settings. Use another --output_dir or the original settings."
            )
        if (folder / CODES_FILE).exists():
            codes = load_file(str(folder / CODES_FILE))["codes"].numpy()
        else:  # written by lmindexer <= 0.3
            codes = np.load(folder / "codes.npy", allow_pickle=False)
        return RestoredState(folder, int(state["completed_stages"]), state["stage_names"], codes, state["metrics"],
                             state.get("card"))

    # ----------------------------------------------------------------------------------- mid-stage checkpoints
    def stage_folder(self, stage_name: str) -> Path:
        return self.output_dir / "stages" / stage_name

    def open_stage(self, stage_name: str, seed: int, resume: bool, writer: bool = True) -> str | None:
        """Prepare the stage's Trainer folder; returns the checkpoint to resume from, if this run left one.

        Without `resume`, leftovers are removed: a fresh run never continues another run's optimisation. With
        `resume`, a folder stamped by another run (or not stamped at all) is refused. Only the `writer` (the
        main process) removes or stamps anything; other processes call it afterwards to read the same answer.
        """
        folder = self.stage_folder(stage_name)
        stamp = {**self.fingerprint, "stage": stage_name, "seed": seed}
        if not writer:
            return self._newest_complete_checkpoint(folder, remove=False) if resume and folder.exists() else None
        if folder.exists() and not resume:
            logger.info("[%s] removing Trainer checkpoints left by an earlier run (not resuming).", stage_name)
            shutil.rmtree(folder)
        checkpoint = None
        if folder.exists():
            found = json.loads((folder / STAGE_FINGERPRINT).read_text()) if (folder / STAGE_FINGERPRINT).exists() else {}
            differing = describe_mismatch(found, stamp)
            if differing:
                raise ValueError(
                    f"{folder} holds Trainer checkpoints of a run with a different {', '.join(differing)}; refusing "
                    "to resume from them. Resume with the original settings, or delete that folder to restart the stage."
                )
            checkpoint = self._newest_complete_checkpoint(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STAGE_FINGERPRINT).write_text(json.dumps(stamp, indent=2))
        return checkpoint

    def close_stage(self, stage_name: str) -> None:
        shutil.rmtree(self.stage_folder(stage_name), ignore_errors=True)

    @staticmethod
    def _newest_complete_checkpoint(folder: Path, remove: bool = True) -> str | None:
        steps = sorted(
            (int(match.group(1)), path)
            for path in folder.iterdir()
            if path.is_dir() and (match := TRAINER_CHECKPOINT.match(path.name))
        )
        for step, path in reversed(steps):
            # The Trainer writes trainer_state.json last: without it, the save was cut off.
            if (path / "trainer_state.json").exists():
                return str(path)
            if remove:
                logger.warning("Removing the incomplete Trainer checkpoint %s (its save was interrupted).", path)
                shutil.rmtree(path, ignore_errors=True)
        return None
