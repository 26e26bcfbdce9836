"""Indexer training: each phase trains what it should, the whole run (maps pinned bit for bit), resume at every
boundary, mid-stage checkpoints, diagnostics, k-means and corpus loading.

Long on purpose: the module-scoped reference run is shared by every test that needs a trained indexer.
"""

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import interrupt_at_step, one_torch_thread
from transformers import TrainingArguments

from lmindexer import LMIndexerConfig, LMIndexerForSemanticID, SemanticIDMap
from lmindexer.modeling_lmindexer.configuration_lmindexer import BEFORE_RECIPE
from lmindexer.trainers.data.corpus import build_corpus
from lmindexer.trainers.data.demo import tiny_t5_config
from lmindexer.trainers.indexer.arguments import IndexerTrainingArguments
from lmindexer.trainers.indexer.collators import IndexerDataCollator
from lmindexer.trainers.indexer.diagnostics import code_diagnostics, collapse_warnings
from lmindexer.trainers.indexer.samplers import PrefixGroupBatchSampler
from lmindexer.trainers.indexer.stage_checkpoint import StageCheckpoints
from lmindexer.trainers.indexer.stage_trainers import CodebookTrainer, EncoderWarmupTrainer, ReconstructorWarmupTrainer
from lmindexer.trainers.indexer.stages import plan_stages
from lmindexer.trainers.indexer.trainer import IndexerTrainer


def demo_corpus(items, count=None):
    return build_corpus(
        items[:count] if count else items, "item_id", ["title", "brand"], "subcategory", title_field="title"
    )


def tiny_model(tokenizer, **overrides):
    torch.manual_seed(0)
    # The recipe as Python-built configs defaulted to it when the demo map was pinned (DEMO_MAP_SHA256).
    settings = dict(
        BEFORE_RECIPE,
        backbone_config=tiny_t5_config(len(tokenizer), d_model=32).to_dict(),
        id_length=2,
        codebook_sizes=[4, 4],
        dedup_size=64,
        reconstructor_max_positions=64,
    )
    settings.update(overrides)
    return LMIndexerForSemanticID(LMIndexerConfig(**settings))


def tiny_args(output_dir, **overrides):
    settings = dict(
        output_dir=str(output_dir),
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=5,
        reconstructor_warmup_epochs=1,
        encoder_warmup_epochs=1,
        codebook_epochs=1,
        reconstructor_warmup_batch_size=16,
        encoder_warmup_batch_size=16,
        codebook_batch_size=16,
        assignment_batch_size=32,
        kmeans_iterations=5,
        diagnostics_sample=32,
        seed=7,
        use_cpu=True,
        encoder_warmup_groups_by_prefix=False,  # as when the demo map was pinned (DEMO_MAP_SHA256)
    )
    settings.update(overrides)
    return IndexerTrainingArguments(**settings)


def run_pipeline(items, tokenizer, output_dir, **overrides):
    pipeline = IndexerTrainer(
        tiny_model(tokenizer), tokenizer, demo_corpus(items), tiny_args(output_dir, **overrides), max_length=32
    )
    return pipeline, pipeline.train()


def tokenised_dataset(tokenizer, items, prefix=None, length=None):
    import datasets

    texts = [item["title"] for item in items]
    encoded = tokenizer(texts, max_length=length or 32, truncation=True, padding="max_length" if length else False)
    columns = {
        "row": list(range(len(texts))),
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
    }
    columns["prefix_codes"] = prefix if prefix is not None else [[] for _ in texts]
    return datasets.Dataset.from_dict(columns)


