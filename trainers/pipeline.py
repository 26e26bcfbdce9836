"""`IndexerTrainingPipeline`: Algorithm 1 of the paper as a resumable sequence of stages.

1. reconstructor warm-up (backbone frozen);
2. for each position t: encoder warm-up (continuous h^t), k-means codebook initialisation over the whole corpus,
   straight-through training, and assignment of c^t to every document (then frozen);
3. the `SemanticIDMap` with its dedup position, and the model, tokenizer, map, metrics JSON, card data and model
   card (README.md with plots) in `output_dir`; with `push_to_hub=True`, the same folder goes to the Hub.

Every finished stage is checkpointed under `output_dir/checkpoint-stage`; `resume=True` continues after the last
finished one, and a stage interrupted midway resumes from the Trainer's own checkpoints. Each stage reseeds from
`seed + stage index`, so a resumed run ends with the same ID map as an uninterrupted one. Under `torchrun`, the
Trainer runs DDP, k-means sees every rank's vectors, corpus passes are split across ranks and gathered, and only
rank 0 writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.distributed as dist
from transformers import set_seed

from ..hub_cards import LMIndexerCardData, ModelCardCallback, first_code_label_table, push_model_to_hub
from ..modeling_lmindexer import IndexerMode, LMIndexerForSemanticID, SemanticIDMap, __version__
from .arguments import IndexerTrainingArguments
from .assignment import assign_corpus, collect_hidden_states
from .data import Corpus
from .data_collators import IndexerDataCollator, prefix_keys
from .diagnostics import IndexerDiagnosticsCallback, code_diagnostics, collapse_warnings, reconstruction_f1
from .kmeans import kmeans_codebook
from .stage_trainers import STAGE_TRAINERS

logger = logging.getLogger("lmindexer")

STATE_FILE = "pipeline_state.json"
STAGE_CHECKPOINT = "checkpoint-stage"
MAP_FILE = "semantic_id_map.safetensors"


@dataclass(frozen=True)
class Stage:
    kind: str  # reconstructor_warmup | encoder_warmup | kmeans | codebook | assign
    position: int

    @property
    def name(self) -> str:
        return self.kind if self.kind == "reconstructor_warmup" else f"{self.kind}_t{self.position}"


def plan_stages(id_length: int) -> list[Stage]:
    stages = [Stage("reconstructor_warmup", 1)]
    for position in range(1, id_length + 1):
        stages += [Stage(kind, position) for kind in ("encoder_warmup", "kmeans", "codebook", "assign")]
    return stages


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class IndexerTrainingPipeline:
    """Runs the whole progressive procedure on one corpus. Call [`run`]."""

    def __init__(
        self,
        model: LMIndexerForSemanticID,
        tokenizer,
        corpus: Corpus,
        args: IndexerTrainingArguments,
        max_length: int = 512,
        auto_dedup: bool = False,
        card_data: LMIndexerCardData | None = None,
    ):
        if len(corpus) == 0:
            raise ValueError("The corpus is empty: there is nothing to index.")
        self.model = model
        self.tokenizer = tokenizer
        self.corpus = corpus
        self.args = args
        self.max_length = min(max_length, model.config.reconstructor_max_positions)
        self.auto_dedup = auto_dedup
        self.output_dir = Path(args.output_dir)
        self.card_data = card_data or LMIndexerCardData(task="semantic-indexing")
        self.card_callback = ModelCardCallback(self.card_data)
        self.stages = plan_stages(model.config.id_length)
        self.codes = np.zeros((len(corpus), 0), dtype=np.int64)
        self.metrics: dict[str, dict] = {}
        # Codes assigned by the diagnostics at the end of a straight-through stage, reused by the assign stage.
        self._pending_codes: np.ndarray | None = None
        _ = args.device  # sets up the process group under torchrun before ranks are read
        self.rank, self.world_size = _rank_and_world()
        self._dataset: datasets.Dataset | None = None
        # Taken before training: the Trainer aligns special-token ids in the config as it starts.
        self._fingerprint = self.fingerprint()

    # ------------------------------------------------------------------------------------------- identity
    def fingerprint(self) -> dict:
        """What a resume directory must match: model config, corpus and training schedule."""
        config = self.model.config.to_dict()
        for volatile in ("lmindexer_version", "transformers_version", "dedup_size", "_name_or_path", "architectures"):
            config.pop(volatile, None)
        corpus_hash = hashlib.sha256()
        for doc_id, text in zip(self.corpus.doc_ids, self.corpus.texts):
            corpus_hash.update(f"{doc_id}\t{text}\n".encode())
        schedule = {
            key: getattr(self.args, key)
            for key in sorted(vars(type(self.args)))
            if key.startswith(("reconstructor_warmup_", "encoder_warmup_", "codebook_", "kmeans_"))
        }
        schedule["seed"] = self.args.seed
        digest = lambda value: hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]  # noqa: E731
        return {"config": digest(config), "corpus": corpus_hash.hexdigest()[:16], "schedule": digest(schedule)}

    # ------------------------------------------------------------------------------------------------ run
    def run(self) -> SemanticIDMap:
        completed = self._restore() if self.args.resume else 0
        for index, stage in enumerate(self.stages):
            if index < completed:
                continue
            set_seed(self.args.seed + index)
            logger.info("[%s] starting stage %d/%d", stage.name, index + 1, len(self.stages))
            getattr(self, f"_run_{stage.kind}")(stage, index)
            self._checkpoint(index + 1)
        return self._finish()

    def _dataset_with_prefix(self, columns: int) -> datasets.Dataset:
        if self._dataset is None:
            encoded = self.tokenizer(self.corpus.texts, max_length=self.max_length, truncation=True)
            self._dataset = datasets.Dataset.from_dict(
                {
                    "row": list(range(len(self.corpus))),
                    "input_ids": encoded["input_ids"],
                    "attention_mask": encoded["attention_mask"],
                }
            )
        return self._dataset.add_column("prefix_codes", self.codes[:, :columns].tolist())

    def _train(self, stage: Stage, index: int) -> None:
        trainer_class = STAGE_TRAINERS[stage.kind]
        seed = self.args.seed + index
        stage_dir = self.output_dir / "stages" / stage.name
        position = stage.position
        collator = IndexerDataCollator(self.tokenizer, self.model.config.hint_ratios[position - 1], seed=seed)
        diagnostics = IndexerDiagnosticsCallback(lambda trainer: self._stage_diagnostics(stage, trainer))
        frozen = [] if trainer_class.trains_backbone else [p for p in self.model.backbone.parameters() if p.requires_grad]
        for parameter in frozen:
            parameter.requires_grad_(False)
        try:
            trainer = trainer_class(
                model=self.model,
                args=self.args.stage_arguments(stage.kind, str(stage_dir), seed),
                train_dataset=self._dataset_with_prefix(position - 1),
                data_collator=collator,
                processing_class=self.tokenizer,
                callbacks=[diagnostics, self.card_callback],
                position=position,
                prefix_keys=prefix_keys(self.codes[:, : position - 1], self.model.config.codebook_sizes),
                head_learning_rate=self.args.head_learning_rate,
            )
            diagnostics.trainer = trainer
            self.card_callback.stage = stage.name
            checkpoints = sorted(stage_dir.glob("checkpoint-*")) if stage_dir.exists() else []
            trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if checkpoints else None)
        finally:
            for parameter in frozen:
                parameter.requires_grad_(True)
        self.metrics[stage.name] = diagnostics.metrics
        self.card_data.record_stage(stage.name, metrics=diagnostics.metrics)

    _run_reconstructor_warmup = _train
    _run_encoder_warmup = _train
    _run_codebook = _train

    def _run_kmeans(self, stage: Stage, index: int) -> None:
        position = stage.position
        vectors = self._corpus_pass(
            lambda rows, progress: collect_hidden_states(
                self.model, self.tokenizer, self.corpus.texts, self.codes[:, : position - 1],
                self.args.assignment_batch_size, self.max_length, rows, progress,
            )
        )
        centroids = None
        if self.rank == 0:
            centroids = kmeans_codebook(
                vectors, self.model.config.codebook_sizes[position - 1], self.model.config.code_geometry,
                seed=self.args.seed + index, iterations=self.args.kmeans_iterations,
                progress=not self.args.disable_tqdm,
            )
        centroids = self._broadcast(centroids)
        with torch.no_grad():
            table = self.model.codebooks[position].weight
            table.copy_(torch.as_tensor(centroids, dtype=table.dtype, device=table.device))
        self.metrics[stage.name] = {
            "documents": len(vectors),
            "mean_hidden_norm": float(np.linalg.norm(vectors, axis=1).mean()),
        }
        self.card_data.record_stage(
            stage.name,
            hyperparameters={"method": "faiss k-means", "iterations": self.args.kmeans_iterations,
                             "geometry": self.model.config.code_geometry, "seed": self.args.seed + index},
            metrics=self.metrics[stage.name],
        )
        logger.info("[%s] codebook %d initialised by k-means over %d documents", stage.name, position, len(vectors))

    def _run_assign(self, stage: Stage, index: int) -> None:
        position = stage.position
        if self._pending_codes is None or self._pending_codes.shape[1] != position:
            self._pending_codes = self._assign_all(position)
        self.codes = self._pending_codes[:, :position].copy()
        metrics = code_diagnostics(self.codes, self.model.config.codebook_sizes, self.corpus.labels)
        self.metrics[stage.name] = metrics
        for warning in collapse_warnings(metrics, position):
            logger.warning("[%s] %s", stage.name, warning)

    # -------------------------------------------------------------------------------------- corpus passes
    def _assign_all(self, position: int) -> np.ndarray:
        return self._corpus_pass(
            lambda rows, progress: assign_corpus(
                self.model, self.tokenizer, self.corpus.texts, position, self.codes[:, : position - 1],
                self.args.assignment_batch_size, self.max_length, rows, progress,
            )
        )

    def _corpus_pass(self, run) -> np.ndarray:
        """Run `run(rows, progress)` over this rank's share of the corpus and gather every rank's rows."""
        self.model.to(self.args.device)
        rows = list(range(self.rank, len(self.corpus), self.world_size))
        result = run(rows, not self.args.disable_tqdm and self.rank == 0)
        if self.world_size == 1:
            return result
        shares = [None] * self.world_size
        dist.all_gather_object(shares, (rows, result[rows]))
        for share_rows, values in shares:
            result[share_rows] = values
        return result

    def _broadcast(self, value):
        if self.world_size == 1:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def _stage_diagnostics(self, stage: Stage, trainer) -> dict:
        metrics = {"reconstruction_f1": self._reconstruction_f1(stage)}
        if stage.kind == "codebook":
            self._pending_codes = self._assign_all(stage.position)
            metrics.update(code_diagnostics(self._pending_codes, self.model.config.codebook_sizes, self.corpus.labels))
            for warning in collapse_warnings(metrics, stage.position):
                logger.warning("[%s] %s", stage.name, warning)
        return metrics

    @torch.no_grad()
    def _reconstruction_f1(self, stage: Stage) -> float:
        sample = np.random.default_rng(self.args.seed).permutation(len(self.corpus))[: self.args.diagnostics_sample]
        dataset = self._dataset_with_prefix(stage.position - 1).select(sorted(sample.tolist()))
        collator = IndexerDataCollator(self.tokenizer, self.model.config.hint_ratios[stage.position - 1], self.args.seed)
        mode = {"reconstructor_warmup": IndexerMode.RECONSTRUCTOR_WARMUP, "encoder_warmup": IndexerMode.CONTINUOUS}
        was_training = self.model.training
        self.model.eval()
        predictions, targets = [], []
        device = next(self.model.parameters()).device
        for start in range(0, len(dataset), self.args.assignment_batch_size):
            batch = collator([dataset[i] for i in range(start, min(start + self.args.assignment_batch_size, len(dataset)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            output = self.model(**batch, position=stage.position, mode=mode.get(stage.kind, IndexerMode.STRAIGHT_THROUGH))
            predictions.append(output.reconstruction_predictions.cpu().numpy())
            targets.append(output.reconstruction_targets.cpu().numpy())
        self.model.train(was_training)
        return reconstruction_f1(np.concatenate(predictions), np.concatenate(targets))

    # ------------------------------------------------------------------------------------ checkpointing
    def _checkpoint(self, completed: int) -> None:
        if self.rank == 0:
            staging = self.output_dir / f"{STAGE_CHECKPOINT}.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            self.model.save_pretrained(staging)
            np.save(staging / "codes.npy", self.codes, allow_pickle=False)
            state = {
                "completed_stages": completed,
                "stage_names": [stage.name for stage in self.stages],
                "fingerprint": self._fingerprint,
                "metrics": self.metrics,
                "card": self.card_data.body_fields(),
                "lmindexer_version": __version__,
            }
            (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
            final = self.output_dir / STAGE_CHECKPOINT
            previous = self.output_dir / f"{STAGE_CHECKPOINT}.old"
            shutil.rmtree(previous, ignore_errors=True)
            if final.exists():
                final.rename(previous)
            staging.rename(final)
            shutil.rmtree(previous, ignore_errors=True)
            shutil.rmtree(self.output_dir / "stages" / self.stages[completed - 1].name, ignore_errors=True)
        if self.world_size > 1:
            dist.barrier()

    def _restore(self) -> int:
        folder = self.output_dir / STAGE_CHECKPOINT
        if not (folder / STATE_FILE).exists():
            logger.info("No finished stage in %s; starting from the beginning.", self.output_dir)
            return 0
        state = json.loads((folder / STATE_FILE).read_text())
        expected = self._fingerprint
        if state["fingerprint"] != expected:
            differing = [key for key in expected if state["fingerprint"].get(key) != expected[key]]
            raise ValueError(
                f"{self.output_dir} was made by a run with a different {', '.join(differing)}; it cannot be resumed "
                "with these settings. Use another --output_dir or the original settings."
            )
        restored = LMIndexerForSemanticID.from_pretrained(folder)
        self.model.load_state_dict(restored.state_dict())
        self.codes = np.load(folder / "codes.npy", allow_pickle=False)
        self.metrics = state["metrics"]
        if "card" in state:
            self.card_data = LMIndexerCardData(**state["card"])
            self.card_callback.card_data = self.card_data
        logger.info("Resuming after stage %s", state["stage_names"][state["completed_stages"] - 1])
        return int(state["completed_stages"])

    # ------------------------------------------------------------------------------------------- finish
    def _finish(self) -> SemanticIDMap:
        config = self.model.config
        if self.auto_dedup:
            _, group_sizes = np.unique(prefix_keys(self.codes, config.codebook_sizes), return_counts=True)
            largest = int(group_sizes.max())
            # Headroom for zero-shot documents added later by `lmindexer assign`: the next power of two.
            config.dedup_size = 1 << max(largest - 1, 0).bit_length()
            logger.info("dedup_size set to %d (largest group: %d documents)", config.dedup_size, largest)
        id_map = SemanticIDMap.from_codes(
            self.corpus.doc_ids, torch.as_tensor(self.codes), config.codebook_sizes, config.dedup_size,
            doc_titles=self.corpus.titles,
        )
        metrics = {"stages": self.metrics, "id_map": id_map.statistics(), "fingerprint": self._fingerprint}
        if self.corpus.labels is not None:  # the last assign stage measured the final codes against the labels
            metrics["final"] = self.metrics[self.stages[-1].name]
        self.final_metrics = metrics
        self.model.id_map = id_map
        self._fill_card(metrics)
        self.model.card_data = self.card_data
        if self.rank == 0:
            self.model.save_pretrained(self.output_dir)  # with the ID map and the card
            self.tokenizer.save_pretrained(self.output_dir)
            (self.output_dir / "indexer_metrics.json").write_text(json.dumps(metrics, indent=2))
            if self.args.push_to_hub:
                self._push()
        if self.world_size > 1:
            dist.barrier()
        return id_map

    def _fill_card(self, metrics: dict) -> None:
        final = self.metrics[self.stages[-1].name]  # diagnostics of the final codes
        dataset = self.card_data.datasets[0] if self.card_data.datasets else "training corpus"
        self.card_data.add_evaluation(dataset, "train", {key: value for key, value in final.items() if key.startswith(("ami_", "perplexity_", "utilisation_")) or key == "collision_rate"})
        if self.corpus.labels is not None:
            self.card_data.label_distribution = first_code_label_table(self.model.id_map, self.corpus.labels)

    def _push(self) -> None:
        repo_id = self.args.hub_model_id or self.output_dir.resolve().name
        commit = push_model_to_hub(
            self.model, repo_id, tokenizer=self.tokenizer, card_data=self.card_data, private=self.args.hub_private_repo,
            token=self.args.hub_token, revision=self.args.hub_revision, commit_message="LMIndexer: trained indexer",
        )
        logger.info("Pushed the indexer to %s (commit %s)", repo_id, getattr(commit, "oid", commit))
