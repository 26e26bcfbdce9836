"""One Trainer per trained phase of progressive indexer training, on a shared base with class-attribute plugs.

Each trainer declares its phase, the model's forward mode and whether the backbone trains; it freezes what it
does not train for the duration of its own `train()`, so a phase run on its own behaves as it does in a run.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import Trainer

from ...modeling_lmindexer import IndexerMode
from ..folders.trainer_saves import JSONTrainingArgumentsMixin
from .collators import HintEpochCallback, IndexerDataCollator
from .samplers import PrefixGroupBatchSampler
from .stages import Phase, Stage

logger = logging.getLogger("lmindexer")

LOSS_TERMS = ("reconstruction_loss", "contrastive_loss", "commitment_loss")


class IndexerStageTrainer(JSONTrainingArgumentsMixin, Trainer):
    """Trains one position in one phase. Subclasses set the plugs below.

    Plugs:
        phase: the [`Phase`] it trains; its stage name (`codebook_t2`) prefixes the logs.
        mode: the [`IndexerMode`] the model runs in.
        trains_backbone: False freezes the backbone (encoder, decoder, token embeddings) while it trains.
        groups_by_prefix: from t = 2 on, batches hold whole prefix groups (`PrefixGroupBatchSampler`).
    """

    phase: ClassVar[Phase]
    mode: ClassVar[IndexerMode]
    trains_backbone: ClassVar[bool] = True
    groups_by_prefix: ClassVar[bool] = False

    def __init__(
        self,
        *args,
        position: int,
        prefix_keys: np.ndarray | None = None,
        head_learning_rate: float | None = None,
        encoder_trainable_layers: int | None = None,
        groups_by_prefix: bool | None = None,
        **kwargs,
    ):
        if groups_by_prefix is not None:
            self.groups_by_prefix = groups_by_prefix
        self.position = position
        self.prefix_keys = prefix_keys
        self.head_learning_rate = head_learning_rate
        self.encoder_trainable_layers = encoder_trainable_layers
        super().__init__(*args, **kwargs)
        if isinstance(self.data_collator, IndexerDataCollator):
            self.add_callback(HintEpochCallback(self.data_collator))
        self._term_totals: dict[str, float] = defaultdict(float)
        self._term_counts: dict[str, int] = defaultdict(int)

    @property
    def label(self) -> str:
        return Stage(self.phase, self.position).name

    def train(self, *args, **kwargs):
        if not self.trains_backbone:
            frozen = [p for p in self.model.backbone.parameters() if p.requires_grad]
        elif self.encoder_trainable_layers is not None:
            frozen = [
                p for p in frozen_encoder_parameters(self.model, self.encoder_trainable_layers) if p.requires_grad
            ]
        else:
            frozen = []
        for parameter in frozen:
            parameter.requires_grad_(False)
        try:
            return super().train(*args, **kwargs)
        finally:
            for parameter in frozen:
                parameter.requires_grad_(True)

    def create_optimizer(self, model=None):
        """With `head_learning_rate`, parameters that start from scratch get their own rate: the reconstructor,
        the codebooks, and backbone weights the pretrained checkpoint lacked (a bert2bert decoder's
        cross-attention), while the pretrained backbone needs a gentler one. A phase that freezes the backbone
        trains only new parameters and keeps its own learning rate."""
        if self.optimizer is not None or self.head_learning_rate is None or not self.trains_backbone:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        fresh = set(fresh_parameter_names(opt_model))
        groups: dict[tuple[bool, bool], list] = defaultdict(list)
        for name, parameter in opt_model.named_parameters():
            if parameter.requires_grad:
                groups[(name in fresh, name in decay)].append(parameter)
        optimizer_class, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_class(
            [
                {
                    "params": params,
                    "weight_decay": self.args.weight_decay if decays else 0.0,
                    "lr": self.head_learning_rate if is_fresh else self.args.learning_rate,
                }
                for (is_fresh, decays), params in groups.items()
            ],
            **optimizer_kwargs,
        )
        return self.optimizer

    def get_train_dataloader(self) -> DataLoader:
        """From t = 2 on, with `groups_by_prefix`, batches are filled with whole prefix groups so that the
        contrastive loss has partners to spread."""
        if not self.groups_by_prefix or self.position == 1 or self.prefix_keys is None:
            return super().get_train_dataloader()
        sampler = PrefixGroupBatchSampler(self.prefix_keys, self.args.per_device_train_batch_size, seed=self.args.seed)
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs, position=self.position, mode=self.mode)
        loss = outputs.loss
        if not torch.isfinite(loss.detach()).all():
            raise FloatingPointError(
                f"[{self.label}] the loss became {loss.item()} at step {self.state.global_step}: training stopped. "
                "Lower the stage's learning rate or check the input documents."
            )
        for term in LOSS_TERMS:
            value = getattr(outputs, term)
            if value is not None:
                self._term_totals[term] += float(value.detach())
                self._term_counts[term] += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for term, total in self._term_totals.items():
            logs[term] = round(total / max(self._term_counts[term], 1), 6)
        self._term_totals.clear()
        self._term_counts.clear()
        prefixed = {
            (key if key in ("epoch", "step") or "/" in key else f"{self.label}/{key}"): value
            for key, value in logs.items()
        }
        super().log(prefixed, start_time)
        logger.info("[%s] %s", self.label, {k: v for k, v in logs.items()})


class ReconstructorWarmupTrainer(IndexerStageTrainer):
    phase = Phase.RECONSTRUCTOR_WARMUP
    mode = IndexerMode.RECONSTRUCTOR_WARMUP
    trains_backbone = False


class EncoderWarmupTrainer(IndexerStageTrainer):
    phase = Phase.ENCODER_WARMUP
    mode = IndexerMode.CONTINUOUS


class CodebookTrainer(IndexerStageTrainer):
    """Straight-through training; from t = 2 on, batches are filled with prefix groups."""

    phase = Phase.CODEBOOK
    mode = IndexerMode.STRAIGHT_THROUGH
    groups_by_prefix = True


def encoder_layer_stack(model) -> torch.nn.ModuleList:
    """The encoder's list of transformer layers (`block` in T5, `layers` in BART, `encoder.layer` in BERT)."""
    encoder = model.backbone.get_encoder()
    stacks = [module for module in encoder.modules() if isinstance(module, torch.nn.ModuleList) and len(module) > 0]
    if not stacks:
        raise ValueError(f"Cannot find the layers of the {type(encoder).__name__} encoder to freeze.")
    return max(stacks, key=len)


