"""`lmindexer diagnose`: is a trained indexer healthy? The checks that found the recipe's defects, in plain words.

```python
from lmindexer.trainers.indexer.diagnose import DiagnoseArguments, diagnose_indexer
report = diagnose_indexer(DiagnoseArguments(model="runs/beauty", corpus="items.jsonl", label_field="categories",
                                            label_level=1))
```

On a sample of the corpus it measures:
- training against no training: AMI of k-means on the *untrained* indexer's `h^1` (the backbone it started from,
  same config) and of the trained codes, against the labels (training should raise it);
- per position, the reconstruction loss with the true ID vectors, with the vectors shuffled across documents, and
  with zero vectors, on the same hints (if the three are equal, the reconstructor ignores the IDs);
- per position, NMI(c_t; c_<t) and the diff ratio (does c_t say something the prefix did not?);
- per position, the share of `h^t`'s energy in the one vector every document shares, for the decoder state and
  for what the codebook scores.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from ...modeling_lmindexer import LMIndexerForSemanticID
from ...modeling_lmindexer.atomic_writes import atomic_file
from ...modeling_lmindexer.modeling_lmindexer import code_similarity
from ...modeling_lmindexer.reconstructor import sample_hint_mask
from ...modeling_lmindexer.semantic_id_map import prefix_keys
from ..data.corpus import TEXT_SEPARATOR, build_corpus, load_records
from ..data.lists import split_names
from .corpus_passes import assign_corpus, collect_hidden_states
from .diagnostics import code_diagnostics
from .kmeans import kmeans_codebook

logger = logging.getLogger("lmindexer")

# Shuffling the IDs must cost the reconstructor at least this fraction of its loss for the IDs to count as used.
IGNORED_IDS_MARGIN = 0.01
# Above this share of energy in the shared component, cosine similarity sees mostly the shared vector.
SHARED_COMPONENT_LIMIT = 0.9
# Fewer sampled documents per code than this leave the untrained k-means of the comparison weaker than a real fit.
FAIR_SAMPLE_PER_CODE = 20
# c_t with NMI to its prefix above this mostly repeats the prefix.
COPIED_PREFIX_NMI = 0.9


@dataclass
class DiagnoseArguments:
    model: str = field(default="", metadata={"help": "Folder (or Hub repo) of a trained LMIndexer indexer."})
    corpus: str = field(default="", metadata={"help": "jsonl/csv/parquet file of documents to diagnose on."})
    id_field: str = field(default="item_id")
    text_fields: str | None = field(default=None, metadata={"help": "Default: the fields the indexer was trained on."})
    label_field: str | None = field(default=None, metadata={"help": "Labels for AMI (e.g. categories); optional."})
    label_level: int | None = field(default=None, metadata={"help": "For list labels: the level to use."})
    backbone: str | None = field(
        default=None, metadata={"help": "The untrained backbone to compare with; default: the one the config names."}
    )
    sample: int = field(default=2000, metadata={"help": "Documents sampled (seeded) from the corpus."})
    batch_size: int = field(default=64)
    seed: int = field(default=0)
    output: str = field(default="diagnosis.json", metadata={"help": "Where the JSON report is written."})
    revision: str | None = field(default=None, metadata={"help": "Model revision (commit SHA) when --model is a repo."})


def shared_component_share(vectors: np.ndarray) -> float:
    """`|mean|^2 / mean(|v|^2)`: 1 when every vector is the same, ~0 for vectors spread around the origin."""
    vectors = vectors.astype(np.float64)
    total = float((vectors**2).sum(axis=1).mean())
    return float((vectors.mean(axis=0) ** 2).sum() / total) if total > 0 else 0.0


def kmeans_codes(vectors: np.ndarray, clusters: int, geometry: str, seed: int) -> np.ndarray:
    """Codes of k-means on `vectors` exactly as codebook initialisation fits and the indexer assigns them."""
    centroids = kmeans_codebook(vectors, min(clusters, len(vectors)), geometry, seed=seed)
    # Temperature 1: only the argmax is used.
    return code_similarity(torch.from_numpy(vectors), torch.from_numpy(centroids), geometry, 1.0).argmax(dim=1).numpy()


@torch.no_grad()
def reconstruction_losses(
    model: LMIndexerForSemanticID,
    tokenizer,
    texts: list[str],
    codes: np.ndarray,
    max_length: int,
    batch_size: int,
    seed: int,
) -> list[dict]:
    """Per position t: mean reconstruction loss with the true code vectors of c_1..c_t, with them shuffled across
    documents (one permutation for all positions), and with zero vectors, on the same hints."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    model.eval()
    totals = np.zeros((model.config.id_length, 3))
    counts = np.zeros(model.config.id_length)
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(
            texts[start : start + batch_size], max_length=max_length, truncation=True, padding=True, return_tensors="pt"
        ).to(device)
        batch_codes = torch.as_tensor(codes[start : start + batch_size], device=device)
        permutation = torch.randperm(len(batch_codes), generator=generator).to(device)
        for position in range(1, model.config.id_length + 1):
            visible, _ = sample_hint_mask(encoded["attention_mask"], model.config.hint_ratios[position - 1], generator)
            true = [model.code_vectors(index, batch_codes[:, index - 1]) for index in range(1, position + 1)]
            variants = (true, [vector[permutation] for vector in true], [torch.zeros_like(vector) for vector in true])
            for column, vectors in enumerate(variants):
                loss, _, _ = model._reconstruction_loss(
                    encoded["input_ids"], encoded["attention_mask"], vectors, position, None, visible.to(device)
                )
                totals[position - 1, column] += float(loss) * len(batch_codes)
            counts[position - 1] += len(batch_codes)
    means = totals / counts[:, None]
    return [
        {"true_ids": means[row, 0], "shuffled_ids": means[row, 1], "zero_ids": means[row, 2]}
        for row in range(len(means))
    ]


