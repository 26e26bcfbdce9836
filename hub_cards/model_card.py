"""Render the model card (README.md and its PNG plots) of an indexer or retriever through
`huggingface_hub.ModelCard`."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import numpy as np
import torch
import transformers
from huggingface_hub import ModelCard

from ..modeling_lmindexer import LMIndexerRetrievalConfig, __version__
from ..modeling_lmindexer.configuration_lmindexer import RECOMMENDATION, RETRIEVAL, SEMANTIC_INDEXING
from .card_data import TASK_TITLES, LMIndexerCardData, label_distribution_table
from .plots import PLOT_FOLDER, codebook_usage_plot, label_distribution_plot, prefix_density_plot

TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"
ID_MAP_TEMPLATE_PATH = Path(__file__).parent / "templates" / "id_map_card.md"
INPUT_DESCRIPTIONS = {
    RECOMMENDATION: "a user's history of item titles",
    RETRIEVAL: "a query",
    SEMANTIC_INDEXING: "a document",
}
HYPERPARAMETER_ORDER = (
    "epochs",
    "max_steps",
    "learning_rate",
    "per_device_batch_size",
    "effective_batch_size",
    "optimizer",
    "lr_scheduler",
    "warmup",
    "weight_decay",
    "precision",
    "seed",
)


def is_retriever(model) -> bool:
    """By model type rather than class: a model loaded through a Hub repo's remote code has its own class."""
    return model.config.model_type == LMIndexerRetrievalConfig.model_type


def default_card_data(model, card_data: LMIndexerCardData | None = None) -> LMIndexerCardData:
    """The card data to use for `model`: the given one, else the model's own (`model.card_data`, set by training),
    else what training saved next to it, else a fresh one."""
    card_data = card_data or getattr(model, "card_data", None)
    if card_data is None and model.name_or_path:
        card_data = LMIndexerCardData.load(model.name_or_path)  # a folder, or a Hub repo in the cache
    if card_data is None:
        card_data = LMIndexerCardData()
    if is_retriever(model) and card_data.task == SEMANTIC_INDEXING:
        card_data.task = model.config.task
    return card_data


def write_model_card(
    model, folder: str | Path, card_data: LMIndexerCardData | None = None, example_query: str | None = None
) -> ModelCard:
    """Write `README.md`, `assets/*.png` and the card data (`lmindexer_card.json`) for `model` into `folder`."""
    folder = Path(folder)
    id_map = model.id_map
    if id_map is None:
        raise ValueError("The model has no ID map; set `model.id_map` before writing its card.")
    card_data = default_card_data(model, card_data)
    card_data.save(folder)
    plots = id_map_plots(id_map, folder, card_data)
    context = card_context(model, card_data, plots, example_query)
    if not (card_data.model_name or card_data.model_id):
        context["title"] = folder.resolve().name  # a local card before any push: name it after its folder
    card = ModelCard.from_template(card_data, template_path=str(TEMPLATE_PATH), **context)
    card.save(folder / "README.md")
    return card


def id_map_plots(id_map, folder: Path, card_data: LMIndexerCardData) -> list[dict]:
    """Codebook usage and documents per prefix, plus labels per first code when the card data has them."""
    learned = id_map.semantic_ids.numpy()[:, : id_map.id_length]
    plots = [
        _plot(
            codebook_usage_plot(learned, list(id_map.codebook_sizes), folder / PLOT_FOLDER / "codebook_usage.png"),
            folder,
            "Codebook usage",
            "Documents per code at each learned position, codes sorted by use.",
        ),
        _plot(
            prefix_density_plot(learned, list(id_map.codebook_sizes), folder / PLOT_FOLDER / "prefix_density.png"),
            folder,
            "Documents per ID prefix",
            "How many documents share each ID prefix, for every prefix length.",
        ),
    ]
    if card_data.label_distribution:
        path = label_distribution_plot(
            card_data.label_distribution, folder / PLOT_FOLDER / "label_distribution.png", card_data.label_field
        )
        plots.append(
            _plot(
                path,
                folder,
                "Labels per first code",
                f"Share of each {card_data.label_field or 'label'} among the documents of the most populated "
                "first codes.",
            )
        )
    return plots


