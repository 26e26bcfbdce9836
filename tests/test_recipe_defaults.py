"""One source of defaults, the recipe: `lmindexer index` and a config built in Python agree field by field, and a
checkpoint saved before a recipe field existed loads as it was trained."""

from __future__ import annotations

import json

import torch
from conftest import tiny_t5
from transformers import AutoConfig, T5ForConditionalGeneration

from lmindexer import LMIndexerConfig, LMIndexerForSemanticID
from lmindexer.modeling_lmindexer.configuration_lmindexer import BEFORE_RECIPE
from lmindexer.trainers.cli import parse
from lmindexer.trainers.data.corpus import build_corpus
from lmindexer.trainers.data.demo import generate_demo_corpus
from lmindexer.trainers.id_methods.lmindexer_method import build_indexer

# Config fields that `lmindexer index` sets from the corpus or the run, not from a default.
FROM_THE_DATA = {
    "backbone_config",
    "codebook_sizes",
    "dedup_size",
    "indexing_max_length",
    "indexing_text_fields",
    "id_map_run_id",
}


def test_index_arguments_take_every_shared_default_from_the_config():
    index_args, _ = parse("index", [])
    python = LMIndexerConfig()
    # `hint_ratios` unset is the config's own default for the ID length (a list once the config is built).
    shared = [
        name for name in vars(index_args) if hasattr(python, name) and name not in {*FROM_THE_DATA, "hint_ratios"}
    ]
    assert {*BEFORE_RECIPE, "code_geometry", "id_length", "reconstruction_weight"} <= set(shared)
    assert {name: getattr(index_args, name) for name in shared} == {name: getattr(python, name) for name in shared}


def test_the_cli_indexer_and_a_python_config_agree_field_by_field():
    """What `lmindexer index` builds with its defaults is what `LMIndexerConfig(...)` (and so README's
    `LMIndexerForSemanticID.from_backbone(...)` then `IndexerTrainer(...).train()`) gives: the recipe."""
    index_args, _ = parse("index", [])
    items = generate_demo_corpus(64, seed=0)
    corpus = build_corpus(items, index_args.id_field, index_args.text_field_list)
    model, _ = build_indexer(index_args, corpus)
    cli = model.config.to_dict()
    python = LMIndexerConfig(
        backbone_config=model.config.backbone_config,
        codebook_sizes=model.config.codebook_sizes,
        dedup_size=model.config.dedup_size,
    ).to_dict()
    differing = {
        key: (cli.get(key), python.get(key))
        for key in set(cli) | set(python)
        if key not in FROM_THE_DATA and cli.get(key) != python.get(key)
    }
    assert differing == {}
    assert {name: cli[name] for name in BEFORE_RECIPE} == {
        "later_position_input": "residual",
        "center_hidden": False,
        "contrastive_positive": "dropout",
        "reconstructor_warmup_input": "hidden",
        "reconstructor_position_norm": True,
        "pooled_hidden": True,
        "reconstruction_vocabulary": "batch",
    }


def test_from_backbone_trains_the_recipe(tmp_path):
    torch.manual_seed(0)
    T5ForConditionalGeneration(tiny_t5()).save_pretrained(tmp_path / "t5")
    model = LMIndexerForSemanticID.from_backbone(str(tmp_path / "t5"), id_length=2, codebook_sizes=4)
    index_args, _ = parse("index", [])
    assert {name: getattr(model.config, name) for name in BEFORE_RECIPE} == {
        name: getattr(index_args, name) for name in BEFORE_RECIPE
    }


def test_a_checkpoint_saved_before_the_recipe_fields_loads_as_it_was_trained(tmp_path):
    model = LMIndexerForSemanticID(
        LMIndexerConfig(backbone_config=tiny_t5().to_dict(), id_length=2, codebook_sizes=4, **BEFORE_RECIPE)
    )
    model.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    saved = json.loads(config_file.read_text())
    assert {name: saved[name] for name in BEFORE_RECIPE} == BEFORE_RECIPE  # every field is written explicitly
    config_file.write_text(json.dumps({key: value for key, value in saved.items() if key not in BEFORE_RECIPE}))
    for loaded in (AutoConfig.from_pretrained(tmp_path), LMIndexerForSemanticID.from_pretrained(tmp_path).config):
        assert {name: getattr(loaded, name) for name in BEFORE_RECIPE} == BEFORE_RECIPE
    # A value given when loading still wins over what the missing field means.
    assert LMIndexerConfig.from_pretrained(tmp_path, pooled_hidden=True).pooled_hidden is True
