import json
import logging

import numpy as np
import pytest
import torch
from transformers import TrainingArguments

from lmindexer import LMIndexerConfig, LMIndexerForSemanticID, SemanticIDMap
from lmindexer.trainers.arguments import IndexerTrainingArguments
from lmindexer.trainers.corpus import build_corpus
from lmindexer.modeling_lmindexer.semantic_id_map import prefix_keys
from lmindexer.trainers.collators import IndexerDataCollator
from lmindexer.trainers.samplers import PrefixGroupBatchSampler
from lmindexer.trainers.demo import tiny_t5_config
from lmindexer.trainers.diagnostics import code_diagnostics, collapse_warnings
from lmindexer.trainers.indexer_trainer import IndexerTrainer
from lmindexer.trainers.stages import plan_stages
from lmindexer.trainers.stage_trainers import CodebookTrainer, EncoderWarmupTrainer, ReconstructorWarmupTrainer


def demo_corpus(items, count=None):
    return build_corpus(items[:count] if count else items, "item_id", ["title", "brand"], "subcategory", title_field="title")


def tiny_model(tokenizer, **overrides):
    torch.manual_seed(0)
    settings = dict(backbone_config=tiny_t5_config(len(tokenizer), d_model=32).to_dict(), id_length=2,
                    codebook_sizes=[4, 4], dedup_size=64, reconstructor_max_positions=64)
    settings.update(overrides)
    return LMIndexerForSemanticID(LMIndexerConfig(**settings))


def tiny_args(output_dir, **overrides):
    settings = dict(
        output_dir=str(output_dir), report_to="none", disable_tqdm=True, save_strategy="no", logging_steps=5,
        reconstructor_warmup_epochs=1, encoder_warmup_epochs=1, codebook_epochs=1,
        reconstructor_warmup_batch_size=16, encoder_warmup_batch_size=16, codebook_batch_size=16,
        assignment_batch_size=32, kmeans_iterations=5, diagnostics_sample=32, seed=7, use_cpu=True,
    )
    settings.update(overrides)
    return IndexerTrainingArguments(**settings)


def run_pipeline(items, tokenizer, output_dir, **overrides):
    pipeline = IndexerTrainer(tiny_model(tokenizer), tokenizer, demo_corpus(items), tiny_args(output_dir, **overrides),
                                       max_length=32)
    return pipeline, pipeline.train()


def tokenised_dataset(tokenizer, items, prefix=None, length=None):
    import datasets

    texts = [item["title"] for item in items]
    encoded = tokenizer(texts, max_length=length or 32, truncation=True, padding="max_length" if length else False)
    columns = {"row": list(range(len(texts))), "input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    columns["prefix_codes"] = prefix if prefix is not None else [[] for _ in texts]
    return datasets.Dataset.from_dict(columns)


# ----------------------------------------------------------------------------------------------- stages
@pytest.mark.parametrize("trainer_class, position", [(ReconstructorWarmupTrainer, 1), (EncoderWarmupTrainer, 1),
                                                     (CodebookTrainer, 2)])
def test_each_stage_trains_what_it_should(trainer_class, position, demo_items, demo_tokenizer, tmp_path, caplog):
    model = tiny_model(demo_tokenizer)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    prefix = [[i % 2] for i in range(len(demo_items))] if position == 2 else None
    trainer = trainer_class(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8, report_to="none",
                               learning_rate=1e-2, remove_unused_columns=False, logging_steps=1, save_strategy="no",
                               use_cpu=True, disable_tqdm=True),
        train_dataset=tokenised_dataset(demo_tokenizer, demo_items, prefix),
        data_collator=IndexerDataCollator(demo_tokenizer, 0.5),
        position=position,
        prefix_keys=np.array([p[0] for p in prefix]) if prefix else None,
    )
    trainer.train()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert any(name.startswith("reconstructor.") for name in changed)
    backbone_changed = any(name.startswith("backbone.") for name in changed)
    assert backbone_changed == (trainer_class is not ReconstructorWarmupTrainer)
    logged = [key for entry in trainer.state.log_history for key in entry]
    assert f"{trainer.label}/loss" in logged and f"{trainer.label}/reconstruction_loss" in logged
    if trainer_class is CodebookTrainer:
        assert "codebook_t2/commitment_loss" in logged and "codebook_t2/contrastive_loss" in logged


