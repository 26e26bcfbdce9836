"""`IndexerTrainer`: Algorithm 1 of the paper, one public method per phase, composed by `train()`.

```python
trainer = IndexerTrainer(model, tokenizer, corpus, IndexerTrainingArguments(output_dir="runs/x"))
id_map = trainer.train()            # every phase in order, resumable, then the ID map, saved (and pushed)
# or phase by phase:
trainer.warm_up_reconstructor()
for t in range(1, model.config.id_length + 1):
    trainer.warm_up_encoder(t); trainer.init_codebook(t); trainer.train_codebook(t); trainer.assign(t)
id_map = trainer.build_id_map(); trainer.save()
```

Each phase reseeds from `seed + its index in the plan`, so a phase run on its own, a resumed run and an
uninterrupted run see the same randomness. Finished stages are checkpointed (`stage_checkpoint.py`), corpus-wide
passes are split across `torch.distributed` ranks (`corpus_passes.py`), and only rank 0 writes.

Why past 400 lines: the phases, the run that composes them and their diagnostics are one class, read top to
bottom in the order Algorithm 1 runs them; resume and distributed passes already live in their own modules.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import set_seed

from ...hub_cards import LMIndexerCardData, ModelCardCallback, first_code_label_table, push_model_to_hub
from ...modeling_lmindexer import LMIndexerForSemanticID, SemanticIDMap, __version__
from ...modeling_lmindexer.configuration_lmindexer import SEMANTIC_INDEXING
from ...modeling_lmindexer.semantic_id_map import prefix_keys
from ..data.corpus import Corpus, text_digests
from ..folders.model_folder import recover_model_folder, write_model_folder
from .arguments import IndexerTrainingArguments
from .collators import IndexerDataCollator
from .corpus_passes import DistributedPasses, assign_corpus, collect_hidden_states
from .diagnostics import (
    METRICS_FILE,
    IndexerDiagnosticsCallback,
    code_diagnostics,
    collapse_warnings,
    reconstruction_f1,
)
from .encoder_cache import EncoderStateCache
from .id_layout import automatic_dedup_size, check_codebook_sizes
from .kmeans import kmeans_codebook
from .stage_checkpoint import StageCheckpoints, run_config, run_fingerprint
from .stage_trainers import STAGE_TRAINERS
from .stages import Phase, Stage, plan_stages

logger = logging.getLogger("lmindexer")


class IndexerTrainer:
    """Trains an [`LMIndexerForSemanticID`] on a [`Corpus`] and builds its [`SemanticIDMap`].

    Args:
        model, tokenizer: the indexer and its tokenizer.
        corpus: the documents to index.
        args: shared and per-phase training arguments.
        max_length: tokens per document (capped by the reconstructor's positions).
        auto_dedup: size the dedup position to the data when the ID map is built.
        card_data: what the model card says; filled in as the phases run.
    """

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
        self.card_data = card_data or LMIndexerCardData(task=SEMANTIC_INDEXING)
        self.card_callback = ModelCardCallback(self.card_data)
        self.stages = plan_stages(model.config.id_length)
        self.codes = np.zeros((len(corpus), 0), dtype=np.int64)  # frozen codes c^1..c^t so far
        self.metrics: dict[str, dict] = {}
        self.final_metrics: dict | None = None
        _ = args.device  # sets up the process group under torchrun before ranks are read
        self.passes = DistributedPasses(len(corpus))
        # Files of the final folder besides model, tokenizer and metrics (name -> text), written by `save`.
        self.extra_files: dict[str, str] = {}
        if self.is_main_process:
            recover_model_folder(self.output_dir)  # a save killed mid-swap: back to one complete folder first
        self.passes.barrier()
        # Taken before training: the Trainer aligns special-token ids in the config as it starts.
        self.checkpoints = StageCheckpoints(
            self.output_dir,
            run_fingerprint(model.config, corpus, args, self.max_length),
            config=run_config(model.config),
        )
        self._tokenised: datasets.Dataset | None = None
        self._encoder_states: EncoderStateCache | None = None
        # Codes computed with the current weights, reused until a phase changes the weights.
        self._weights_version = 0
        self._current_codes: tuple[int, int, np.ndarray] | None = None

    @property
    def is_main_process(self) -> bool:
        return self.passes.is_main

    @property
    def fingerprint(self) -> dict[str, str]:
        return self.checkpoints.fingerprint

    # ----------------------------------------------------------------------------------------------- phases
    def warm_up_reconstructor(self) -> dict:
        """The reconstructor learns to rebuild documents from hints alone, with the backbone frozen."""
        return self._train_phase(Stage(Phase.RECONSTRUCTOR_WARMUP, 1))

    def warm_up_encoder(self, position: int) -> dict:
        """Train with the continuous `h^t` in place of a code vector (against posterior collapse)."""
        return self._train_phase(Stage(Phase.ENCODER_WARMUP, position))

    def init_codebook(self, position: int) -> dict:
        """Codebook t = faiss k-means over the `h^t` of the whole corpus, in the geometry codes are assigned in."""
        stage = self._begin(Stage(Phase.CODEBOOK_INIT, position))
        config = self.model.config
        prefix = self.codes[:, : position - 1]
        vectors = self._corpus_pass(
            lambda rows: collect_hidden_states(
                self.model,
                self.tokenizer,
                self.corpus.texts,
                prefix,
                self.args.assignment_batch_size,
                self.max_length,
                rows,
                self._progress,
            )
        )
        seed = self.stage_seed(stage)
        if config.center_hidden:
            # Vectors come out minus the current centre; moving the centre by their mean centres them.
            shift = vectors.mean(axis=0)
            with torch.no_grad():
                centers = self.model.hidden_centers
                centers[position - 1] += torch.as_tensor(shift, dtype=centers.dtype, device=centers.device)
            vectors = vectors - shift
        centroids = None
        if self.is_main_process:
            centroids = kmeans_codebook(
                vectors,
                config.codebook_sizes[position - 1],
                config.code_geometry,
                seed=seed,
                iterations=self.args.kmeans_iterations,
                progress=not self.args.disable_tqdm,
            )
        centroids = self.passes.broadcast(centroids)
        with torch.no_grad():
            table = self.model.codebooks[position].weight
            table.copy_(torch.as_tensor(centroids, dtype=table.dtype, device=table.device))
        self._weights_version += 1
        metrics = {"documents": len(vectors), "mean_hidden_norm": float(np.linalg.norm(vectors, axis=1).mean())}
        self.metrics[stage.name] = metrics
        self.card_data.record_stage(
            stage.name,
            hyperparameters={
                "method": "faiss k-means",
                "iterations": self.args.kmeans_iterations,
                "geometry": config.code_geometry,
                "seed": seed,
            },
            metrics=metrics,
        )
        logger.info("[%s] codebook %d initialised by k-means over %d documents", stage.name, position, len(vectors))
        return metrics

    def train_codebook(self, position: int) -> dict:
        """Straight-through training with codebook t; from t = 2 on, batches hold whole prefix groups."""
        return self._train_phase(Stage(Phase.CODEBOOK, position))

    def assign(self, position: int) -> dict:
        """Give every document its code c^t (greedy, given the frozen c^{<t}) and freeze it."""
        stage = self._begin(Stage(Phase.ASSIGN, position))
        self.codes = self.codes_with_current_weights(position)[:, :position].copy()
        metrics = code_diagnostics(self.codes, self.model.config.codebook_sizes, self.corpus.labels)
        self.metrics[stage.name] = metrics
        for warning in collapse_warnings(metrics, position):
            logger.warning("[%s] %s", stage.name, warning)
        return metrics

    def build_id_map(self) -> SemanticIDMap:
        """The ID map of the frozen codes plus the dedup position, set on the model with the final metrics."""
        config = self.model.config
        if self.codes.shape[1] != config.id_length:
            raise ValueError(
                f"Assign all {config.id_length} positions before building the ID map "
                f"({self.codes.shape[1]} assigned so far)."
            )
        if self.auto_dedup:
            config.dedup_size = automatic_dedup_size(self.codes, config.codebook_sizes)
            logger.info("dedup_size set to %d to fit the largest group of documents sharing an ID", config.dedup_size)
        id_map = SemanticIDMap.from_codes(
            self.corpus.doc_ids,
            torch.as_tensor(self.codes),
            config.codebook_sizes,
            config.dedup_size,
            doc_titles=self.corpus.titles,
            text_digests=text_digests(self.corpus.texts),
        )
        final = self.metrics[Stage(Phase.ASSIGN, config.id_length).name]  # diagnostics of the final codes
        self.final_metrics = {"stages": self.metrics, "id_map": id_map.statistics(), "fingerprint": self.fingerprint}
        if self.corpus.labels is not None:
            self.final_metrics["final"] = final
        self.model.attach_id_map(id_map, force=True)  # a new map for these weights: the model is bound to it
        dataset = self.card_data.datasets[0] if self.card_data.datasets else "training corpus"
        summary = {
            key: value
            for key, value in final.items()
            if key.startswith(("ami_", "perplexity_", "utilisation_")) or key == "collision_rate"
        }
        self.card_data.add_evaluation(dataset, "train", summary)
        if self.corpus.labels is not None:
            self.card_data.label_distribution = first_code_label_table(id_map, self.corpus.labels)
        self.model.card_data = self.card_data
        return id_map

    def save(self, output_dir: str | Path | None = None) -> None:
        """Write the final indexer folder, from the main process, so that it goes from one complete state to the next.

        What `ls runs/x` shows:

        - `runs/x/`: the indexer (`config.json`, `model.safetensors`, `semantic_id_map.safetensors`, the tokenizer,
          `README.md` and `assets/`, `indexer_metrics.json`, `id_method.json` and the modeling code), next to the
          run's own `checkpoint-stage/` and `stages/`;
        - `runs/x.saving/x/`, only while saving: the new indexer, written there file by file;
        - `runs/x.old/`, only for the instant of the swap: the previous complete folder.

        Every file of the new indexer is written into `runs/x.saving/x/` first; then `runs/x` becomes `runs/x.old`,
        the new folder becomes `runs/x`, the run's checkpoints, logs and any other file that is no model file move
        over from `runs/x.old`, which is removed. Killed at any point, `runs/x` holds weights, map, tokenizer, card
        and metrics of one and the same save (the previous one until the swap); a kill between the two renames
        leaves only `runs/x.old`, which loading names and the next run (or save) puts back
        (`lmindexer.trainers.folders.model_folder`).
        """
        folder = Path(output_dir or self.output_dir)

        def write(staging: Path) -> None:
            self.model.save_pretrained(staging)
            self.tokenizer.save_pretrained(staging)
            (staging / METRICS_FILE).write_text(json.dumps(self.final_metrics, indent=2))
            for name, text in self.extra_files.items():
                (staging / name).write_text(text)

        if self.is_main_process:
            write_model_folder(folder, write)
        self.passes.barrier()

    def push(self):
        """Publish the trained indexer (weights, tokenizer, ID map, code, card) to `hub_model_id`, once."""
        if not self.is_main_process:
            return None
        repo_id = self.args.hub_model_id or self.output_dir.resolve().name
        commit = push_model_to_hub(
            self.model,
            repo_id,
            tokenizer=self.tokenizer,
            card_data=self.card_data,
            private=self.args.hub_private_repo,
            token=self.args.hub_token,
            revision=self.args.hub_revision,
            commit_message="LMIndexer: trained indexer",
        )
        logger.info("Pushed the indexer to %s (commit %s)", repo_id, getattr(commit, "oid", commit))
        return commit

    # --------------------------------------------------------------------------------------------- the run
    def train(self) -> SemanticIDMap:
        """Every stage in order (continuing after the last finished one with `resume`), then build, save and,
        with `push_to_hub`, push the ID map and the indexer."""
        check_codebook_sizes(self.model.config.codebook_sizes, self.model.config.id_length, len(self.corpus))
        completed = self.restore() if self.args.resume else 0
        for index in range(completed, len(self.stages)):
            stage = self.stages[index]
            logger.info("[%s] starting stage %d/%d", stage.name, index + 1, len(self.stages))
            self.run_stage(stage)
            self.checkpoint(index + 1)
        id_map = self.build_id_map()
        self.save()
        if self.args.push_to_hub:
            self.push()
        return id_map

    def run_stage(self, stage: Stage) -> dict:
        match stage.phase:
            case Phase.RECONSTRUCTOR_WARMUP:
                return self.warm_up_reconstructor()
            case Phase.ENCODER_WARMUP:
                return self.warm_up_encoder(stage.position)
            case Phase.CODEBOOK_INIT:
                return self.init_codebook(stage.position)
            case Phase.CODEBOOK:
                return self.train_codebook(stage.position)
            case Phase.ASSIGN:
                return self.assign(stage.position)
        raise ValueError(f"Unknown phase {stage.phase!r}.")

    def checkpoint(self, completed: int) -> None:
        """Checkpoint the state after the first `completed` stages and drop the finished stage's Trainer files."""
        if self.is_main_process:
            state = {
                "completed_stages": completed,
                "stage_names": [stage.name for stage in self.stages],
                "metrics": self.metrics,
                "card": self.card_data.body_fields(),
                "lmindexer_version": __version__,
            }
            self.checkpoints.save(self.model, self.codes, state)
            self.checkpoints.close_stage(self.stages[completed - 1].name)
        self.passes.barrier()

    def restore(self) -> int:
        """Load the last finished stage's model, codes, metrics and card; returns how many stages it finished."""
        state = self.checkpoints.restore()
        if state is None:
            logger.info("No finished stage in %s; starting from the beginning.", self.output_dir)
            return 0
        restored = LMIndexerForSemanticID.from_pretrained(state.folder)
        self.model.load_state_dict(restored.state_dict())
        self._weights_version += 1
        self.codes = state.codes
        self.metrics = state.metrics
        if state.card is not None:
            self.card_data = LMIndexerCardData(**state.card)
            self.card_callback.card_data = self.card_data
        logger.info("Resuming after stage %s", state.stage_names[state.completed_stages - 1])
        return state.completed_stages

    # ----------------------------------------------------------------------------------------- diagnostics
    def stage_diagnostics(self, stage: Stage) -> dict:
        """Reconstruction F1 after a trained phase; after straight-through training, also the ID metrics of the
        codes the current weights give."""
        metrics = {"reconstruction_f1": self.reconstruction_f1(stage)}
        if stage.phase is Phase.CODEBOOK:
            codes = self.codes_with_current_weights(stage.position)
            metrics.update(code_diagnostics(codes, self.model.config.codebook_sizes, self.corpus.labels))
            for warning in collapse_warnings(metrics, stage.position):
                logger.warning("[%s] %s", stage.name, warning)
        return metrics

    def codes_with_current_weights(self, position: int) -> np.ndarray:
        """Greedy codes `[N, position]` of every document, the frozen `c^{<t}` pinned; computed once per weights."""
        cached = self._current_codes
        if cached is not None and cached[:2] == (position, self._weights_version):
            return cached[2]
        prefix = self.codes[:, : position - 1]
        codes = self._corpus_pass(
            lambda rows: assign_corpus(
                self.model,
                self.tokenizer,
                self.corpus.texts,
                position,
                prefix,
                self.args.assignment_batch_size,
                self.max_length,
                rows,
                self._progress,
            )
        )
        self._current_codes = (position, self._weights_version, codes)
        return codes

    @torch.no_grad()
    def reconstruction_f1(self, stage: Stage) -> float:
        """Token-level macro F1 of the reconstructor on a fixed sample of documents, in the stage's mode."""
        sample = np.random.default_rng(self.args.seed).permutation(len(self.corpus))[: self.args.diagnostics_sample]
        dataset = self._tokenised_with_prefix(stage.position - 1).select(sorted(sample.tolist()))
        collator = IndexerDataCollator(
            self.tokenizer, self.model.config.hint_ratios[stage.position - 1], self.args.seed
        )
        mode = STAGE_TRAINERS[stage.phase].mode
        was_training = self.model.training
        self.model.eval()
        predictions, targets = [], []
        device = next(self.model.parameters()).device
        step = self.args.assignment_batch_size
        for start in range(0, len(dataset), step):
            batch = collator([dataset[i] for i in range(start, min(start + step, len(dataset)))])
            batch = {key: value.to(device) for key, value in batch.items()}
            output = self.model(**batch, position=stage.position, mode=mode)
            predictions.append(output.reconstruction_predictions.cpu().numpy())
            targets.append(output.reconstruction_targets.cpu().numpy())
        self.model.train(was_training)
        return reconstruction_f1(np.concatenate(predictions), np.concatenate(targets))

    # -------------------------------------------------------------------------------------------- plumbing
    def stage_seed(self, stage: Stage) -> int:
        return self.args.seed + self.stages.index(stage)

    def _begin(self, stage: Stage) -> Stage:
        if not 1 <= stage.position <= self.model.config.id_length:
            raise ValueError(
                f"Position {stage.position} does not exist: this indexer learns positions "
                f"1..{self.model.config.id_length}."
            )
        if stage.phase is not Phase.RECONSTRUCTOR_WARMUP and self.codes.shape[1] < stage.position - 1:
            raise ValueError(
                f"{stage.name} needs the codes of positions 1..{stage.position - 1}; assign them first "
                f"({self.codes.shape[1]} assigned so far)."
            )
        set_seed(self.stage_seed(stage))
        return stage

    @property
    def _progress(self) -> bool:
        return not self.args.disable_tqdm and self.is_main_process

    def _corpus_pass(self, pass_over_rows) -> np.ndarray:
        self.model.to(self.args.device)
        return self.passes.run(pass_over_rows)

    def frozen_encoder_states(self) -> EncoderStateCache | None:
        """With `encoder_trainable_layers=0` the encoder never changes, so its states are computed once per run."""
        if self.args.encoder_trainable_layers != 0:
            return None
        if self._encoder_states is None:
            self.model.to(self.args.device)
            self._encoder_states = EncoderStateCache.build(
                self.model,
                self._tokenised_with_prefix(0)["input_ids"],
                self.tokenizer.pad_token_id,
                self.args.assignment_batch_size,
            )
        return self._encoder_states

    def _tokenised_with_prefix(self, columns: int) -> datasets.Dataset:
        if self._tokenised is None:
            encoded = self.tokenizer(self.corpus.texts, max_length=self.max_length, truncation=True)
            self._tokenised = datasets.Dataset.from_dict(
                {
                    "row": list(range(len(self.corpus))),
                    "input_ids": encoded["input_ids"],
                    "attention_mask": encoded["attention_mask"],
                }
            )
        return self._tokenised.add_column("prefix_codes", self.codes[:, :columns].tolist())

    def _train_phase(self, stage: Stage) -> dict:
        stage = self._begin(stage)
        seed = self.stage_seed(stage)
        position = stage.position
        trainer_class = STAGE_TRAINERS[stage.phase]
        stage_dir = self.checkpoints.stage_folder(stage.name)
        resume_from = None
        if self.is_main_process:  # the main process clears or checks the folder before others read it
            resume_from = self.checkpoints.open_stage(stage.name, seed, self.args.resume)
        self.passes.barrier()
        if not self.is_main_process:
            resume_from = self.checkpoints.open_stage(stage.name, seed, self.args.resume, writer=False)
        diagnostics = IndexerDiagnosticsCallback(lambda trainer: self.stage_diagnostics(stage))
        self._weights_version += 1
        trainer = trainer_class(
            model=self.model,
            args=self.args.phase_arguments(stage.phase, str(stage_dir), seed),
            train_dataset=self._tokenised_with_prefix(position - 1),
            data_collator=IndexerDataCollator(
                self.tokenizer,
                self.model.config.hint_ratios[position - 1],
                seed=seed,
                encoder_states=self.frozen_encoder_states(),
            ),
            processing_class=self.tokenizer,
            callbacks=[diagnostics, self.card_callback],
            position=position,
            prefix_keys=prefix_keys(self.codes[:, : position - 1], self.model.config.codebook_sizes),
            head_learning_rate=self.args.head_learning_rate,
            encoder_trainable_layers=self.args.encoder_trainable_layers,
            groups_by_prefix=self.args.encoder_warmup_groups_by_prefix if stage.phase is Phase.ENCODER_WARMUP else None,
        )
        diagnostics.trainer = trainer
        self.card_callback.stage = stage.name
        trainer.train(resume_from_checkpoint=resume_from)
        self.metrics[stage.name] = diagnostics.metrics
        self.card_data.record_stage(stage.name, metrics=diagnostics.metrics)
        return diagnostics.metrics