# ----------------------------------------------------------------------------------------------- stages
@pytest.mark.parametrize(
    "trainer_class, position", [(ReconstructorWarmupTrainer, 1), (EncoderWarmupTrainer, 1), (CodebookTrainer, 2)]
)
def test_each_stage_trains_what_it_should(trainer_class, position, demo_items, demo_tokenizer, tmp_path, caplog):
    model = tiny_model(demo_tokenizer)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    prefix = [[i % 2] for i in range(len(demo_items))] if position == 2 else None
    trainer = trainer_class(
        model=model,
        args=TrainingArguments(
            output_dir=str(tmp_path),
            max_steps=3,
            per_device_train_batch_size=8,
            report_to="none",
            learning_rate=1e-2,
            remove_unused_columns=False,
            logging_steps=1,
            save_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
        ),
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
            args=TrainingArguments(
                output_dir=str(tmp_path / f"b{batch_size}"),
                max_steps=1,
                per_device_train_batch_size=batch_size,
                gradient_accumulation_steps=accumulation,
                learning_rate=0.5,
                optim="sgd",
                report_to="none",
                remove_unused_columns=False,
                save_strategy="no",
                use_cpu=True,
                disable_tqdm=True,
                seed=3,
                data_seed=3,
                lr_scheduler_type="constant",
                max_grad_norm=1e9,
            ),
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
        torch.testing.assert_close(
            results[0][name], results[1][name], rtol=1e-4, atol=1e-5, msg=name
        )  # float noise: 8.6e-6 seen with one thread


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
    with one_torch_thread():
        _, id_map = run_pipeline(demo_items, demo_tokenizer, folder)
    return folder, id_map


@pytest.mark.slow
def test_pipeline_end_to_end(demo_items, demo_tokenizer, reference_run):
    tmp_path, id_map = reference_run
    assert len(id_map) == len(demo_items)
    assert len({tuple(row) for row in id_map.semantic_ids.tolist()}) == len(demo_items)
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "semantic_id_map.safetensors",
        "indexer_metrics.json",
    ):
        assert (tmp_path / name).exists(), name
    metrics = json.loads((tmp_path / "indexer_metrics.json").read_text())
    assert [stage.name for stage in plan_stages(2)] == list(metrics["stages"])
    codebook = metrics["stages"]["codebook_t2"]
    for key in ("perplexity_t2", "utilisation_t2", "diff_ratio_t2", "collision_rate", "ami_t2", "reconstruction_f1"):
        assert key in codebook
    loaded = SemanticIDMap.load(
        tmp_path / "semantic_id_map.safetensors", config=LMIndexerForSemanticID.from_pretrained(tmp_path).config
    )
    assert loaded == id_map
    # The saved model reproduces the last position's codes given the frozen earlier ones (earlier codes are
    # frozen at their own stage, so later training may move the greedy argmax away from them).
    from lmindexer.trainers.indexer.corpus_passes import assign_corpus

    reloaded = LMIndexerForSemanticID.from_pretrained(tmp_path)
    frozen = id_map.semantic_ids[:, :2].numpy()
    codes = assign_corpus(
        reloaded,
        demo_tokenizer,
        demo_corpus(demo_items).texts,
        prefix_codes=frozen[:, :1],
        max_length=32,
        progress=False,
    )
    assert np.array_equal(codes, frozen)


@pytest.mark.slow
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
        pipeline = IndexerTrainer(
            tiny_model(demo_tokenizer, codebook_sizes=[5, 4]),
            demo_tokenizer,
            demo_corpus(demo_items),
            tiny_args(tmp_path / "c", resume=True),
            max_length=32,
        )
        pipeline.train()


def test_nan_loss_stops_naming_stage_and_step(demo_items, demo_tokenizer, tmp_path):
    model = tiny_model(demo_tokenizer)
    with torch.no_grad():
        model.reconstructor.output_norm.weight.fill_(float("nan"))
    pipeline = IndexerTrainer(model, demo_tokenizer, demo_corpus(demo_items), tiny_args(tmp_path), max_length=32)
    with pytest.raises(FloatingPointError, match=r"\[reconstructor_warmup\] the loss became nan at step 0"):
        pipeline.train()


def test_fewer_documents_than_codes(demo_items, demo_tokenizer, tmp_path):
    pipeline = IndexerTrainer(
        tiny_model(demo_tokenizer, codebook_sizes=[8, 4]),
        demo_tokenizer,
        demo_corpus(demo_items, 6),
        tiny_args(tmp_path),
        max_length=32,
    )
    with pytest.raises(ValueError, match="cannot make 8 codes from 6 documents"):
        pipeline.train()


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"item_id": "a", "title": " ", "brand": ""}], "have no text after joining"),
        ([{"item_id": "a", "title": "x"}], "no field 'brand'"),
        ([], "empty"),
        (
            [{"item_id": "a", "title": "x", "brand": "y"}, {"item_id": "a", "title": "z", "brand": "y"}],
            "Duplicate document IDs",
        ),
    ],
)
def test_corpus_bad_input(records, message):
    with pytest.raises(ValueError, match=message):
        build_corpus(records, "item_id", ["title", "brand"])