def write_id_map_card(
    folder: str | Path, id_map, card_data: LMIndexerCardData, method: str, settings: dict
) -> ModelCard:
    """README.md, plots and card data for a folder that holds an ID map but no model (a two-stage baseline)."""
    folder = Path(folder)
    card_data.save(folder)
    statistics = id_map.statistics()
    context = {
        "title": card_data.model_name or (card_data.model_id or folder.resolve().name).split("/")[-1],
        "model_id": card_data.model_id or str(folder),
        "method": method,
        "encoder": settings.get("encoder", "not recorded"),
        "pooling": settings.get("pooling", "mean"),
        "settings_text": ", ".join(f"{key} {value}" for key, value in settings.get("quantizer", {}).items())
        or "defaults",
        "id_length": id_map.id_length,
        "codebook_sizes": list(id_map.codebook_sizes),
        "dedup_size": id_map.dedup_size,
        "documents": statistics["documents"],
        "distinct_learned_ids": statistics["distinct_learned_ids"],
        "mean_per_id": statistics["mean_documents_per_learned_id"],
        "max_per_id": statistics["max_documents_per_learned_id"],
        "collision_rate": statistics["collision_rate"],
        "datasets_text": ", ".join(card_data.datasets) if card_data.datasets else "not recorded",
        "position_rows": [
            {
                "position": index + 1,
                "size": size,
                "utilisation": statistics["utilisation"][index],
                "perplexity": statistics["perplexity"][index],
            }
            for index, size in enumerate(statistics["codebook_sizes"])
        ],
        "plots": id_map_plots(id_map, folder, card_data),
        "eval_results": card_data.eval_results,
        "lmindexer_version": __version__,
    }
    card = ModelCard.from_template(card_data, template_path=str(ID_MAP_TEMPLATE_PATH), **context)
    card.save(folder / "README.md")
    return card


def history_description(config) -> str:
    """What a recommender reads, by the history format it was fine-tuned on."""
    reads = {
        "text": "item titles",
        "ids": "items as their semantic-ID tokens",
        "text+ids": "items as ID tokens and titles",
    }
    items = reads.get(getattr(config, "history_format", "text"), "item titles")
    shape = "one decoder-only stream" if getattr(config, "is_causal", False) else "an encoder-decoder"
    return f"a user's history of {items} ({shape})"


def card_context(model, card_data: LMIndexerCardData, plots: list[dict], example_query: str | None = None) -> dict:
    """Everything the template reads besides the card data's own fields."""
    config = model.config
    statistics = model.id_map.statistics()
    retriever = is_retriever(model)
    titles = model.id_map.doc_titles
    example = example_query or (titles[0] if titles else "a short description of what you are looking for")
    model_id = card_data.model_id or "your-org/your-lmindexer-model"
    return {
        "title": card_data.model_name or model_id.split("/")[-1],
        "model_id": model_id,
        "is_retriever": retriever,
        "task_title": TASK_TITLES[card_data.task],
        "input_description": history_description(config)
        if card_data.task == "recommendation" and retriever
        else INPUT_DESCRIPTIONS[card_data.task],
        "example_query": example,
        # A recommender's input is a rendered history of items the map holds, not free text.
        "example_history": list(model.id_map.doc_ids[:2]) if retriever and card_data.task == "recommendation" else None,
        "model_class": type(model).__name__,
        "base_model_text": card_data.base_model or "not recorded",
        "backbone_type": config.backbone_config.model_type,
        "parameters": f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M",
        "id_length": config.id_length,
        "codebook_sizes": list(config.codebook_sizes),
        "dedup_size": config.dedup_size,
        "code_geometry": config.code_geometry,
        "documents": statistics["documents"],
        "datasets_text": ", ".join(card_data.datasets) if card_data.datasets else "not recorded",
        "position_rows": [
            {
                "position": index + 1,
                "size": size,
                "utilisation": statistics["utilisation"][index],
                "perplexity": statistics["perplexity"][index],
            }
            for index, size in enumerate(statistics["codebook_sizes"])
        ],
        "distinct_learned_ids": statistics["distinct_learned_ids"],
        "mean_per_id": statistics["mean_documents_per_learned_id"],
        "max_per_id": statistics["max_documents_per_learned_id"],
        "collision_rate": statistics["collision_rate"],
        "plots": plots,
        "eval_results": card_data.eval_results,
        "stage_rows": [
            {
                "stage": stage,
                "text": _describe(
                    card_data.stage_hyperparameters.get(stage, {}), card_data.stage_metrics.get(stage, {})
                ),
            }
            for stage in _stages_in_order(card_data)
        ],
        "lmindexer_version": __version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "hub_version": huggingface_hub.__version__,
    }


def first_code_label_table(id_map, labels: list[str]) -> dict:
    """`label_distribution_table` for an ID map and labels given in the map's row order."""
    return label_distribution_table(np.asarray(id_map.semantic_ids[:, 0]), labels)


def _plot(path: Path, folder: Path, alt: str, caption: str) -> dict:
    return {"path": path.relative_to(folder).as_posix(), "alt": alt, "caption": caption}


def _stages_in_order(card_data: LMIndexerCardData) -> list[str]:
    stages = list(card_data.stage_hyperparameters)
    return stages + [stage for stage in card_data.stage_metrics if stage not in stages]


def _describe(hyperparameters: dict, metrics: dict) -> str:
    ordered = [key for key in HYPERPARAMETER_ORDER if key in hyperparameters]
    ordered += sorted(key for key in hyperparameters if key not in ordered)
    parts = [f"{key.replace('_', ' ')} {_format(hyperparameters[key])}" for key in ordered]
    parts += [f"{key.replace('_', ' ')} {_format(value)}" for key, value in sorted(metrics.items())]
    return "; ".join(parts) if parts else "no settings recorded"


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
