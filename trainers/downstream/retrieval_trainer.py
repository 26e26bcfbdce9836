"""`GenerativeRetrievalTrainer`: teacher-forced (text, ID) training; evaluation by constrained beam search.

`Seq2SeqTrainer` passes no generation kwargs to `generate` during training-time evaluation, so its default
`evaluate` would decode with one beam. This trainer evaluates through `model.retrieve` with its own beam
settings instead (`evaluation.retrieval_metrics`, as `lmindexer evaluate` does), and reports Recall, NDCG, MAP and
MRR at each k, and `prefix_right_dedup_wrong@1`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

from ..folders.trainer_saves import HubCardTrainerMixin
from .evaluation import parse_ks, retrieval_metrics


@dataclass
class RetrievalTrainingArguments(Seq2SeqTrainingArguments):
    """Defaults follow the paper's downstream recommendation / product search setting (batch 32, lr 1e-3, AdamW eps
    1e-6)."""

    output_dir: str = field(default="runs/retriever")
    per_device_train_batch_size: int = field(default=32)
    learning_rate: float = field(default=1e-3)
    adam_epsilon: float = field(default=1e-6, metadata={"help": "AdamW epsilon; the paper's 1e-6."})
    remove_unused_columns: bool = field(default=False)
    eval_num_beams: int = field(default=20, metadata={"help": "Beams of the constrained search at evaluation."})
    eval_ks: str = field(default="5,10", metadata={"help": "Cut-offs k of the reported metrics."})
    eval_batch_queries: int = field(default=32, metadata={"help": "Queries per generate call at evaluation."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start a new run (no --resume_from_checkpoint) in an output_dir that holds an earlier run's "
            "checkpoint-* folders, removing them; without it such a run is refused."
        },
    )

    @property
    def ks(self) -> list[int]:
        return parse_ks(self.eval_ks)


class GenerativeRetrievalTrainer(HubCardTrainerMixin, Seq2SeqTrainer):
    """Pass `card_data=LMIndexerCardData(...)` to name datasets and the base model in the card; with
    `push_to_hub=True`, every pushed checkpoint carries the ID map, code, tokenizer and the current card."""

    # A `run_guard.FinetuneRunGuard` set by `finetune_retriever`: every save carries the run's fingerprint.
    run_guard = None

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        if self.run_guard is not None and self.args.should_save:
            self.run_guard.stamp(output_dir if output_dir is not None else self.args.output_dir)

    def _issue_warnings_after_load(self, load_result) -> None:
        # A tied output head is not written to a checkpoint (it is the input table), so reloading the best checkpoint
        # reports it missing. Those keys are re-tied, not missing: only other keys are worth a warning.
        model = self.accelerator.unwrap_model(self.model)
        tied = set(getattr(model, "all_tied_weights_keys", None) or ())
        if tied and load_result.missing_keys and set(load_result.missing_keys) <= tied:
            model.tie_weights()
            load_result = type(load_result)(missing_keys=[], unexpected_keys=load_result.unexpected_keys)
        super()._issue_warnings_after_load(load_result)

    def train(self, *args, **kwargs):
        # For the learning curve: training seconds at each evaluation, the evaluations' own time left out.
        self._train_started, self._evaluation_seconds = time.perf_counter(), 0.0
        return super().train(*args, **kwargs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval", **gen_kwargs) -> dict:
        evaluation_started = time.perf_counter()
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("GenerativeRetrievalTrainer.evaluate needs an eval_dataset.")
        model = self.accelerator.unwrap_model(self.model)
        if hasattr(model, "get_base_model"):  # a peft wrapper: retrieve through the wrapped model
            model = model.get_base_model() if not hasattr(model.base_model, "retrieve") else model.base_model
        was_training = model.training
        model.eval()
        # Plain `Seq2SeqTrainingArguments` lack the evaluation settings: their defaults then apply.
        num_beams = gen_kwargs.get("num_beams", getattr(self.args, "eval_num_beams", 20))
        metrics = retrieval_metrics(
            model,
            self.processing_class,
            dataset,
            getattr(self.args, "ks", [5, 10]),
            num_beams,
            getattr(self.args, "eval_batch_queries", 32),
        )
        model.train(was_training)
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in metrics.items()}
        if getattr(self, "_train_started", None) is not None:
            trained = evaluation_started - self._train_started - self._evaluation_seconds
            metrics[f"{metric_key_prefix}_train_seconds"] = round(trained, 1)
            self._evaluation_seconds += time.perf_counter() - evaluation_started
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def apply_lora(model, target_modules: list[str], rank: int = 8, alpha: int = 16, dropout: float = 0.05):
    """LoRA on the backbone's named linear layers; the (ID-token) embeddings and LM head stay fully trainable.

    peft keys default target modules by `model_type`, which it does not know for a custom type, so
    `target_modules` must be given, e.g. `["q", "v"]` for T5 or `["query", "value"]` for BERT.
    """
    from peft import LoraConfig, get_peft_model

    if not target_modules:
        raise ValueError(
            "Give `target_modules` explicitly (e.g. ['q', 'v'] for T5): peft cannot infer them for lmindexer."
        )
    embedding_names = sorted(
        {
            name.rsplit(".", 1)[0]
            for name, _ in model.named_parameters()
            if name.endswith(("shared.weight", "lm_head.weight", "word_embeddings.weight", "embed_tokens.weight"))
        }
    )
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, modules_to_save=embedding_names
    )
    return get_peft_model(model, config)