def test_html_entities_are_unescaped():
    corpus = build_corpus(
        [{"item_id": 1, "title": "Salt &amp; Pepper", "brand": "Q&amp;A"}], "item_id", ["title", "brand"]
    )
    assert corpus.texts == ["Salt & Pepper; Q&A"] and corpus.doc_ids == ["1"]


@pytest.mark.parametrize("geometry", ["cosine", "dot"])
def test_kmeans_codebook_separates_clusters_in_its_geometry(geometry):
    from lmindexer.trainers.indexer.kmeans import kmeans_codebook

    rng = np.random.default_rng(0)
    directions = np.eye(8, dtype=np.float32)[:4] * 5
    vectors = np.concatenate([d + rng.normal(0, 0.2, (50, 8)).astype(np.float32) for d in directions])
    centroids = kmeans_codebook(vectors, 4, geometry, seed=0, iterations=10, progress=True)
    if geometry == "cosine":
        scores = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) @ (
            centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
        ).T
        assert np.allclose(np.linalg.norm(centroids, axis=1), np.linalg.norm(vectors, axis=1).mean(), rtol=1e-4)
    else:
        scores = vectors @ centroids.T
    assigned = scores.argmax(1)
    assert len(set(assigned.tolist())) == 4
    for cluster in range(4):  # each true cluster lands on one code
        assert len(set(assigned[cluster * 50 : (cluster + 1) * 50].tolist())) == 1


@pytest.mark.slow
def test_resume_mid_stage_from_trainer_checkpoints(demo_items, demo_tokenizer, tmp_path, monkeypatch):
    from lmindexer.trainers.indexer.stage_trainers import CodebookTrainer

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


# ------------------------------------------------------------------- one map across versions, resume, phases
def map_digest(id_map: SemanticIDMap) -> str:
    """sha256 of the document IDs (newline-joined) followed by the semantic IDs as int64 bytes."""
    digest = hashlib.sha256("\n".join(id_map.doc_ids).encode())
    digest.update(id_map.semantic_ids.numpy().astype("int64").tobytes())
    return digest.hexdigest()


# The map `run_pipeline(demo_items, demo_tokenizer, folder)` gave with the code before the trainers/ redesign.
# Taken on the development machine with torch 2.13.0 (CPU) and faiss-cpu 1.15.1: other torch or faiss versions,
# or other hardware, can change floating-point results and with them the codes, so a mismatch on another
# machine means "compare with the old code there", not necessarily a regression.
DEMO_MAP_SHA256 = "90d6b9b4a9dd2b8c28c7cb242c7065b2971100ded5ccb4ba50b9126c4040635f"
PHASE_METHODS = ("warm_up_reconstructor", "warm_up_encoder", "init_codebook", "train_codebook", "assign")


@pytest.mark.slow
def test_demo_map_is_bit_identical_to_the_code_before_the_redesign(reference_run):
    _, id_map = reference_run
    assert map_digest(id_map) == DEMO_MAP_SHA256, f"the demo ID map changed (this run: torch {torch.__version__})"


def spy_on_phases(monkeypatch, calls: list, first_call: dict | None = None) -> None:
    """Record every phase call as `(method, *args)`; with `first_call`, also the model weights and frozen codes
    the first phase of the run starts from."""
    for name in PHASE_METHODS:
        original = getattr(IndexerTrainer, name)

        def spy(self, *args, _name=name, _original=original):
            if first_call is not None and not calls:
                first_call["weights"] = {key: value.detach().clone() for key, value in self.model.state_dict().items()}
                first_call["codes"] = self.codes.copy()
            calls.append((_name, *args))
            return _original(self, *args)

        monkeypatch.setattr(IndexerTrainer, name, spy)