def test_gradient_accumulation_matches_a_larger_batch(demo_items, demo_tokenizer, tmp_path):
    items = demo_items[:4]
    equal_length = tokenised_dataset(demo_tokenizer, items, length=6)
    assert all(sum(mask) == 6 for mask in equal_length["attention_mask"])
    results = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        model = tiny_model(demo_tokenizer, contrastive_weight=0.0)
        trainer = EncoderWarmupTrainer(
            model=model,
            args=TrainingArguments(output_dir=str(tmp_path / f"b{batch_size}"), max_steps=1, per_device_train_batch_size=batch_size,
                                   gradient_accumulation_steps=accumulation, learning_rate=0.5, optim="sgd", report_to="none",
                                   remove_unused_columns=False, save_strategy="no", use_cpu=True, disable_tqdm=True,
                                   seed=3, data_seed=3, lr_scheduler_type="constant", max_grad_norm=1e9),
            # Equal lengths: every document hides the same number of tokens, so the per-token mean decomposes.
            train_dataset=equal_length,
            data_collator=IndexerDataCollator(demo_tokenizer, 0.5, seed=1),
            position=1,
        )
        trainer.train()
        results.append({name: p.detach().clone() for name, p in model.named_parameters()})
    start = {name: p for name, p in tiny_model(demo_tokenizer).named_parameters()}
    moved = [name for name in start if not torch.equal(results[0][name], start[name])]
    assert moved
    for name in moved:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_prefix_group_sampler_fills_batches_with_groups():
    keys = np.array([0] * 7 + [1] * 3 + [2] * 6 + [3])
    sampler = PrefixGroupBatchSampler(keys, batch_size=4, seed=0)
    epochs = [list(sampler), list(sampler)]
    for batches in epochs:
        rows = sorted(row for batch in batches for row in batch)
        assert rows == list(range(len(keys)))
        assert len(batches) == len(sampler) == 5
        # Rows of one group are laid out consecutively: a group spans at most ceil(size/4)+1 batches.
        for group, size in zip(range(4), (7, 3, 6, 1)):
            spanned = sum(any(keys[row] == group for row in batch) for batch in batches)
            assert spanned <= -(-size // 4) + 1
    assert epochs[0] != epochs[1]  # reshuffled per epoch
    assert list(PrefixGroupBatchSampler(keys, 4, seed=0)) == epochs[0]  # deterministic


def test_diagnostics_against_brute_force():
    codes = np.array([[0, 0], [0, 1], [0, 1], [1, 2], [1, 2], [2, 0]])
    labels = ["a", "a", "a", "b", "b", "c"]
    metrics = code_diagnostics(codes, [3, 3], labels)
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    share_nothing = len(pairs)
    differ_t1 = sum(codes[i, 0] != codes[j, 0] for i, j in pairs)
    shared_t1 = [(i, j) for i, j in pairs if codes[i, 0] == codes[j, 0]]
    differ_t2 = sum(codes[i, 1] != codes[j, 1] for i, j in shared_t1)
    assert metrics["diff_ratio_t1"] == pytest.approx(differ_t1 / share_nothing)
    assert metrics["diff_ratio_t2"] == pytest.approx(differ_t2 / len(shared_t1))
    assert metrics["collision_rate"] == pytest.approx(4 / 6)
    assert metrics["utilisation_t2"] == 1.0 and metrics["ami_t1"] == pytest.approx(1.0)
    collapsed = code_diagnostics(np.zeros((50, 1), dtype=np.int64), [64])
    warnings = collapse_warnings(collapsed, 1)
    assert any("collapsed" in w for w in warnings) and any("1.6% of its codebook" in w for w in warnings)


# --------------------------------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def reference_run(demo_items, demo_tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    _, id_map = run_pipeline(demo_items, demo_tokenizer, folder)
    return folder, id_map


def test_pipeline_end_to_end(demo_items, demo_tokenizer, reference_run):
    tmp_path, id_map = reference_run
    assert len(id_map) == len(demo_items)
    assert len({tuple(row) for row in id_map.semantic_ids.tolist()}) == len(demo_items)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "semantic_id_map.safetensors", "indexer_metrics.json"):
        assert (tmp_path / name).exists(), name
    metrics = json.loads((tmp_path / "indexer_metrics.json").read_text())
    assert [stage.name for stage in plan_stages(2)] == list(metrics["stages"])
    codebook = metrics["stages"]["codebook_t2"]
    for key in ("perplexity_t2", "utilisation_t2", "diff_ratio_t2", "collision_rate", "ami_t2", "reconstruction_f1"):
        assert key in codebook
    loaded = SemanticIDMap.load(tmp_path / "semantic_id_map.safetensors", config=LMIndexerForSemanticID.from_pretrained(tmp_path).config)
    assert loaded == id_map
    # The saved model reproduces the last position's codes given the frozen earlier ones (earlier codes are
    # frozen at their own stage, so later training may move the greedy argmax away from them).
    from lmindexer.trainers.corpus_passes import assign_corpus

    reloaded = LMIndexerForSemanticID.from_pretrained(tmp_path)
    frozen = id_map.semantic_ids[:, :2].numpy()
    codes = assign_corpus(reloaded, demo_tokenizer, demo_corpus(demo_items).texts, prefix_codes=frozen[:, :1],
                          max_length=32, progress=False)
    assert np.array_equal(codes, frozen)


