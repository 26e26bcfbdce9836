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

from ..folders.fault_points import crash_point

logger = logging.getLogger("lmindexer")

STATE_FILE = "pipeline_state.json"
CODES_FILE = "codes.safetensors"
STAGE_CHECKPOINT = "checkpoint-stage"
STAGE_FINGERPRINT = "fingerprint.json"
# The config keys that change with versions or with training itself, not with what the run is.
VOLATILE_CONFIG_KEYS = ("lmindexer_version", "transformers_version", "dedup_size", "_name_or_path", "architectures")
SCHEDULE_PREFIXES = ("reconstructor_warmup_", "encoder_warmup_", "codebook_", "kmeans_")
# Shared `TrainingArguments` flags that change what a phase learns (not where it logs or how fast it runs).
OPTIMISATION_FLAGS = (
    "head_learning_rate",
    "encoder_trainable_layers",
    "gradient_accumulation_steps",
    "weight_decay",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "warmup_steps",
    "max_grad_norm",
    "optim",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "label_smoothing_factor",
    "bf16",
    "fp16",
    "tf32",
)
TRAINER_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_config(model_config) -> dict:
    """The model config as far as it defines the run (without the keys in `VOLATILE_CONFIG_KEYS`)."""
    config = model_config.to_dict()
    for volatile in VOLATILE_CONFIG_KEYS:
        config.pop(volatile, None)
    return config


def config_changes(found: dict, expected: dict, prefix: str = "", limit: int = 6) -> list[str]:
    """`key: old -> new` for every config key whose value differs (nested configs as `backbone_config.d_model`)."""
    changes = []
    for key in sorted(set(found) | set(expected), key=str):
        old, new = found.get(key), expected.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += config_changes(old, new, f"{prefix}{key}.", limit)
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes[:limit]


def run_fingerprint(model_config, corpus, args, max_length: int | None = None) -> dict[str, str]:
    """What a resumed run must match: the model config, the corpus (IDs and texts, and the tokens kept of them)
    and the training schedule (per-phase settings and the shared flags that change the optimisation)."""
    config = run_config(model_config)
    corpus_hash = hashlib.sha256()
    for doc_id, text in zip(corpus.doc_ids, corpus.texts):
        corpus_hash.update(f"{doc_id}\t{text}\n".encode())
    schedule = {key: getattr(args, key) for key in sorted(vars(type(args))) if key.startswith(SCHEDULE_PREFIXES)}
    schedule.update({key: getattr(args, key, None) for key in OPTIMISATION_FLAGS})
    schedule["seed"] = args.seed
    schedule["max_length"] = max_length
    return {"config": _digest(config), "corpus": corpus_hash.hexdigest()[:16], "schedule": _digest(schedule)}


def describe_mismatch(found: dict, expected: dict) -> list[str]:
    return [key for key in expected if found.get(key) != expected[key]]


def describe_difference(differing: list[str], found_config: dict | None, config: dict | None) -> str:
    """`config (codebook_sizes: [4, 4] -> [5, 5]), schedule`: what differs, with the config keys when both are known."""
    parts = []
    for key in differing:
        changes = config_changes(found_config, config) if key == "config" and found_config and config else []
        parts.append(f"{key} ({'; '.join(changes)})" if changes else key)
    return ", ".join(parts)


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

    def __init__(self, output_dir: str | Path, fingerprint: dict[str, str], config: dict | None = None):
        self.output_dir = Path(output_dir)
        self.fingerprint = fingerprint
        # The run's config itself (`run_config`), kept beside the fingerprint so that a refusal can name its keys.
        self.config = None if config is None else json.loads(json.dumps(config, default=str))  # as read back

    # ------------------------------------------------------------------------------------- finished stages
    def save(self, model, codes: np.ndarray, state: dict) -> None:
        """Replace `checkpoint-stage/` with the model, codes and `state` (plus the fingerprint)."""
        staging = self.output_dir / f"{STAGE_CHECKPOINT}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging, model_card=False)
        save_file({"codes": torch.as_tensor(np.ascontiguousarray(codes, dtype=np.int64))}, str(staging / CODES_FILE))
        (staging / STATE_FILE).write_text(
            json.dumps({**state, "fingerprint": self.fingerprint, "config": self.config}, indent=2, default=str)
        )
        final = self.output_dir / STAGE_CHECKPOINT
        previous = self.output_dir / f"{STAGE_CHECKPOINT}.old"
        if not final.exists() and previous.exists():
            previous.rename(final)  # an earlier kill between the renames: `.old` is the only complete copy
        shutil.rmtree(previous, ignore_errors=True)
        if final.exists():
            final.rename(previous)
            crash_point("stage_checkpoint.between_renames")
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
                f"{self.output_dir} was made by a run with a different "
                f"{describe_difference(differing, state.get('config'), self.config)}; it cannot be resumed "
                "with these settings. Use another --output_dir or the original settings."
            )
        if (folder / CODES_FILE).exists():
            codes = load_file(str(folder / CODES_FILE))["codes"].numpy()
        else:  # written by lmindexer <= 0.3
            codes = np.load(folder / "codes.npy", allow_pickle=False)
        return RestoredState(
            folder, int(state["completed_stages"]), state["stage_names"], codes, state["metrics"], state.get("card")
        )

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
        config = {"config_values": self.config} if self.config is not None else {}
        if not writer:
            return self._newest_complete_checkpoint(folder, remove=False) if resume and folder.exists() else None
        if folder.exists() and not resume:
            logger.info("[%s] removing Trainer checkpoints left by an earlier run (not resuming).", stage_name)
            shutil.rmtree(folder)
        checkpoint = None
        if folder.exists():
            found = (
                json.loads((folder / STAGE_FINGERPRINT).read_text()) if (folder / STAGE_FINGERPRINT).exists() else {}
            )
            differing = describe_mismatch(found, stamp)
            if differing:
                raise ValueError(
                    f"{folder} holds Trainer checkpoints of a run with a different "
                    f"{describe_difference(differing, found.get('config_values'), self.config)}; refusing "
                    "to resume from them. Resume with the original settings, or delete that folder to restart the "
                    "stage."
                )
            checkpoint = self._newest_complete_checkpoint(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STAGE_FINGERPRINT).write_text(json.dumps({**stamp, **config}, indent=2, default=str))
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
        for _, path in reversed(steps):
            # The Trainer writes trainer_state.json last: without it, the save was cut off.
            if (path / "trainer_state.json").exists():
                return str(path)
            if remove:
                logger.warning("Removing the incomplete Trainer checkpoint %s (its save was interrupted).", path)
                shutil.rmtree(path, ignore_errors=True)
        return None