@pytest.mark.slow
def test_resume_skips_finished_stages_and_starts_from_their_state(
    demo_items, demo_tokenizer, tmp_path, monkeypatch, caplog, reference_run
):
    """A resume that silently restarted from scratch, re-ran a finished stage, or read the checkpoint's state but
    went on with fresh weights or codes would still finish with a plausible map; this checks what it ran and from
    which state."""
    from safetensors.torch import load_file

    _, reference = reference_run
    original = IndexerTrainer.init_codebook
    at_interruption = {}

    def crash_at_second_kmeans(self, position):
        if position == 2:
            at_interruption["weights"] = {key: value.detach().clone() for key, value in self.model.state_dict().items()}
            at_interruption["codes"] = self.codes.copy()
            raise KeyboardInterrupt("simulated interruption")
        return original(self, position)

    monkeypatch.setattr(IndexerTrainer, "init_codebook", crash_at_second_kmeans)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(demo_items, demo_tokenizer, tmp_path)
    monkeypatch.setattr(IndexerTrainer, "init_codebook", original)

    # The checkpoint holds the state the run had after its sixth stage (encoder_warmup_t2).
    saved = tmp_path / "checkpoint-stage"
    assert json.loads((saved / "pipeline_state.json").read_text())["completed_stages"] == 6
    saved_weights = load_file(str(saved / "model.safetensors"))
    saved_codes = load_file(str(saved / "codes.safetensors"))["codes"].numpy()
    assert saved_codes.shape == (len(demo_items), 1) and np.array_equal(saved_codes, at_interruption["codes"])
    assert set(saved_weights) <= set(at_interruption["weights"])
    for key, value in saved_weights.items():
        assert torch.equal(value, at_interruption["weights"][key]), key
    codebook_1 = "codebooks.tables.0.weight"
    assert codebook_1 in saved_weights
    assert not torch.equal(saved_weights[codebook_1], tiny_model(demo_tokenizer).state_dict()[codebook_1])

    calls, first_call = [], {}
    spy_on_phases(monkeypatch, calls, first_call)
    caplog.clear()  # only the resumed run's messages (the interrupted run may have logged too)
    with caplog.at_level(logging.INFO, logger="lmindexer"):
        trainer, resumed = run_pipeline(demo_items, demo_tokenizer, tmp_path, resume=True)
    # Finished stages are skipped ...
    assert calls == [("init_codebook", 2), ("train_codebook", 2), ("assign", 2)]
    started = [record.getMessage() for record in caplog.records if "starting stage" in record.getMessage()]
    assert started == [
        "[kmeans_t2] starting stage 7/9",
        "[codebook_t2] starting stage 8/9",
        "[assign_t2] starting stage 9/9",
    ]
    # ... and the remaining ones start from the checkpoint's weights and codes, not from a fresh model.
    assert np.array_equal(first_call["codes"], saved_codes)
    assert torch.equal(first_call["weights"][codebook_1], saved_weights[codebook_1])
    for key, value in saved_weights.items():
        assert torch.equal(first_call["weights"][key], value), key
    assert list(trainer.metrics) == [stage.name for stage in plan_stages(2)]  # the finished stages' metrics came back
    assert resumed == reference


def interrupt_reconstructor_warmup_after_a_checkpoint(demo_items, demo_tokenizer, output_dir, monkeypatch, **settings):
    """Run until step 3 of the first stage with a Trainer checkpoint every 2 steps, then interrupt."""
    from lmindexer.trainers.indexer.stage_trainers import IndexerStageTrainer

    original = interrupt_at_step(monkeypatch, IndexerStageTrainer, 3, "simulated interruption mid-stage")
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(demo_items, demo_tokenizer, output_dir, save_strategy="steps", save_steps=2, **settings)
    monkeypatch.setattr(IndexerStageTrainer, "compute_loss", original)
    return output_dir / "stages" / "reconstructor_warmup"