def pretrained_backbone_path(model: LMIndexerForSemanticID) -> str | None:
    """The checkpoint the indexer's backbone was loaded from, when the config still names a local one."""
    backbone_config = model.config.backbone_config
    candidates = [getattr(backbone_config, "_name_or_path", "")]
    encoder_config = getattr(backbone_config, "encoder", None)
    if encoder_config is not None:
        candidates.append(getattr(encoder_config, "_name_or_path", ""))
    return next((path for path in candidates if path and Path(path).expanduser().is_dir()), None)


def untrained_indexer(model: LMIndexerForSemanticID, backbone: str | None) -> LMIndexerForSemanticID:
    """What training started from: a fresh indexer with the trained model's settings, on `backbone` (a
    pretrained checkpoint), or randomly initialised from the same config when there is none."""
    torch.manual_seed(0)
    if backbone is None:
        return LMIndexerForSemanticID(model.config)
    own_fields = set(type(model.config).__annotations__) - {
        "backbone_config",
        "id_map_run_id",
        "lmindexer_version",
        "is_encoder_decoder",
    }
    settings = {key: getattr(model.config, key) for key in own_fields if hasattr(model.config, key)}
    return LMIndexerForSemanticID.from_backbone(backbone, **settings)


def verdicts(report: dict) -> list[str]:
    """Plain-words reading of the report, one line per finding."""
    lines = []
    comparison = report.get("untrained_vs_trained")
    if comparison:
        before, after = comparison["untrained_ami_c1"], comparison["trained_ami_c1"]
        if comparison.get("sample_per_code", FAIR_SAMPLE_PER_CODE) < FAIR_SAMPLE_PER_CODE:
            lines.append(
                f"NOTE: the untrained k-means saw only {comparison['sample_per_code']} sampled documents per code; "
                "raise --sample for a fair untrained-vs-trained comparison."
            )
        if after > before:
            lines.append(f"OK: training raised the first code's AMI from {before:.3f} (untrained) to {after:.3f}.")
        else:
            lines.append(
                f"PROBLEM: training lowered the first code's AMI from {before:.3f} (untrained) to {after:.3f}: "
                "the trained IDs are worse than clustering the backbone it started from."
            )
    for entry in report["positions"]:
        t = entry["position"]
        losses = entry["reconstruction_loss"]
        gain = losses["shuffled_ids"] - losses["true_ids"]
        if gain < IGNORED_IDS_MARGIN * losses["true_ids"]:
            lines.append(
                f"PROBLEM: position {t}: the reconstructor's loss is the same with shuffled IDs "
                f"({losses['shuffled_ids']:.3f}) as with the true ones ({losses['true_ids']:.3f}): it ignores the IDs."
            )
        else:
            lines.append(
                f"OK: position {t}: the true IDs lower the reconstruction loss by {gain:.3f} against shuffled ones "
                f"({losses['true_ids']:.3f} vs {losses['shuffled_ids']:.3f}; zero vectors {losses['zero_ids']:.3f})."
            )
        if entry.get("nmi_with_prefix") is not None and entry["nmi_with_prefix"] > COPIED_PREFIX_NMI:
            lines.append(
                f"PROBLEM: position {t} mostly repeats the earlier codes (NMI {entry['nmi_with_prefix']:.2f}, "
                f"diff ratio {entry['diff_ratio']:.2f}): set later_position_input='residual'."
            )
        if entry["shared_share_scored"] > SHARED_COMPONENT_LIMIT:
            lines.append(
                f"PROBLEM: position {t}: {entry['shared_share_scored']:.0%} of what the codebook scores is one "
                "vector shared by every document, so codes hardly depend on the document: set center_hidden."
            )
    return lines