def test_same_seed_same_map_and_resume_between_stages(demo_items, demo_tokenizer, tmp_path, monkeypatch, reference_run):
    _, reference = reference_run
    _, again = run_pipeline(demo_items, demo_tokenizer, tmp_path / "b")
    assert again == reference

    original = IndexerTrainer.init_codebook

    def crash_at_second_kmeans(self, position):
        if position == 2:
            raise KeyboardInterrupt("simulated interruption")
        return original(self, position)

    monkeypatch.setattr(IndexerTrainer, "init_codebook", crash_at_second_kmeans)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(demo_items, demo_tokenizer, tmp_path / "c")
    state = json.loads((tmp_path / "c" / "checkpoint-stage" / "pipeline_state.json").read_text())
    assert state["stage_names"][state["completed_stages"] - 1] == "encoder_warmup_t2"
    monkeypatch.setattr(IndexerTrainer, "init_codebook", original)
    _, resumed = run_pipeline(demo_items, demo_tokenizer, tmp_path / "c", resume=True)
    assert resumed == reference

    with pytest.raises(ValueError, match="different config"):
        pipeline = IndexerTrainer(tiny_model(demo_tokenizer, codebook_sizes=[5, 4]), demo_tokenizer,
                                           demo_corpus(demo_items), tiny_args(tmp_path / "c", resume=True), max_length=32)
        pipeline.train()


def test_nan_loss_stops_naming_stage_and_step(demo_items, demo_tokenizer, tmp_path):
    model = tiny_model(demo_tokenizer)
    with torch.no_grad():
        model.reconstructor.output_norm.weight.fill_(float("nan"))
    pipeline = IndexerTrainer(model, demo_tokenizer, demo_corpus(demo_items), tiny_args(tmp_path), max_length=32)
    with pytest.raises(FloatingPointError, match=r"\[reconstructor_warmup\] the loss became nan at step 0"):
        pipeline.train()


def test_fewer_documents_than_codes(demo_items, demo_tokenizer, tmp_path):
    pipeline = IndexerTrainer(tiny_model(demo_tokenizer, codebook_sizes=[8, 4]), demo_tokenizer,
                                       demo_corpus(demo_items, 6), tiny_args(tmp_path), max_length=32)
    with pytest.raises(ValueError, match="cannot make 8 codes from 6 documents"):
        pipeline.train()


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"item_id": "a", "title": " ", "brand": ""}], "have no text after joining"),
        ([{"item_id": "a", "title": "x"}], "no field 'brand'"),
        ([], "empty"),
        ([{"item_id": "a", "title": "x", "brand": "y"}, {"item_id": "a", "title": "z", "brand": "y"}], "Duplicate document IDs"),
    ],
)
def test_corpus_bad_input(records, message):
    with pytest.raises(ValueError, match=message):
        build_corpus(records, "item_id", ["title", "brand"])