@pytest.mark.slow
def test_another_runs_mid_stage_checkpoints_are_refused_or_cleared(
    demo_items, demo_tokenizer, tmp_path, monkeypatch, reference_run
):
    from lmindexer.trainers.indexer.stage_trainers import IndexerStageTrainer

    _, reference = reference_run  # seed 7
    stage_dir = interrupt_reconstructor_warmup_after_a_checkpoint(
        demo_items, demo_tokenizer, tmp_path, monkeypatch, seed=11
    )
    assert (stage_dir / "checkpoint-2" / "trainer_state.json").exists()
    assert json.loads((stage_dir / "fingerprint.json").read_text())["seed"] == 11

    # Resuming with another seed would continue seed 11's optimisation under seed 7's name: refused, naming why.
    with pytest.raises(ValueError, match=r"different schedule, seed; refusing to resume"):
        run_pipeline(demo_items, demo_tokenizer, tmp_path, resume=True, save_strategy="steps", save_steps=2)
    assert (stage_dir / "checkpoint-2" / "trainer_state.json").exists()  # refusing deletes nothing

    # Not resuming: the leftovers are removed, every stage starts at step 0, and the map is a clean seed-7 run's.
    resumed_from = []
    original_train = IndexerStageTrainer.train

    def record_train(self, *args, **kwargs):
        leftovers = sorted(path.name for path in Path(self.args.output_dir).glob("checkpoint-*"))
        resumed_from.append((kwargs.get("resume_from_checkpoint"), leftovers))
        return original_train(self, *args, **kwargs)

    monkeypatch.setattr(IndexerStageTrainer, "train", record_train)
    _, rerun = run_pipeline(demo_items, demo_tokenizer, tmp_path)
    assert resumed_from == [(None, [])] * 5
    assert rerun == reference


def test_newest_complete_trainer_checkpoint_is_chosen_by_step_number(tmp_path):
    for step in (5, 35):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-stage").mkdir()  # not a Trainer checkpoint: ignored
    newest = StageCheckpoints._newest_complete_checkpoint
    assert newest(tmp_path) == str(tmp_path / "checkpoint-35")  # by number: "checkpoint-5" sorts last as text

    (tmp_path / "checkpoint-40").mkdir()  # a save cut off before the Trainer wrote trainer_state.json
    (tmp_path / "checkpoint-40" / "model.safetensors").write_bytes(b"")
    assert newest(tmp_path, remove=False) == str(tmp_path / "checkpoint-35")
    assert (tmp_path / "checkpoint-40").exists()  # readers other than the main process leave it alone
    assert newest(tmp_path) == str(tmp_path / "checkpoint-35")
    assert not (tmp_path / "checkpoint-40").exists()
    assert (tmp_path / "checkpoint-5").exists() and (tmp_path / "checkpoint-35").exists()

    for step in (5, 35):
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").unlink()
    assert newest(tmp_path) is None