def diagnose_indexer(args: DiagnoseArguments) -> dict:
    """Run every check on a seeded sample of `args.corpus` and write the JSON report to `args.output`."""
    if not args.model or not args.corpus:
        raise ValueError("Give --model (a trained indexer) and --corpus (documents to diagnose on).")
    from ..folders.inspection import two_stage_folder_error

    two_stage = two_stage_folder_error(args.model, "diagnose")
    if two_stage is not None:
        raise two_stage
    model = LMIndexerForSemanticID.from_pretrained(args.model, revision=args.revision)
    if getattr(model.config, "model_type", "") != "lmindexer" or not isinstance(model, LMIndexerForSemanticID):
        raise ValueError(f"{args.model} is not an LMIndexer indexer: diagnose checks LMIndexer's learned IDs only.")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model, revision=args.revision)
    config = model.config
    text_fields = split_names(args.text_fields) if args.text_fields else (config.indexing_text_fields or ["title"])
    corpus = build_corpus(
        load_records(args.corpus),
        args.id_field,
        text_fields,
        args.label_field,
        args.label_level,
        separator=config.indexing_text_separator or TEXT_SEPARATOR,
    )
    rows = np.random.default_rng(args.seed).permutation(len(corpus))[: args.sample]
    corpus = corpus.select(sorted(rows.tolist()))
    max_length = config.indexing_max_length or 512
    passes = dict(batch_size=args.batch_size, max_length=max_length, progress=False)
    model.eval()
    codes = assign_corpus(model, tokenizer, corpus.texts, **passes)
    losses = reconstruction_losses(model, tokenizer, corpus.texts, codes, max_length, args.batch_size, args.seed)
    metrics = code_diagnostics(codes, config.codebook_sizes, corpus.labels)
    positions = []
    for position in range(1, config.id_length + 1):
        prefix = codes[:, : position - 1]
        scored = collect_hidden_states(model, tokenizer, corpus.texts, prefix, **passes)
        raw = scored + model.hidden_centers[position - 1].float().numpy()
        entry = {
            "position": position,
            "reconstruction_loss": losses[position - 1],
            "diff_ratio": metrics[f"diff_ratio_t{position}"],
            "perplexity": metrics[f"perplexity_t{position}"],
            "shared_share_scored": shared_component_share(scored),
            "shared_share_centre_added": shared_component_share(raw),
            "nmi_with_prefix": None,
        }
        if position >= 2:
            keys = prefix_keys(prefix, config.codebook_sizes)
            entry["nmi_with_prefix"] = float(normalized_mutual_info_score(keys, codes[:, position - 1]))
        if corpus.labels is not None:
            entry["ami_prefix"] = metrics[f"ami_t{position}"]
        positions.append(entry)
    report = {
        "model": args.model,
        "corpus": args.corpus,
        "documents": len(corpus),
        "seed": args.seed,
        "collision_rate": metrics["collision_rate"],
        "positions": positions,
    }
    if corpus.labels is not None:
        backbone = args.backbone or pretrained_backbone_path(model)
        untrained = untrained_indexer(model, backbone).eval()
        untrained_states = collect_hidden_states(untrained, tokenizer, corpus.texts, None, **passes)
        if config.center_hidden:  # as codebook initialisation does: the centre is measured, then removed
            untrained_states -= untrained_states.mean(axis=0)
        untrained_codes = kmeans_codes(untrained_states, config.codebook_sizes[0], config.code_geometry, args.seed)
        report["untrained_vs_trained"] = {
            # k-means is refitted on the sample only, while the trained codebook saw the whole corpus: with few
            # documents per code the untrained side is handicapped.
            "sample_per_code": round(len(corpus) / config.codebook_sizes[0], 1),
            "untrained": backbone or "random initialisation from the model's config",
            "untrained_ami_c1": float(adjusted_mutual_info_score(corpus.labels, untrained_codes)),
            "trained_ami_c1": float(adjusted_mutual_info_score(corpus.labels, codes[:, 0])),
        }
    report["verdicts"] = verdicts(report)
    with atomic_file(Path(args.output)) as temporary:
        temporary.write_text(json.dumps(report, indent=2, default=float))
    return report
