"""Two-stage semantic-ID methods: embed the corpus once with a sentence encoder, then quantise the embeddings
(`rqkmeans`, `rqvae`, `hkmeans`). The folder they write has the same layout as an LMIndexer folder (ID map,
`indexer_metrics.json`, card) plus the quantiser, so `lmindexer assign` and `lmindexer finetune --indexer`
take it like any other indexer folder.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from ...hub_cards import first_code_label_table, write_id_map_card
from ...modeling_lmindexer import SemanticIDMap
from ...modeling_lmindexer.semantic_id_map import ID_MAP_FILE
from ..data.embeddings import cached_embeddings, default_encoder, encode_texts
from ..folders.inspection import method_record
from ..folders.model_folder import write_model_folder
from ..indexer.diagnostics import METRICS_FILE, code_diagnostics
from ..indexer.id_layout import automatic_dedup_size, check_codebook_sizes, resolve_codebook_sizes
from .base import IDMethod, IndexResult, indexer_card_data, register_id_method
from .quantizer import load_quantizer, quantizer_class
from .registry import QUANTIZERS

logger = logging.getLogger("lmindexer")


def embedding_settings(args) -> dict:
    """What identifies the embeddings of a two-stage method (recorded so that `assign` embeds new documents alike)."""
    return {
        "encoder": args.encoder or default_encoder(),
        "pooling": args.pooling,
        "normalize": args.normalize_embeddings,
        "max_length": args.embedding_max_length,
        "text_fields": args.text_field_list,
    }


def quantizer_settings(args) -> dict:
    if not args.method_settings:
        return {}
    try:
        settings = json.loads(args.method_settings)
    except json.JSONDecodeError as error:
        raise ValueError(f"--method_settings is not valid JSON ({error}): {args.method_settings!r}") from None
    if not isinstance(settings, dict):
        raise ValueError(f"--method_settings must be a JSON object, got {args.method_settings!r}.")
    return settings


class TwoStageMethod(IDMethod):
    """Embeddings, then the quantiser registered under the method's own name."""

    def index(self, corpus, args, training_args) -> IndexResult:
        output_dir = Path(training_args.output_dir)
        progress = not training_args.disable_tqdm
        embedding = embedding_settings(args)
        cache_dir = Path(args.embedding_cache_dir) if args.embedding_cache_dir else output_dir.parent / ".embeddings"
        sizes = resolve_codebook_sizes(args.codebook_size, len(corpus))
        check_codebook_sizes(sizes, args.id_length, len(corpus))  # before the embedding pass, not after it
        started = time.perf_counter()
        vectors = cached_embeddings(
            corpus.doc_ids,
            corpus.texts,
            cache_dir,
            embedding["encoder"],
            embedding["pooling"],
            embedding["normalize"],
            embedding["max_length"],
            embedding["text_fields"],
            progress=progress,
        )
        embedded = time.perf_counter()
        quantizer = quantizer_class(self.name)(
            args.id_length, sizes, seed=training_args.seed, progress=progress, **quantizer_settings(args)
        )
        codes = quantizer.fit(vectors)
        quantized = time.perf_counter()
        dedup_size = args.dedup_size or automatic_dedup_size(codes, quantizer.codebook_sizes)
        id_map = SemanticIDMap.from_codes(
            corpus.doc_ids, torch.as_tensor(codes), quantizer.codebook_sizes, dedup_size, doc_titles=corpus.titles
        )
        final = code_diagnostics(codes, quantizer.codebook_sizes, corpus.labels)
        metrics = {
            "method": self.name,
            "stages": {
                "embed": {"seconds": round(embedded - started, 2), "dimension": int(vectors.shape[1])},
                "quantize": {"seconds": round(quantized - embedded, 2), **quantizer.settings_dict()},
            },
            "id_map": id_map.statistics(),
            "final": final,
        }
        card_data = indexer_card_data(args, training_args, corpus)
        summary = {
            key: value
            for key, value in final.items()
            if key.startswith(("ami_", "perplexity_", "utilisation_")) or key == "collision_rate"
        }
        card_data.add_evaluation(card_data.datasets[0], "train", summary)
        if corpus.labels is not None:
            card_data.label_distribution = first_code_label_table(id_map, corpus.labels)

        def write(staging: Path) -> None:
            quantizer.save(staging)
            id_map.save(staging / ID_MAP_FILE)
            (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
            self.stamp(staging, {"embedding": embedding, "quantizer": quantizer.settings_dict()})
            write_id_map_card(
                staging, id_map, card_data, self.name, {**embedding, "quantizer": quantizer.settings_dict()}
            )

        # Quantiser, map, metrics and card of one fit, swapped in together: a kill never pairs a new quantiser
        # with an old map (`model_folder`).
        write_model_folder(output_dir, write)
        logger.info(
            "[%s] %d documents embedded in %.1f s, quantised in %.1f s",
            self.name,
            len(corpus),
            embedded - started,
            quantized - embedded,
        )
        return IndexResult(id_map, metrics, output_dir)

    def assign_new_documents(self, folder: Path, corpus, args) -> tuple[SemanticIDMap, list[int]]:
        folder = Path(folder)
        embedding = method_record(folder)["embedding"]
        id_map = SemanticIDMap.load(folder / ID_MAP_FILE)
        quantizer = load_quantizer(folder)
        fresh = [row for row, doc_id in enumerate(corpus.doc_ids) if doc_id not in id_map]
        if not fresh:
            return id_map, fresh
        vectors = encode_texts(
            [corpus.texts[row] for row in fresh],
            embedding["encoder"],
            embedding["pooling"],
            embedding["normalize"],
            max_length=embedding["max_length"],
        )
        codes = quantizer.assign(vectors)
        fresh_corpus = corpus.select(fresh)
        return id_map.extend(fresh_corpus.doc_ids, torch.as_tensor(np.asarray(codes)), fresh_corpus.titles), fresh


# One class for every two-stage method: the quantiser is the one registered under the method's own name.
for _name in QUANTIZERS.builtin:
    register_id_method(_name)(TwoStageMethod)
