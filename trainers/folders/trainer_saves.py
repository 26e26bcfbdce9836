"""What a Trainer needs to publish lmindexer models: our card instead of the generic one, and no pickles.

transformers' Trainer writes `training_args.bin` (a pickle) next to every save and, when it pushes a checkpoint
during training (`push_to_hub=True`), copies only config and weights into the pushed folder. The mixin below
keeps the ID map, model code, tokenizer and an up-to-date card in every pushed commit, writes the training
arguments as JSON, and never uploads a pickle.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from huggingface_hub import HfApi
from transformers.trainer_utils import HubStrategy, SaveStrategy
from transformers.utils.hub import PushInProgress

from ...hub_cards import LMIndexerCardData, ModelCardCallback, write_model_card
from ...hub_cards.plots import PLOT_FOLDER
from ...hub_cards.publishing import FORBIDDEN_SUFFIXES, is_pickle_file
from ...modeling_lmindexer.configuration_lmindexer import RETRIEVAL
from .fault_points import crash_point

logger = logging.getLogger("lmindexer")

TRAINING_ARGS_PICKLE = "training_args.bin"
TRAINING_ARGS_JSON = "training_args.json"
# Checkpoint files that are Trainer state, not part of the published model.
STATE_PREFIXES = ("optimizer", "scheduler", "rng_state", "trainer_state", "training_args", "scaler")


def pickle_patterns(folder: Path) -> list[str]:
    """Upload ignore patterns for every pickle under `folder`: suffix patterns, plus each pickle by name, since
    fnmatch patterns miss `MODEL.BIN` or `x.pkl.gz`."""
    named = [
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and is_pickle_file(path.name)
    ]
    return [*(f"*{suffix}" for suffix in FORBIDDEN_SUFFIXES), *named]


class JSONTrainingArgumentsMixin:
    """Mix in before a `transformers.Trainer`: every save writes the training arguments as JSON, never the
    `training_args.bin` pickle."""

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        crash_point("trainer_checkpoint.after_weights")
        folder = Path(output_dir if output_dir is not None else self.args.output_dir)
        if self.args.should_save and (folder / TRAINING_ARGS_PICKLE).exists():
            (folder / TRAINING_ARGS_PICKLE).unlink()
            (folder / TRAINING_ARGS_JSON).write_text(self.args.to_json_string(), encoding="utf-8")


class HubCardTrainerMixin(JSONTrainingArgumentsMixin):
    """Mix in before a `transformers.Trainer` subclass; takes `card_data=` (an `LMIndexerCardData`)."""

    def __init__(self, *args, card_data: LMIndexerCardData | None = None, **kwargs):
        model = kwargs.get("model", args[0] if args else None)
        self.card_data = card_data or LMIndexerCardData(task=getattr(getattr(model, "config", None), "task", RETRIEVAL))
        self.card_callback = ModelCardCallback(self.card_data)
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), self.card_callback]
        super().__init__(*args, **kwargs)
        self.card_data.model_id = self.hub_model_id or self.args.hub_model_id or self.card_data.model_id
        self.card_model().card_data = self.card_data  # every checkpoint's save writes this card

    def card_model(self):
        """The model whose card is written (the wrapped model under peft)."""
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def create_model_card(self, *args, **kwargs) -> None:
        if not self.is_world_process_zero():
            return
        write_model_card(self.card_model(), Path(self.args.output_dir), self.card_data)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        if not self.is_world_process_zero() or self.args.hub_strategy == HubStrategy.END:
            return
        if not self.args.hub_always_push and self.push_in_progress is not None and not self.push_in_progress.is_done():
            return
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        output_dir = Path(self.args.output_dir)
        for source in Path(checkpoint_folder).iterdir():
            if source.is_file() and not source.name.startswith(STATE_PREFIXES) and not is_pickle_file(source.name):
                shutil.copy2(source, output_dir / source.name)
        if (Path(checkpoint_folder) / "README.md").is_file():  # the checkpoint's save rendered the card already
            shutil.copytree(Path(checkpoint_folder) / PLOT_FOLDER, output_dir / PLOT_FOLDER, dirs_exist_ok=True)
        else:  # a peft checkpoint holds adapters only, saved without our card
            self.create_model_card()
        if self.args.save_strategy == SaveStrategy.STEPS:
            message = f"Training in progress, step {self.state.global_step}"
        else:
            message = f"Training in progress, epoch {int(self.state.epoch)}"
        api = HfApi(token=self.args.hub_token)
        never = ["_*", "checkpoint-*", *pickle_patterns(output_dir)]
        jobs = [
            api.upload_folder(
                repo_id=self.hub_model_id,
                folder_path=str(output_dir),
                commit_message=message,
                revision=self.args.hub_revision,
                ignore_patterns=never,
                run_as_future=True,
            )
        ]
        if self.args.hub_strategy in (HubStrategy.CHECKPOINT, HubStrategy.ALL_CHECKPOINTS):
            # The Trainer keeps optimizer, scheduler and RNG state as pickles: they stay local (resume from the local
            # checkpoint); the Hub gets the checkpoint's weights, map, card and JSON state only.
            path_in_repo = (
                "last-checkpoint" if self.args.hub_strategy == HubStrategy.CHECKPOINT else Path(checkpoint_folder).name
            )
            jobs.append(
                api.upload_folder(
                    repo_id=self.hub_model_id,
                    folder_path=checkpoint_folder,
                    path_in_repo=path_in_repo,
                    commit_message=message + ", checkpoint",
                    revision=self.args.hub_revision,
                    ignore_patterns=pickle_patterns(Path(checkpoint_folder)),
                    run_as_future=True,
                )
            )
        if self.push_in_progress is None or self.push_in_progress.is_done():
            self.push_in_progress = PushInProgress(jobs)
        else:
            self.push_in_progress.jobs.extend(jobs)