def test_open_stage_resumes_only_its_own_runs_checkpoints(tmp_path):
    fingerprint = {"config": "c", "corpus": "d", "schedule": "s"}
    checkpoints = StageCheckpoints(tmp_path, fingerprint)
    folder = checkpoints.stage_folder("codebook_t1")
    assert checkpoints.open_stage("codebook_t1", seed=10, resume=True) is None  # nothing there yet
    assert json.loads((folder / "fingerprint.json").read_text()) == {**fingerprint, "stage": "codebook_t1", "seed": 10}
    for step in (5, 35):
        (folder / f"checkpoint-{step}").mkdir()
        (folder / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert checkpoints.open_stage("codebook_t1", seed=10, resume=True) == str(folder / "checkpoint-35")
    assert checkpoints.open_stage("codebook_t1", seed=10, resume=True, writer=False) == str(folder / "checkpoint-35")

    with pytest.raises(ValueError, match=r"different seed; refusing"):
        checkpoints.open_stage("codebook_t1", seed=11, resume=True)
    other_run = StageCheckpoints(tmp_path, {**fingerprint, "schedule": "t"})
    with pytest.raises(ValueError, match=r"different schedule; refusing"):
        other_run.open_stage("codebook_t1", seed=10, resume=True)
    (folder / "fingerprint.json").unlink()  # not stamped at all: whose it is is unknown
    with pytest.raises(ValueError, match=r"different config, corpus, schedule, stage, seed"):
        checkpoints.open_stage("codebook_t1", seed=10, resume=True)

    assert other_run.open_stage("codebook_t1", seed=10, resume=False) is None  # not resuming: cleared
    assert sorted(path.name for path in folder.iterdir()) == ["fingerprint.json"]


def test_restore_falls_back_to_the_old_checkpoint_after_a_kill_between_renames(demo_tokenizer, tmp_path, monkeypatch):
    checkpoints = StageCheckpoints(tmp_path, {"config": "c", "corpus": "d", "schedule": "s"})
    model = tiny_model(demo_tokenizer)
    names = [stage.name for stage in plan_stages(2)]
    first = np.arange(6, dtype=np.int64).reshape(6, 1) % 4
    checkpoints.save(model, first, {"completed_stages": 5, "stage_names": names, "metrics": {"a": {}}, "card": None})

    original_rename = Path.rename

    def killed_before_the_new_checkpoint_is_in_place(self, target):
        if self.name == "checkpoint-stage.tmp":
            raise KeyboardInterrupt("killed between the two renames")
        return original_rename(self, target)

    monkeypatch.setattr(Path, "rename", killed_before_the_new_checkpoint_is_in_place)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(
            model,
            np.zeros((6, 2), dtype=np.int64),
            {"completed_stages": 9, "stage_names": names, "metrics": {}, "card": None},
        )
    monkeypatch.setattr(Path, "rename", original_rename)
    assert not (tmp_path / "checkpoint-stage").exists() and (tmp_path / "checkpoint-stage.old").is_dir()

    state = checkpoints.restore()
    assert state.folder == tmp_path / "checkpoint-stage.old"
    assert state.completed_stages == 5 and state.metrics == {"a": {}} and np.array_equal(state.codes, first)


@pytest.mark.slow
def test_resume_from_the_old_checkpoint_of_a_finished_run(
    demo_items, demo_tokenizer, tmp_path, monkeypatch, reference_run
):
    folder, reference = reference_run
    shutil.copytree(
        folder / "checkpoint-stage", tmp_path / "checkpoint-stage.old"
    )  # as a kill between renames leaves it
    calls = []
    spy_on_phases(monkeypatch, calls)
    trainer = IndexerTrainer(
        tiny_model(demo_tokenizer),
        demo_tokenizer,
        demo_corpus(demo_items),
        tiny_args(tmp_path, resume=True),
        max_length=32,
    )
    id_map = trainer.train()
    assert calls == []  # every stage had finished
    assert np.array_equal(trainer.codes, reference.semantic_ids[:, :2].numpy())
    reloaded = LMIndexerForSemanticID.from_pretrained(folder)
    for key, value in reloaded.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[key], value), key
    assert id_map == reference


@pytest.mark.slow
def test_phases_run_by_hand_give_the_map_of_train(demo_items, demo_tokenizer, tmp_path, reference_run):
    _, reference = reference_run
    trainer = IndexerTrainer(
        tiny_model(demo_tokenizer), demo_tokenizer, demo_corpus(demo_items), tiny_args(tmp_path), max_length=32
    )
    trainer.warm_up_reconstructor()
    for position in (1, 2):
        trainer.warm_up_encoder(position)
        trainer.init_codebook(position)
        trainer.train_codebook(position)
        if position == 1:  # refused before it touches anything: the run goes on unchanged
            with pytest.raises(
                ValueError, match=r"encoder_warmup_t2 needs the codes of positions 1\.\.1; assign them first"
            ):
                trainer.warm_up_encoder(2)
        trainer.assign(position)
    id_map = trainer.build_id_map()
    assert list(trainer.metrics) == [stage.name for stage in plan_stages(2)]
    assert id_map == reference
    assert map_digest(id_map) == map_digest(reference)