def test_html_entities_are_unescaped():
    corpus = build_corpus([{"item_id": 1, "title": "Salt &amp; Pepper", "brand": "Q&amp;A"}], "item_id", ["title", "brand"])
    assert corpus.texts == ["Salt & Pepper; Q&A"] and corpus.doc_ids == ["1"]


@pytest.mark.parametrize("geometry", ["cosine", "dot"])
def test_kmeans_codebook_separates_clusters_in_its_geometry(geometry):
    from lmindexer.trainers.kmeans import kmeans_codebook

    rng = np.random.default_rng(0)
    directions = np.eye(8, dtype=np.float32)[:4] * 5
    vectors = np.concatenate([d + rng.normal(0, 0.2, (50, 8)).astype(np.float32) for d in directions])
    centroids = kmeans_codebook(vectors, 4, geometry, seed=0, iterations=10, progress=True)
    if geometry == "cosine":
        scores = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) @ (centroids / np.linalg.norm(centroids, axis=1, keepdims=True)).T
        assert np.allclose(np.linalg.norm(centroids, axis=1), np.linalg.norm(vectors, axis=1).mean(), rtol=1e-4)
    else:
        scores = vectors @ centroids.T
    assigned = scores.argmax(1)
    assert len(set(assigned.tolist())) == 4
    for cluster in range(4):  # each true cluster lands on one code
        assert len(set(assigned[cluster * 50 : (cluster + 1) * 50].tolist())) == 1


def test_resume_mid_stage_from_trainer_checkpoints(demo_items, demo_tokenizer, tmp_path, monkeypatch):
    from lmindexer.trainers.stage_trainers import CodebookTrainer

    settings = dict(save_strategy="steps", save_steps=2, codebook_epochs=2)
    _, uninterrupted = run_pipeline(demo_items, demo_tokenizer, tmp_path / "a", **settings)

    original = CodebookTrainer.compute_loss

    def crash_after_a_checkpoint(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.position == 1 and self.state.global_step == 5:
            raise KeyboardInterrupt("simulated interruption mid-stage")
        return original(self, model, inputs, return_outputs, num_items_in_batch)

    monkeypatch.setattr(CodebookTrainer, "compute_loss", crash_after_a_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(demo_items, demo_tokenizer, tmp_path / "b", **settings)
    checkpoints = sorted((tmp_path / "b" / "stages" / "codebook_t1").glob("checkpoint-*"))
    assert [c.name for c in checkpoints][-1] == "checkpoint-4"
    monkeypatch.setattr(CodebookTrainer, "compute_loss", original)
    _, resumed = run_pipeline(demo_items, demo_tokenizer, tmp_path / "b", resume=True, **settings)
    assert resumed == uninterrupted
    assert not (tmp_path / "b" / "stages" / "codebook_t1").exists()  # a finished stage's checkpoints are cleaned up


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_corpus_files_in_every_format(tmp_path, suffix, demo_items):
    import datasets

    from lmindexer.trainers.corpus import load_records

    rows = [{k: item[k] for k in ("item_id", "title", "brand")} for item in demo_items[:5]]
    path = tmp_path / f"items{suffix}"
    dataset = datasets.Dataset.from_list(rows)
    {".jsonl": dataset.to_json, ".csv": dataset.to_csv, ".parquet": dataset.to_parquet}[suffix](str(path))
    corpus = build_corpus(load_records(path), "item_id", ["title", "brand"])
    assert corpus.doc_ids == [r["item_id"] for r in rows]
    assert corpus.texts[0] == f"{rows[0]['title']}; {rows[0]['brand']}"
    with pytest.raises(ValueError, match="use a .jsonl"):
        load_records(tmp_path / "items.txt") if (tmp_path / "items.txt").write_text("x") else None


def test_offline_hub_name_is_a_clear_error(monkeypatch):
    from lmindexer.trainers.corpus import load_records

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="offline"):
        load_records("someone/some-dataset")
