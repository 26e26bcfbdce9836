"""Reliability of the training side: the final save swaps whole folders, `assign` holds a lock, an ID map is bound
to its model, `assign` encodes as indexing did, CSV IDs keep their zeros, one-line CLI errors, dedup headroom.

Long on purpose: each reproduced fault is a test here, next to the shared tiny run it needs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_retriever, interrupt_at_step, tiny_indexer_config

from lmindexer import LMIndexerForGenerativeRetrieval, LMIndexerForSemanticID, SemanticIDMap
from lmindexer.modeling_lmindexer import semantic_id_map
from lmindexer.modeling_lmindexer.semantic_id_map import ID_MAP_FILE
from lmindexer.trainers.cli import main
from lmindexer.trainers.data.demo import generate_demo_corpus, write_jsonl
from lmindexer.trainers.id_methods.arguments import AssignArguments

SMALL = [
    "--id_length",
    "2",
    "--codebook_size",
    "4",
    "--report_to",
    "none",
    "--disable_tqdm",
    "true",
    "--reconstructor_warmup_batch_size",
    "16",
    "--encoder_warmup_batch_size",
    "16",
    "--codebook_batch_size",
    "16",
    "--save_strategy",
    "no",
    "--use_cpu",
    "true",
    "--max_length",
    "32",
    "--kmeans_iterations",
    "5",
    "--diagnostics_sample",
    "8",
]


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def items():
    return generate_demo_corpus(48, seed=3)


@pytest.fixture(scope="module")
def corpus_file(items, tmp_path_factory):
    return write_jsonl(items[:40], tmp_path_factory.mktemp("corpus") / "items.jsonl")


@pytest.fixture(scope="module")
def trained(corpus_file, tmp_path_factory):
    """A tiny indexer trained by `lmindexer index` on 40 documents, indexing the title only, at 32 tokens."""
    output = tmp_path_factory.mktemp("index") / "run"
    assert (
        main(["index", "--corpus", str(corpus_file), "--output_dir", str(output), "--text_fields", "title", *SMALL])
        == 0
    )
    return output


@pytest.fixture
def folder(trained, tmp_path):
    """A private copy of the trained indexer folder."""
    copy = tmp_path / "model"
    shutil.copytree(trained, copy)
    return copy


# ---------------------------------------------------------------------------------------- 1. atomic final save
def saving_trainer(folder: Path, corpus_file: Path):
    """An `IndexerTrainer` writing to `folder` whose model has other weights and another map than the folder's."""
    from test_training import tiny_args
    from transformers import AutoTokenizer

    from lmindexer.trainers.data.corpus import build_corpus, load_records
    from lmindexer.trainers.indexer.trainer import IndexerTrainer

    model = LMIndexerForSemanticID.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    corpus = build_corpus(load_records(corpus_file), "item_id", ["title"], title_field="title")
    trainer = IndexerTrainer(model, tokenizer, corpus, tiny_args(folder), max_length=32)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    codes = torch.tensor([[row % 4, (row // 4) % 4] for row in range(len(corpus))])
    new_map = SemanticIDMap.from_codes(corpus.doc_ids, codes, model.config.codebook_sizes, model.config.dedup_size)
    model.attach_id_map(new_map, force=True)
    trainer.final_metrics = {"stages": {}, "id_map": new_map.statistics(), "fingerprint": trainer.fingerprint}
    return trainer, new_map


def test_final_save_killed_between_weights_and_map_keeps_the_previous_folder(folder, corpus_file, monkeypatch):
    before = {
        name: file_digest(folder / name)
        for name in (
            "model.safetensors",
            ID_MAP_FILE,
            "config.json",
            "indexer_metrics.json",
            "README.md",
            "tokenizer.json",
        )
    }
    old_map = SemanticIDMap.load(folder / ID_MAP_FILE)
    assert (folder / "checkpoint-stage").is_dir()
    trainer, new_map = saving_trainer(folder, corpus_file)

    def killed(self, path):
        raise KeyboardInterrupt("killed while writing the ID map")

    monkeypatch.setattr(SemanticIDMap, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        trainer.save()
    monkeypatch.undo()
    # The folder is still the previous complete state: its weights and map agree and load together.
    assert {name: file_digest(folder / name) for name in before} == before
    reloaded = LMIndexerForSemanticID.from_pretrained(folder)
    assert reloaded.id_map == old_map and reloaded.id_map.run_id == reloaded.config.id_map_run_id
    assert (folder / "checkpoint-stage").is_dir()

    trainer.save()  # the next save goes through and keeps the run's checkpoints
    assert file_digest(folder / "model.safetensors") != before["model.safetensors"]
    reloaded = LMIndexerForSemanticID.from_pretrained(folder)
    assert reloaded.id_map == new_map and reloaded.id_map.run_id == new_map.run_id
    assert (folder / "checkpoint-stage" / "pipeline_state.json").is_file()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["model"]  # no staging or .old folder left


def test_a_swap_interrupted_between_the_renames_is_named_and_recovered(folder, corpus_file, caplog):
    from test_training import tiny_args
    from transformers import AutoTokenizer

    from lmindexer.trainers.data.corpus import build_corpus, load_records
    from lmindexer.trainers.indexer.trainer import IndexerTrainer

    old_weights = file_digest(folder / "model.safetensors")
    previous = folder.with_name(folder.name + ".old")
    folder.rename(previous)  # what a kill between the two renames of the swap leaves
    with pytest.raises(OSError, match=r"model\.old"):
        LMIndexerForSemanticID.from_pretrained(folder)
    assert main(["assign", "--model", str(folder), "--corpus", str(corpus_file)]) == 1
    # The next run into that folder puts the previous complete state back before anything else.
    model, tokenizer = LMIndexerForSemanticID.from_pretrained(previous), AutoTokenizer.from_pretrained(previous)
    corpus = build_corpus(load_records(corpus_file), "item_id", ["title"], title_field="title")
    with caplog.at_level(logging.WARNING, logger="lmindexer"):
        IndexerTrainer(model, tokenizer, corpus, tiny_args(folder), max_length=32)
    assert "interrupted" in caplog.text
    assert folder.is_dir() and not previous.exists()
    assert file_digest(folder / "model.safetensors") == old_weights
    assert LMIndexerForSemanticID.from_pretrained(folder).id_map is not None


# --------------------------------------------------------------------------------------- 2. concurrent assign
def new_documents(items, prefix: str, count: int) -> list[dict]:
    return [
        dict(item, item_id=f"{prefix}{i}", title=f"{item['title']} {prefix.lower()} edition")
        for i, item in enumerate(items[:count])
    ]


def test_two_concurrent_assigns_keep_both_batches(folder, items, tmp_path, monkeypatch):
    from lmindexer.trainers.id_methods import indexing
    from lmindexer.trainers.id_methods.lmindexer_method import LMIndexerMethod

    batches = {name: write_jsonl(new_documents(items, name, 5), tmp_path / f"{name}.jsonl") for name in ("A", "B")}
    both_encoded = threading.Barrier(2, timeout=120)
    one_load_at_a_time = threading.Lock()  # transformers' model loading is not thread-safe (processes are fine)
    original = LMIndexerMethod.assign_new_documents

    def encode_then_wait(self, *args, **kwargs):
        with one_load_at_a_time:
            result = original(self, *args, **kwargs)
        both_encoded.wait()  # both runs have read the map and encoded before either writes
        return result

    monkeypatch.setattr(LMIndexerMethod, "assign_new_documents", encode_then_wait)
    reports, errors = {}, []

    def run(name):
        try:
            reports[name] = indexing.assign_documents(AssignArguments(model=str(folder), corpus=str(batches[name])))
        except BaseException as error:  # noqa: BLE001 - surfaced below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(name,)) for name in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors
    final = SemanticIDMap.load(folder / ID_MAP_FILE)
    assert {f"{name}{i}" for name in batches for i in range(5)} <= set(final.doc_ids)
    assert len(final) == 40 + 10 and max(r["map_size"] for r in reports.values()) == 50


def test_assign_waits_a_bounded_time_for_a_held_lock_and_a_dead_holder_frees_it(folder, items, tmp_path):
    from lmindexer.trainers.id_methods.indexing import ASSIGN_LOCK_FILE, assign_documents

    batch = write_jsonl(new_documents(items, "C", 3), tmp_path / "c.jsonl")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)",
            str(folder / ASSIGN_LOCK_FILE),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="another `lmindexer assign`"):
            assign_documents(AssignArguments(model=str(folder), corpus=str(batch), lock_timeout=1.0))
        assert time.monotonic() - started < 60
    finally:
        holder.kill()  # dies holding the lock: the OS releases it
        holder.wait()
    report = assign_documents(AssignArguments(model=str(folder), corpus=str(batch), lock_timeout=5.0))
    assert report["new_documents"] == 3 and report["map_size"] == 43


# ------------------------------------------------------------------------------------- 3. map bound to model
def saved_indexer(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = LMIndexerForSemanticID(tiny_indexer_config())
    codes = torch.tensor([[i % 6, i % 5, i % 4] for i in range(30)])
    model.id_map = SemanticIDMap.from_codes([f"d{i}" for i in range(30)], codes, [6, 5, 4], 16)
    model.save_pretrained(folder, model_card=False)
    return folder


def test_a_map_from_another_model_is_refused_unless_forced(tmp_path, caplog):
    first, second = saved_indexer(tmp_path / "a", 0), saved_indexer(tmp_path / "b", 1)
    first_id = LMIndexerForSemanticID.from_pretrained(first).config.id_map_run_id
    second_id = SemanticIDMap.load(second / ID_MAP_FILE).run_id
    assert first_id and second_id and first_id != second_id
    shutil.copyfile(second / ID_MAP_FILE, first / ID_MAP_FILE)  # same sizes, another model's map
    with pytest.raises(ValueError, match=rf"(?s){second_id}.*{first_id}.*allow_foreign_map=True.*force=True"):
        LMIndexerForSemanticID.from_pretrained(first)
    config = LMIndexerForSemanticID.config_class.from_pretrained(first)
    with pytest.raises(ValueError, match="belongs to another model"):
        SemanticIDMap.load(first / ID_MAP_FILE, config=config)
    foreign = SemanticIDMap.load(first / ID_MAP_FILE, config=config, allow_foreign_map=True)  # deliberate reuse
    # Extending keeps the map's identity; a model built for a map (a new retriever) adopts it.
    assert foreign.extend(["new"], torch.tensor([[0, 0, 0]])).run_id == second_id
    model = LMIndexerForSemanticID(tiny_indexer_config())
    model.attach_id_map(foreign, force=True)
    assert model.config.id_map_run_id == second_id


@pytest.mark.parametrize("suffix", [".json", ".safetensors"])
def test_run_id_and_text_digests_survive_save_load_and_extend(tmp_path, suffix):
    from lmindexer.trainers.data.corpus import text_digests

    texts = ["rose toner", "clay mask", "lip balm"]
    id_map = SemanticIDMap.from_codes(
        list("abc"), torch.tensor([[0, 0], [0, 0], [1, 2]]), [4, 3], 4, text_digests=text_digests(texts)
    )
    loaded = SemanticIDMap.load(id_map.save(tmp_path / f"map{suffix}"))
    assert loaded.run_id == id_map.run_id and torch.equal(loaded.text_digests, id_map.text_digests)
    extended = loaded.extend(["d"], torch.tensor([[1, 2]]))  # no digest given: recorded as unknown (0)
    assert extended.run_id == id_map.run_id and extended.text_digests.tolist()[-1] == 0
    now = text_digests(["rose toner", "clay mask v2", "x", "y"])
    assert extended.changed_documents(["a", "b", "d", "zz"], now) == ["b"]


def test_maps_and_models_without_a_run_id_still_load_with_one_warning(tmp_path, caplog):
    folder = saved_indexer(tmp_path / "old", 0)
    config = json.loads((folder / "config.json").read_text())
    config.pop("id_map_run_id")
    (folder / "config.json").write_text(json.dumps(config))
    id_map = SemanticIDMap.load(folder / ID_MAP_FILE)
    id_map.run_id = None
    id_map.save(folder / ID_MAP_FILE)  # as lmindexer wrote it before maps recorded their model
    semantic_id_map._warned.clear()
    with caplog.at_level(logging.WARNING):
        LMIndexerForSemanticID.from_pretrained(folder)
        LMIndexerForSemanticID.from_pretrained(folder)
    assert caplog.text.count("records no run id") == 1


def test_a_retriever_built_for_a_map_adopts_its_id_and_reloads(demo_items, demo_tokenizer, tmp_path):
    model, tokenizer = build_tiny_retriever(demo_items[:30], demo_tokenizer)
    assert model.config.id_map_run_id == model.id_map.run_id is not None
    model.save_pretrained(tmp_path / "retriever", model_card=False)
    tokenizer.save_pretrained(tmp_path / "retriever")
    reloaded = LMIndexerForGenerativeRetrieval.from_pretrained(tmp_path / "retriever")
    assert reloaded.id_map.run_id == model.id_map.run_id
    # With the settings of an indexer bound to its own map, a retriever built for another map is bound to that map.
    indexer = LMIndexerForSemanticID.from_pretrained(saved_indexer(tmp_path / "indexer", 0))
    other = SemanticIDMap.from_codes(["x", "y"], torch.tensor([[0, 0, 0], [1, 1, 1]]), [6, 5, 4], 16)
    retriever = LMIndexerForGenerativeRetrieval.from_backbone_and_map(
        indexer.backbone, copy.deepcopy(demo_tokenizer), other, config=indexer.config
    )
    assert retriever.config.id_map_run_id == other.run_id != indexer.config.id_map_run_id


# ------------------------------------------------------------------------------- 4. assign encodes as indexing
def test_assign_uses_the_indexing_max_length_and_text_fields(folder, items, tmp_path, monkeypatch):
    from lmindexer.trainers.indexer import corpus_passes

    config = json.loads((folder / "config.json").read_text())
    assert config["indexing_max_length"] == 32 and config["indexing_text_fields"] == ["title"]
    seen = []
    original = corpus_passes.assign_corpus

    def spy(*args, **kwargs):
        seen.append(kwargs["max_length"])
        return original(*args, **kwargs)

    monkeypatch.setattr(corpus_passes, "assign_corpus", spy)
    titles_only = [{"item_id": f"T{i}", "title": item["title"] + " travel size"} for i, item in enumerate(items[:4])]
    batch = write_jsonl(titles_only, tmp_path / "titles.jsonl")  # no `brand`: indexing used the title alone
    assert main(["assign", "--model", str(folder), "--corpus", str(batch)]) == 0
    assert seen == [32]
    assert "T3" in SemanticIDMap.load(folder / ID_MAP_FILE)


# ---------------------------------------------------------------------------------------- 5. CSV ID strings
def test_csv_document_ids_keep_leading_zeros(tmp_path):
    from lmindexer.trainers.data.corpus import build_corpus, load_records

    path = tmp_path / "items.csv"
    path.write_text(
        "item_id,title,brand\n00017,Rose water toner,Acme\n0042,Clay mask,\n1e3,Lip balm,NA\n", encoding="utf-8"
    )
    corpus = build_corpus(load_records(path), "item_id", ["title", "brand"])
    assert corpus.doc_ids == ["00017", "0042", "1e3"]
    assert corpus.texts == ["Rose water toner; Acme", "Clay mask", "Lip balm; NA"]


# --------------------------------------------------------------------------------------------- 6. CLI errors
def one_error_line(capsys, command: str) -> str:
    """The command's stderr, checked to be one `lmindexer <command>: error: ...` line without a traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"lmindexer {command}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_an_empty_corpus_file_is_named(tmp_path, capsys):
    empty = tmp_path / "items.jsonl"
    empty.write_text("")
    assert main(["index", "--corpus", str(empty), "--output_dir", str(tmp_path / "run"), *SMALL]) == 1
    line = one_error_line(capsys, "index")
    assert "items.jsonl" in line and "empty" in line
    header_only = tmp_path / "items.csv"
    header_only.write_text("item_id,title,brand\n")
    assert main(["index", "--corpus", str(header_only), "--output_dir", str(tmp_path / "run"), *SMALL]) == 1
    assert "items.csv holds no documents" in one_error_line(capsys, "index")


@pytest.mark.parametrize(
    "name, content",
    [
        ("items.jsonl", b'{"item_id": "a", "title": "ok"}\n{"item_id": "b", "title": "caf\xe9 au lait"}\n'),
        ("items.csv", b"item_id,title\nb,caf\xe9 au lait\na,ok\n"),
    ],
)
def test_a_file_that_is_not_utf8_is_named_with_its_line(tmp_path, capsys, name, content):
    (tmp_path / name).write_bytes(content)
    assert main(["index", "--corpus", str(tmp_path / name), "--output_dir", str(tmp_path / "run"), *SMALL]) == 1
    line = one_error_line(capsys, "index")
    assert name in line and "not UTF-8" in line and "line 2" in line


def test_a_model_folder_that_does_not_exist_is_named(corpus_file, tmp_path, capsys):
    missing = tmp_path / "runs" / "nothing-here"
    assert main(["assign", "--model", str(missing), "--corpus", str(corpus_file)]) == 1
    line = one_error_line(capsys, "assign")
    assert "--model" in line and str(missing) in line and "does not exist" in line and "huggingface.co" not in line
    assert main(["retrieve", "--model", "./runs/nothing-here", "a query"]) == 1
    assert "./runs/nothing-here does not exist" in one_error_line(capsys, "retrieve")


def test_assign_on_a_retriever_says_it_needs_the_indexer(demo_items, demo_tokenizer, corpus_file, tmp_path, capsys):
    model, tokenizer = build_tiny_retriever(demo_items[:30], demo_tokenizer)
    model.save_pretrained(tmp_path / "retriever", model_card=False)
    tokenizer.save_pretrained(tmp_path / "retriever")
    assert main(["assign", "--model", str(tmp_path / "retriever"), "--corpus", str(corpus_file)]) == 1
    line = one_error_line(capsys, "assign")
    assert "is a generative retriever, not a trained indexer" in line


def test_too_few_documents_for_the_codebook_fail_before_training(items, tmp_path, capsys):
    few = write_jsonl(items[:6], tmp_path / "few.jsonl")
    options = [a if a != "4" else "8" for a in SMALL]  # --codebook_size 8
    assert main(["index", "--corpus", str(few), "--output_dir", str(tmp_path / "run"), *options]) == 1
    line = one_error_line(capsys, "index")
    assert "--codebook_size" in line and "cannot make 8 codes from 6 documents" in line
    assert not (tmp_path / "run" / "checkpoint-stage").exists()  # no stage ran


def test_an_existing_document_with_changed_text_is_warned_about(folder, items, tmp_path, caplog, capsys):
    changed = [dict(items[0], title=items[0]["title"] + " (new formula)"), items[1]]
    batch = write_jsonl(changed + new_documents(items, "N", 2), tmp_path / "changed.jsonl")
    with caplog.at_level(logging.WARNING, logger="lmindexer"):
        assert main(["assign", "--model", str(folder), "--corpus", str(batch)]) == 0
    warning = "1 documents already in the map now read differently than when they got their IDs"
    assert f"{warning} (e.g. '{items[0]['item_id']}')" in caplog.text
    assert '"changed_texts": 1' in capsys.readouterr().out


def test_resuming_with_another_config_names_the_keys(folder, corpus_file, capsys):
    options = [a if a != "4" else "3" for a in SMALL]  # --codebook_size 3
    assert (
        main(
            [
                "index",
                "--corpus",
                str(corpus_file),
                "--output_dir",
                str(folder),
                "--text_fields",
                "title",
                "--resume",
                "true",
                *options,
            ]
        )
        == 1
    )
    line = one_error_line(capsys, "index")
    assert "different config (codebook_sizes: [4, 4] -> [3, 3])" in line


def test_killed_in_the_first_stage_and_resumed_with_another_codebook_size(corpus_file, tmp_path, monkeypatch, capsys):
    from lmindexer.trainers.indexer.stage_trainers import ReconstructorWarmupTrainer

    output = tmp_path / "run"
    options = [*SMALL, "--save_strategy", "steps", "--save_steps", "2", "--reconstructor_warmup_batch_size", "8"]
    original = interrupt_at_step(monkeypatch, ReconstructorWarmupTrainer, 3, "killed in the first stage")
    with pytest.raises(KeyboardInterrupt):
        main(["index", "--corpus", str(corpus_file), "--output_dir", str(output), *options])
    assert (output / "stages" / "reconstructor_warmup" / "checkpoint-2").is_dir()
    monkeypatch.setattr(ReconstructorWarmupTrainer, "compute_loss", original)
    resumed = [a if a != "4" else "5" for a in options]
    assert main(["index", "--corpus", str(corpus_file), "--output_dir", str(output), "--resume", "true", *resumed]) == 1
    line = one_error_line(capsys, "index")  # the fingerprint check comes before any weights are loaded
    assert "codebook_sizes: [4, 4] -> [5, 5]" in line and "size mismatch" not in line


def test_debug_prints_the_traceback(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "items.jsonl"
    empty.write_text("")
    assert main(["index", "--corpus", str(empty), "--debug", "--output_dir", str(tmp_path / "run"), *SMALL]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("lmindexer index: error: ")
    monkeypatch.setenv("LMINDEXER_DEBUG", "1")
    assert main(["index", "--corpus", str(empty), "--output_dir", str(tmp_path / "run"), *SMALL]) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.delenv("LMINDEXER_DEBUG")
    assert main(["index", "--no_such_option", "1"]) == 2  # usage errors keep argparse's status


# ------------------------------------------------------------------------------------------- 7. dedup headroom
@pytest.mark.parametrize("largest, size", [(1, 2), (2, 4), (3, 4), (4, 8), (5, 8), (8, 16)])
def test_automatic_dedup_size_is_a_power_of_two_strictly_above_the_largest_group(largest, size):
    import numpy as np

    from lmindexer.trainers.indexer.id_layout import automatic_dedup_size

    codes = np.array([[0, 0]] * largest + [[1, 1]])
    assert automatic_dedup_size(codes, [4, 4]) == size


def fill_largest_group(folder: Path) -> tuple[tuple[int, ...], int]:
    """Shrink the folder's dedup position to its largest group, which is then full; returns that group and size."""
    id_map = SemanticIDMap.load(folder / ID_MAP_FILE)
    learned = [tuple(row[:-1]) for row in id_map.semantic_ids.tolist()]
    group = max(set(learned), key=learned.count)
    size = learned.count(group)
    full = SemanticIDMap(
        id_map.doc_ids,
        id_map.semantic_ids,
        id_map.codebook_sizes,
        size,
        id_map.doc_titles,
        run_id=id_map.run_id,
        text_digests=id_map.text_digests,
    )
    full.save(folder / ID_MAP_FILE)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, dedup_size=size)))
    return group, size


def test_a_full_group_is_named_and_rededuplicate_grows_the_dedup_position(folder, items, tmp_path, monkeypatch, capsys):
    from lmindexer.trainers.indexer import corpus_passes

    group, size = fill_largest_group(folder)
    before = SemanticIDMap.load(folder / ID_MAP_FILE)
    # The encoder puts every new document into the full group.
    monkeypatch.setattr(
        corpus_passes, "assign_corpus", lambda model, tokenizer, texts, **kwargs: np_full(len(texts), group)
    )
    batch = write_jsonl(new_documents(items, "G", 2), tmp_path / "g.jsonl")
    assert main(["assign", "--model", str(folder), "--corpus", str(batch)]) == 1
    line = one_error_line(capsys, "assign")
    assert f"{size + 2} documents share one learned ID {group}" in line and "--rededuplicate true" in line
    assert f"to {1 << (size + 2).bit_length()}" in line
    assert main(["assign", "--model", str(folder), "--corpus", str(batch), "--rededuplicate", "true"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    grown = 1 << (size + 2).bit_length()
    assert report["dedup_size"] == [size, grown] and report["changed_ids"] == []
    after = LMIndexerForSemanticID.from_pretrained(folder)
    assert after.config.dedup_size == grown == after.id_map.dedup_size
    assert all(after.id_map.semantic_id(doc) == before.semantic_id(doc) for doc in before.doc_ids)
    assert after.id_map.semantic_id("G1")[:-1] == group


def test_a_map_grown_ahead_of_its_config_is_adopted(folder, caplog):
    id_map = SemanticIDMap.load(folder / ID_MAP_FILE)
    grown = id_map.extend([], torch.zeros(0, id_map.id_length, dtype=torch.long), dedup_size=id_map.dedup_size * 2)
    grown.save(folder / ID_MAP_FILE)  # killed before config.json was rewritten
    with caplog.at_level(logging.WARNING):
        model = LMIndexerForSemanticID.from_pretrained(folder)
    assert model.config.dedup_size == grown.dedup_size and "using the map's" in caplog.text


def np_full(count: int, group: tuple[int, ...]):
    import numpy as np

    return np.tile(np.asarray(group, dtype=np.int64), (count, 1))