def test_phases_out_of_order_are_refused(demo_items, demo_tokenizer, tmp_path):
    trainer = IndexerTrainer(
        tiny_model(demo_tokenizer), demo_tokenizer, demo_corpus(demo_items), tiny_args(tmp_path), max_length=32
    )
    for phase in ("warm_up_encoder", "init_codebook", "train_codebook", "assign"):
        with pytest.raises(
            ValueError, match=r"_t2 needs the codes of positions 1\.\.1; assign them first \(0 assigned"
        ):
            getattr(trainer, phase)(2)
    with pytest.raises(ValueError, match=r"Assign all 2 positions before building the ID map \(0 assigned so far\)"):
        trainer.build_id_map()
    assert not (tmp_path / "stages").exists() and trainer.metrics == {}


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_corpus_files_in_every_format(tmp_path, suffix, demo_items):
    import datasets

    from lmindexer.trainers.data.corpus import load_records

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
    from lmindexer.trainers.data.corpus import load_records

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="offline"):
        load_records("someone/some-dataset")


@pytest.mark.parametrize("trainer_class, groups_by_prefix", [(CodebookTrainer, None), (EncoderWarmupTrainer, True)])
def test_stages_at_t2_see_whole_prefix_groups(trainer_class, groups_by_prefix, demo_items, demo_tokenizer, tmp_path):
    prefix = [[row % 6] for row in range(48)]  # six groups of eight documents, interleaved in corpus order
    trainer = trainer_class(
        model=tiny_model(demo_tokenizer),
        train_dataset=tokenised_dataset(demo_tokenizer, demo_items[:48], prefix),
        args=TrainingArguments(
            output_dir=str(tmp_path), per_device_train_batch_size=16, report_to="none", use_cpu=True
        ),
        data_collator=IndexerDataCollator(demo_tokenizer, 0.3),
        position=2,
        prefix_keys=np.array([codes[0] for codes in prefix]),
        groups_by_prefix=groups_by_prefix,
    )
    seen = []
    for batch in trainer.get_train_dataloader():
        _, counts = batch["prefix_codes"][:, 0].unique(return_counts=True)
        assert counts.tolist() == [8, 8]  # two whole groups, so every document has partners
        seen += batch["prefix_codes"][:, 0].tolist()
    assert sorted(seen) == sorted(codes[0] for codes in prefix)


@pytest.mark.slow
def test_training_raises_id_quality_above_the_untrained_indexer_and_random_codes(tmp_path):
    """On the demo catalogue (15 planted subcategories), from a random backbone, the recipe's training must give
    first codes that follow the subcategories clearly better than k-means on the untrained indexer does. A random
    backbone's pooled states share a large common component, so this run centres them (`center_hidden`)."""
    from sklearn.metrics import adjusted_mutual_info_score

    from lmindexer.trainers.data.demo import generate_demo_corpus, train_tokenizer

    items = generate_demo_corpus(480, seed=0)
    tokenizer = train_tokenizer([f"{item['title']}; {item['brand']}" for item in items], vocab_size=400)
    corpus = demo_corpus(items)
    recipe = dict(
        later_position_input="residual",
        center_hidden=True,
        pooled_hidden=True,
        contrastive_positive="dropout",
        reconstructor_warmup_input="hidden",
        reconstructor_position_norm=True,
        reconstruction_vocabulary="batch",
    )
    trainer = IndexerTrainer(
        tiny_model(tokenizer, id_length=1, codebook_sizes=[8], **recipe),
        tokenizer,
        corpus,
        tiny_args(
            tmp_path,
            encoder_warmup_epochs=3.0,
            codebook_epochs=3.0,
            learning_rate=1e-3,
            encoder_warmup_groups_by_prefix=True,
        ),
        max_length=32,
    )
    trainer.init_codebook(1)
    untrained = adjusted_mutual_info_score(corpus.labels, trainer.codes_with_current_weights(1)[:, 0])
    trainer.warm_up_reconstructor()
    trainer.warm_up_encoder(1)
    trainer.init_codebook(1)
    trainer.train_codebook(1)
    trainer.assign(1)
    trained = adjusted_mutual_info_score(corpus.labels, trainer.codes[:, 0])
    random_codes = adjusted_mutual_info_score(corpus.labels, np.random.default_rng(0).integers(0, 8, len(corpus)))
    assert trained > untrained + 0.04, (trained, untrained)
    assert trained > random_codes + 0.1, (trained, random_codes)
