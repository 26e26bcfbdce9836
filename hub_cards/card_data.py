"""`LMIndexerCardData`: everything a model card says, gathered during training and saved with the model.

Only a few fields are Hub metadata (the YAML header: license, tags, base model, datasets, `model-index`); the
rest (per-stage hyperparameters, indexing diagnostics, evaluation tables, the label distribution per first
code) is rendered into the card's body. Training writes it to `lmindexer_card.json` next to the weights so that
`lmindexer push` can build the same card later, in another process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CardData, EvalResult
from huggingface_hub.repocard_data import eval_results_to_model_index

from ..modeling_lmindexer.atomic_writes import atomic_file
from ..modeling_lmindexer.configuration_lmindexer import RECOMMENDATION, RETRIEVAL, SEMANTIC_INDEXING

CARD_DATA_FILE = "lmindexer_card.json"
HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # namespaced, as models are
HUB_ID = re.compile(rf"{HUB_REPO_ID.pattern}|[A-Za-z0-9][\w.-]*")  # datasets may still be canonical names
DEFAULT_TAGS = ("lmindexer", "semantic-ids", "generative-retrieval", "custom_code")
# Keys that go to the YAML header; `model-index` is derived from `eval_results`.
METADATA_KEYS = ("language", "license", "library_name", "tags", "base_model", "datasets", "pipeline_tag")
TASK_TITLES = {
    SEMANTIC_INDEXING: "Semantic indexing",
    RECOMMENDATION: "Sequential recommendation",
    RETRIEVAL: "Generative retrieval",
}


@dataclass
class LMIndexerCardData(CardData):
    """Model card contents for an LMIndexer indexer or retriever.

    Args:
        model_name: title of the card; defaults to the repo name.
        model_id: Hub repo id the usage snippets load (`org/lmindexer-beauty`).
        language, license: Hub metadata.
        base_model: the pretrained backbone the model started from (a Hub id or a path).
        datasets: datasets the model was trained on (Hub ids or names).
        task: `semantic-indexing` for an indexer, `recommendation` or `retrieval` for a retriever.
        stage_hyperparameters: per training stage, the settings it ran with (filled by `ModelCardCallback`).
        stage_metrics: per training stage, its diagnostics and final training loss.
        eval_results: `{"dataset", "split", "metrics": {name: value}}` entries, one per evaluated dataset.
        label_field: the document field used for label diagnostics, when there was one.
        label_distribution: documents per (first code, label) for the most populated first codes
            (see `label_distribution_table`).
    """

    model_name: str | None = None
    model_id: str | None = None
    language: str | list[str] | None = None
    license: str | None = None
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    task: str = SEMANTIC_INDEXING
    tags: list[str] = field(default_factory=lambda: list(DEFAULT_TAGS))
    library_name: str = "transformers"
    stage_hyperparameters: dict[str, dict] = field(default_factory=dict)
    stage_metrics: dict[str, dict] = field(default_factory=dict)
    eval_results: list[dict] = field(default_factory=list)
    label_field: str | None = None
    label_distribution: dict | None = None

    def __post_init__(self) -> None:
        if self.task not in TASK_TITLES:
            raise ValueError(f"`task` must be one of {sorted(TASK_TITLES)}, got {self.task!r}.")
        if isinstance(self.datasets, str):
            self.datasets = [self.datasets]
        for entry in self.eval_results:
            self._check_eval_entry(entry)

    # ------------------------------------------------------------------------------------------ filling
    def record_stage(self, stage: str, hyperparameters: dict | None = None, metrics: dict | None = None) -> None:
        if hyperparameters:
            self.stage_hyperparameters.setdefault(stage, {}).update(hyperparameters)
        if metrics:
            self.stage_metrics.setdefault(stage, {}).update(metrics)

    def add_evaluation(self, dataset: str, split: str, metrics: dict[str, float]) -> None:
        """Record (or replace) one dataset's evaluation; metric names such as `recall@10`, `ndcg@10`."""
        entry = {"dataset": dataset, "split": split, "metrics": dict(metrics)}
        self._check_eval_entry(entry)
        entry["metrics"] = {name: float(value) for name, value in metrics.items()}
        self.eval_results = [e for e in self.eval_results if (e["dataset"], e["split"]) != (dataset, split)] + [entry]

    @staticmethod
    def _check_eval_entry(entry: dict) -> None:
        missing = {"dataset", "split", "metrics"} - set(entry)
        if missing:
            raise ValueError(f"An evaluation entry needs {sorted(missing)}: got {entry}.")
        for name, value in entry["metrics"].items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"Metric {name!r} of {entry['dataset']} is {value!r}, not a number.")

    # ----------------------------------------------------------------------------------------- metadata
    def _to_dict(self, data_dict: dict) -> None:
        """Keep only Hub metadata in the YAML header, plus `model-index` built from the evaluation tables."""
        results = self.hub_eval_results()
        # The Hub reads `base_model` and `datasets` as repo ids; local names stay in the card's body only.
        base_model = data_dict.get("base_model")
        if base_model and (not HUB_REPO_ID.fullmatch(str(base_model)) or Path(str(base_model)).exists()):
            data_dict["base_model"] = None
        data_dict["datasets"] = [name for name in data_dict.get("datasets") or [] if HUB_ID.fullmatch(name)]
        metadata = {key: data_dict[key] for key in METADATA_KEYS if data_dict.get(key) not in (None, [])}
        data_dict.clear()
        data_dict.update(metadata)
        if results:
            data_dict["model-index"] = eval_results_to_model_index(
                self.model_name or self.model_id or "lmindexer", results
            )

    def hub_eval_results(self) -> list[EvalResult]:
        task_type = SEMANTIC_INDEXING if self.task == SEMANTIC_INDEXING else "generative-retrieval"
        return [
            EvalResult(
                task_type=task_type,
                task_name=TASK_TITLES[self.task],
                dataset_type=entry["dataset"],
                dataset_name=entry["dataset"],
                dataset_split=entry["split"],
                metric_type=name,
                metric_name=name,
                metric_value=value,
            )
            for entry in self.eval_results
            for name, value in entry["metrics"].items()
        ]

    # -------------------------------------------------------------------------------------- persistence
    def body_fields(self) -> dict:
        """Plain dict of every field (what `save` writes and the template reads)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def save(self, folder: str | os.PathLike) -> Path:
        """Write `lmindexer_card.json` into `folder` atomically."""
        path = Path(folder) / CARD_DATA_FILE
        with atomic_file(path) as temporary:
            temporary.write_text(json.dumps(self.body_fields(), indent=2, default=str), encoding="utf-8")
        return path

    def set_metadata(self, dataset: str | None = None, license: str | None = None, language: str | None = None) -> None:
        """Name a training dataset first (keeping the recorded ones), and set the license and language when given."""
        if dataset and dataset not in self.datasets:
            self.datasets = [dataset, *self.datasets]
        self.license = license or self.license
        self.language = language or self.language

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "LMIndexerCardData | None":
        """The card data saved in `folder` (a local folder or a Hub repo id), or None when there is none."""
        path = Path(folder) / CARD_DATA_FILE
        if not Path(folder).is_dir() and HUB_REPO_ID.fullmatch(str(folder)):
            from transformers.utils import cached_file

            try:
                found = cached_file(str(folder), CARD_DATA_FILE, _raise_exceptions_for_missing_entries=False)
            except OSError:  # unreachable Hub: the card is built without the saved data
                found = None
            path = Path(found) if found else path
        if not path.is_file():
            return None
        values = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path} has fields this lmindexer version does not know: {unknown}.")
        return cls(**values)


def label_distribution_table(first_codes, labels, max_codes: int = 12, max_labels: int = 8) -> dict:
    """Documents per (first code, label) for the `max_codes` most populated first codes.

    Labels outside the `max_labels` most frequent ones are pooled as "other". This is the data of the paper's
    Figure 3: a semantic first code concentrates on few labels.
    """
    if len(first_codes) != len(labels):
        raise ValueError(f"{len(first_codes)} first codes but {len(labels)} labels.")
    codes = [int(code) for code in first_codes]
    top_labels = [label for label, _ in Counter(labels).most_common(max_labels)]
    top_codes = [code for code, _ in Counter(codes).most_common(max_codes)]
    has_other = len(set(labels)) > len(top_labels)
    columns = top_labels + (["other"] if has_other else [])
    code_row = {code: index for index, code in enumerate(top_codes)}
    label_column = {label: index for index, label in enumerate(top_labels)}
    counts = [[0] * len(columns) for _ in top_codes]
    for code, label in zip(codes, labels):
        row = code_row.get(code)
        if row is not None:
            counts[row][label_column.get(label, len(columns) - 1)] += 1
    return {"codes": top_codes, "labels": columns, "counts": counts}