def frozen_encoder_parameters(model, trainable_layers: int) -> list[torch.nn.Parameter]:
    """Encoder parameters outside its top `trainable_layers` layers (token embeddings included)."""
    layers = encoder_layer_stack(model)
    if not 0 <= trainable_layers <= len(layers):
        raise ValueError(
            f"`encoder_trainable_layers` must be in 0..{len(layers)} for this encoder, got {trainable_layers}."
        )
    trainable = {id(p) for layer in list(layers)[len(layers) - trainable_layers :] for p in layer.parameters()}
    return [p for p in model.backbone.get_encoder().parameters() if id(p) not in trainable]


def fresh_parameter_names(model) -> list[str]:
    """Parameters that do not come from a pretrained checkpoint: everything outside the backbone, and the
    cross-attention a bert2bert decoder adds to an encoder-only checkpoint."""
    is_bert2bert = getattr(model.config.backbone_config, "model_type", "") == "encoder-decoder"
    return [
        name
        for name, _ in model.named_parameters()
        if not name.startswith("backbone.") or (is_bert2bert and ".crossattention." in name)
    ]


STAGE_TRAINERS: dict[Phase, type[IndexerStageTrainer]] = {
    trainer.phase: trainer for trainer in (ReconstructorWarmupTrainer, EncoderWarmupTrainer, CodebookTrainer)
}
