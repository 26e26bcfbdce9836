"""The `lmindexer index` / `lmindexer assign` commands, in-process and under torchrun with two CPU processes."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import demo_corpus_file, one_torch_thread
from transformers import AutoTokenizer

from lmindexer import LMIndexerForSemanticID, SemanticIDMap
from lmindexer.trainers.cli import main
from lmindexer.trainers.data.corpus import build_corpus, load_records
from lmindexer.trainers.data.demo import write_jsonl
from lmindexer.trainers.indexer.corpus_passes import assign_corpus

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
]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    return demo_corpus_file(tmp_path_factory, 96, seed=1)


# The recipe before the quality fixes: the map the redesign was pinned against is made with these.
LEGACY_RECIPE = [
    "--later_position_input",
    "raw",
    "--center_hidden",
    "false",
    "--pooled_hidden",
    "false",
    "--contrastive_positive",
    "self",
    "--reconstructor_warmup_input",
    "zeros",
    "--reconstructor_position_norm",
    "false",
    "--reconstruction_vocabulary",
    "full",
    "--encoder_warmup_groups_by_prefix",
    "false",
]


@pytest.fixture(scope="module")
def legacy_indexed(corpus_file, tmp_path_factory):
    output = tmp_path_factory.mktemp("legacy") / "run"
    with one_torch_thread():
        assert (
            main(
                [
                    "index",
                    "--corpus",
                    str(corpus_file),
                    "--output-dir",
                    str(output),
                    "--label_field",
                    "category",
                    *SMALL,
                    *LEGACY_RECIPE,
                ]
            )
            == 0
        )
    return output


@pytest.fixture(scope="module")
def indexed(corpus_file, tmp_path_factory):
    output = tmp_path_factory.mktemp("index") / "run"
    with one_torch_thread():
        assert (
            main(
                [
                    "index",
                    "--corpus",
                    str(corpus_file),
                    "--output-dir",
                    str(output),
                    "--label_field",
                    "category",
                    *SMALL,
                ]
            )
            == 0
        )
    return output


@pytest.mark.slow
def test_index_writes_a_loadable_indexer(indexed, corpus_file, capsys):
    id_map = SemanticIDMap.load(indexed / "semantic_id_map.safetensors")
    ids = [json.loads(line)["item_id"] for line in corpus_file.read_text().splitlines()]
    assert sorted(id_map.doc_ids) == sorted(ids)
    metrics = json.loads((indexed / "indexer_metrics.json").read_text())
    assert "ami_t1" in metrics["final"] and metrics["id_map"]["documents"] == 96
    assert id_map.dedup_size >= metrics["id_map"]["max_documents_per_learned_id"]


@pytest.mark.slow
def test_assign_extends_the_map_and_keeps_existing_ids(indexed, corpus_file, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(indexed, model_dir)
    before = SemanticIDMap.load(model_dir / "semantic_id_map.safetensors")
    existing = [json.loads(line) for line in corpus_file.read_text().splitlines()][:10]
    new = [dict(item, item_id=f"NEW{i}", title=item["title"] + " refill") for i, item in enumerate(existing[:6])]
    new_file = write_jsonl(existing + new, tmp_path / "new.jsonl")
    assert main(["assign", "--model", str(model_dir), "--corpus", str(new_file), "--max_length", "32"]) == 0
    after = SemanticIDMap.load(model_dir / "semantic_id_map.safetensors")
    assert len(after) == len(before) + 6
    for doc_id in before.doc_ids:
        assert after.semantic_id(doc_id) == before.semantic_id(doc_id)
    assert len({tuple(r) for r in after.semantic_ids.tolist()}) == len(after)
    assert after.title("NEW0").endswith("refill")


def test_unknown_command_and_help(capsys):
    assert main(["frobnicate"]) == 2
    assert main(["--help"]) == 0
    assert "index" in capsys.readouterr().out


def test_missing_field_is_named(corpus_file, tmp_path, capsys):
    assert (
        main(
            [
                "index",
                "--corpus",
                str(corpus_file),
                "--text_fields",
                "title,description",
                "--output_dir",
                str(tmp_path),
                *SMALL,
            ]
        )
        == 1
    )
    assert "no field 'description'" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_directory_from_another_config(indexed, corpus_file, tmp_path, capsys):
    assert (
        main(
            [
                "index",
                "--corpus",
                str(corpus_file),
                "--output_dir",
                str(indexed),
                "--resume",
                "true",
                *[a if a != "4" else "5" for a in SMALL],
            ]
        )
        == 1
    )
    assert "different config" in capsys.readouterr().err


needs_gloo = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="gloo backend not available")


@pytest.fixture(scope="module")
def two_process_run(corpus_file, tmp_path_factory):
    """`lmindexer index` under torchrun with two CPU processes, run once for the tests below."""
    output = tmp_path_factory.mktemp("ddp") / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "lmindexer.trainers.cli",
        "index",
        "--corpus",
        str(corpus_file),
        "--output_dir",
        str(output),
        "--label_field",
        "category",
        *SMALL,
    ]
    return output, subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
@needs_gloo
def test_two_process_run_matches_one_process_coverage(indexed, two_process_run):
    output, result = two_process_run
    assert result.returncode == 0, result.stderr[-3000:]
    ddp_map = SemanticIDMap.load(output / "semantic_id_map.safetensors")
    single_map = SemanticIDMap.load(indexed / "semantic_id_map.safetensors")
    assert sorted(ddp_map.doc_ids) == sorted(single_map.doc_ids)
    assert len({tuple(r) for r in ddp_map.semantic_ids.tolist()}) == len(ddp_map) == 96
    assert result.stdout.count("Indexer, tokenizer, ID map and metrics saved") == 1  # only rank 0 reports and writes


@pytest.mark.slow
@needs_gloo
def test_two_process_codes_are_what_the_saved_model_assigns(two_process_run, corpus_file):
    """Each corpus pass runs on half the rows per process and is gathered: a gather that dropped or misplaced the
    other process's rows leaves codes the trained model does not give. The last position must be the saved model's
    greedy code given the frozen earlier ones; the earlier positions are pinned as frozen."""
    output, result = two_process_run
    assert result.returncode == 0, result.stderr[-3000:]
    model = LMIndexerForSemanticID.from_pretrained(output)
    tokenizer = AutoTokenizer.from_pretrained(output)
    corpus = build_corpus(load_records(corpus_file), "item_id", ["title", "brand"])
    length = model.config.id_length
    learned = np.array([model.id_map.semantic_id(doc_id)[:length] for doc_id in corpus.doc_ids])
    codes = assign_corpus(
        model, tokenizer, corpus.texts, prefix_codes=learned[:, : length - 1], max_length=32, progress=False
    )
    assert np.array_equal(codes[:, : length - 1], learned[:, : length - 1])
    wrong = np.flatnonzero(codes[:, length - 1] != learned[:, length - 1])
    assert wrong.size == 0, f"rows {wrong.tolist()} (rank = row % 2) differ from the saved model's assignment"


# The map `lmindexer index` gave for the `indexed` settings with the code before the trainers/ redesign, taken on
# the development machine with torch 2.13.0 (CPU) and faiss-cpu 1.15.1. Other torch or faiss versions, or other
# hardware, can change floating-point results and with them the codes: there, compare with the old code instead.
INDEXED_MAP_SHA256 = "021a57d5923ef7f0d6c5077d54112eecb770c4e6792fa3e282ac60f20459e621"


@pytest.mark.slow
def test_index_map_is_bit_identical_to_the_code_before_the_redesign(legacy_indexed):
    id_map = SemanticIDMap.load(legacy_indexed / "semantic_id_map.safetensors")
    digest = hashlib.sha256("\n".join(id_map.doc_ids).encode())
    digest.update(id_map.semantic_ids.numpy().astype("int64").tobytes())
    assert digest.hexdigest() == INDEXED_MAP_SHA256, f"the indexed map changed (this run: torch {torch.__version__})"


@pytest.mark.slow
def test_finetune_evaluate_retrieve_from_an_index(indexed, corpus_file, tmp_path, capsys):
    items = [json.loads(line) for line in corpus_file.read_text().splitlines()]
    data = tmp_path / "rec"
    write_jsonl(items, data / "items.jsonl")
    write_jsonl(
        [
            {"user_id": f"u{u}", "items": [items[(u + 7 * k) % len(items)]["item_id"] for k in range(4)]}
            for u in range(20)
        ],
        data / "sequences.jsonl",
    )
    output = tmp_path / "retriever"
    assert (
        main(
            [
                "finetune",
                "--indexer",
                str(indexed),
                "--task",
                "recommendation",
                "--data",
                str(data),
                "--output_dir",
                str(output),
                "--num_train_epochs",
                "1",
                "--per_device_train_batch_size",
                "8",
                "--report_to",
                "none",
                "--save_strategy",
                "no",
                "--eval_strategy",
                "no",
                "--use_cpu",
                "true",
                "--disable_tqdm",
                "true",
                "--eval_num_beams",
                "6",
                "--eval_ks",
                "1,5",
                "--max_length",
                "48",
            ]
        )
        == 0
    )
    saved = json.loads((output / "retrieval_metrics.json").read_text())
    assert {"test_recall@5", "test_ndcg@5", "test_map@1", "test_mrr@5"} <= set(saved)
    # The retriever's card: its task, the test metrics it just measured, its indexer, and the indexer's label plot.
    card = (output / "README.md").read_text()
    assert "A generative sequential recommendation model" in card and "**rec** (test)" in card
    assert f"| recall@5 | {saved['test_recall@5']:.4f} |" in card
    assert f"| Base model | {indexed.name} |" in card and "\nbase_model:" not in card  # a local indexer: body only
    assert "- **fine-tuning**: epochs 1; learning rate 0.001; per device batch size 8" in card
    assert (output / "assets" / "label_distribution.png").is_file()
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(output),
                "--task",
                "recommendation",
                "--data",
                str(data),
                "--num_beams",
                "6",
                "--ks",
                "1,5",
            ]
        )
        == 0
    )
    assert main(["retrieve", "--model", str(output), "--top_k", "3", "--num_beams", "6", "gentle face serum"]) == 0
    out = capsys.readouterr().out
    assert "# gentle face serum" in out and "<id_1_" in out and out.count("\n  ") + out.count("\n ") >= 3
    assert main(["retrieve", "--model", str(output)]) == 1
    assert "at least one query" in capsys.readouterr().err


def test_demo_builds_saves_reloads_and_assigns(tmp_path, capsys):
    assert main(["demo", "--output_dir", str(tmp_path), "--num_items", "60"]) == 0
    id_map = SemanticIDMap.load(tmp_path / "semantic_id_map.safetensors")
    assert len(id_map) == 60 and (tmp_path / "modeling_lmindexer.py").exists()
    assert "DEMO00000" in capsys.readouterr().out


@pytest.mark.slow
def test_diagnose_reports_what_an_independent_computation_gives(indexed, corpus_file, tmp_path, capsys):
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    report_file = tmp_path / "diagnosis.json"
    with one_torch_thread():
        assert (
            main(
                [
                    "diagnose",
                    "--model",
                    str(indexed),
                    "--corpus",
                    str(corpus_file),
                    "--label_field",
                    "category",
                    "--sample",
                    "64",
                    "--output",
                    str(report_file),
                ]
            )
            == 0
        )
    printed = capsys.readouterr().out
    report = json.loads(report_file.read_text())
    assert report["documents"] == 64 and [entry["position"] for entry in report["positions"]] == [1, 2]
    # The sample is the seeded permutation's first 64 rows, in corpus order; the codes are the model's greedy IDs.
    records = load_records(corpus_file)
    corpus = build_corpus(records, "item_id", ["title", "brand"], "category")
    rows = sorted(np.random.default_rng(0).permutation(len(corpus))[:64].tolist())
    sample = corpus.select(rows)
    model = LMIndexerForSemanticID.from_pretrained(indexed)
    tokenizer = AutoTokenizer.from_pretrained(indexed)
    codes = assign_corpus(model, tokenizer, sample.texts, max_length=32, progress=False)
    comparison = report["untrained_vs_trained"]
    assert comparison["trained_ami_c1"] == pytest.approx(adjusted_mutual_info_score(sample.labels, codes[:, 0]))
    assert report["positions"][1]["nmi_with_prefix"] == pytest.approx(
        normalized_mutual_info_score(codes[:, 0], codes[:, 1])
    )
    for entry in report["positions"]:
        losses = entry["reconstruction_loss"]
        assert all(np.isfinite(value) and value > 0 for value in losses.values())
        assert 0.0 <= entry["shared_share_scored"] <= 1.0
    assert report["verdicts"] and all(line.startswith(("OK:", "PROBLEM:", "NOTE:")) for line in report["verdicts"])
    assert report["verdicts"][0] in printed


def test_diagnose_names_a_missing_corpus(tmp_path, capsys):
    assert main(["diagnose", "--model", str(tmp_path)]) == 1
    assert "Give --model" in capsys.readouterr().err


# The budget of the small `bench rec` runs below: a few steps, no saves or evaluations during training.
BENCH_REC_SMALL_BUDGET = (
    "--max_steps 4 --per_device_train_batch_size 8 --report_to none --save_strategy no --eval_strategy no "
    "--use_cpu true --disable_tqdm true --eval_num_beams 10 --eval_ks 5,10 --max_length 48 "
    "--train_sampling_strategy group_by_length"
).split()


@pytest.mark.slow
def test_bench_rec_compares_id_methods_with_most_popular_on_the_same_users(indexed, corpus_file, tmp_path, monkeypatch):
    from lmindexer.trainers.bench.rec import most_popular, test_sequences
    from lmindexer.trainers.downstream.finetuning import DownstreamDataArguments, EvaluateArguments, evaluate_retriever

    items = [json.loads(line) for line in corpus_file.read_text().splitlines()]
    data = tmp_path / "rec"
    write_jsonl(items, data / "items.jsonl")
    users = [
        {"user_id": f"u{u}", "items": [items[(u * 5 + 3 * k) % len(items)]["item_id"] for k in range(3 + u % 3)]}
        for u in range(30)
    ]
    write_jsonl(users, data / "sequences.jsonl")
    output = tmp_path / "rec.json"
    with one_torch_thread():
        assert (
            main(
                [
                    "bench",
                    "rec",
                    "--data",
                    str(data),
                    "--indexers",
                    str(indexed),
                    "--history_formats",
                    "ids,text",
                    "--test_users",
                    "12",
                    "--sample_seed",
                    "4",
                    "--output",
                    str(output),
                    "--output_dir",
                    str(tmp_path / "runs"),
                ]
                + BENCH_REC_SMALL_BUDGET
            )
            == 0
        )
    result = json.loads(output.read_text())
    rows = sorted(np.random.default_rng(4).choice(30, size=12, replace=False).tolist())
    assert result["settings"]["test_users_evaluated"] == 12
    # Most-popular by hand: counts over every user's items but the last two; each sampled user's last item is its target.
    counts = {}
    for user in users:
        for item in user["items"][:-2]:
            counts[item] = counts.get(item, 0) + 1
    ranked = sorted(counts, key=lambda item: (-counts[item], list(counts).index(item)))[:10]
    hits = [users[row]["items"][-1] in ranked[:10] for row in rows]
    assert result["most_popular"]["recall@10"] == pytest.approx(np.mean(hits))
    assert most_popular(test_sequences(data / "sequences.jsonl"), rows, [10])["recall@10"] == pytest.approx(
        np.mean(hits)
    )
    assert [(r["history_format"], r["max_steps"]) for r in result["records"]] == [("ids", 4), ("text", 4)]
    # Each run's figures are those of its saved retriever on the same sampled users.
    for record in result["records"]:
        saved = tmp_path / "runs" / f"{indexed.name}-{record['history_format']}-seed0"
        again = evaluate_retriever(
            EvaluateArguments(model=str(saved), num_beams=10, ks="5,10"),
            DownstreamDataArguments(
                task="recommendation",
                data=str(data),
                eval_rows=rows,
                max_length=48,
                history_format=record["history_format"],
            ),
        )
        assert again["recall@10"] == pytest.approx(record["metrics"]["test_recall@10"])
    table = output.with_suffix(".md").read_text()
    assert "| most-popular |" in table and f"| {indexed.name} | own | ids | 0 |" in table
    # A re-run with the same settings keeps the finished runs and a baseline added on the same users (bench_sasrec.py).
    from lmindexer.trainers.bench import rec as bench_rec

    result["baselines"] = [
        {
            "ids": "SASRec",
            "history_format": "item IDs",
            "seed": 0,
            "wall_s": 1.0,
            "metrics": {f"test_{name}": 0.5 for name in bench_rec.TABLE_METRICS},
        }
    ]
    output.write_text(json.dumps(result))
    monkeypatch.setattr(bench_rec, "finetune_retriever", lambda *args: pytest.fail("a finished run was redone"))
    with one_torch_thread():
        assert (
            main(
                [
                    "bench",
                    "rec",
                    "--data",
                    str(data),
                    "--indexers",
                    str(indexed),
                    "--history_formats",
                    "text",
                    "--test_users",
                    "12",
                    "--sample_seed",
                    "4",
                    "--output",
                    str(output),
                    "--output_dir",
                    str(tmp_path / "runs"),
                    "--logging_steps",
                    "3",
                ]
                + BENCH_REC_SMALL_BUDGET
            )
            == 0
        )  # logging is bookkeeping: the finished runs still count
    again = json.loads(output.read_text())
    assert again["records"] == result["records"] and again["baselines"] == result["baselines"]
    assert "| SASRec | - | item IDs | 0 | 0.5000 |" in output.with_suffix(".md").read_text()


@pytest.mark.slow
def test_finetune_backbone_replaces_an_lmindexers_own_model(indexed, tmp_path):
    """`--backbone` with an LMIndexer folder: the given model, on the indexer's IDs (one recommender for every method)."""
    from transformers import T5ForConditionalGeneration

    from lmindexer.trainers.data.demo import tiny_t5_config
    from lmindexer.trainers.downstream.finetuning import FinetuneArguments, build_retriever

    tokenizer = AutoTokenizer.from_pretrained(indexed)
    backbone = tmp_path / "small-t5"
    T5ForConditionalGeneration(tiny_t5_config(len(tokenizer), 24)).save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    own = build_retriever(FinetuneArguments(indexer=str(indexed)))
    other = build_retriever(FinetuneArguments(indexer=str(indexed), backbone=str(backbone)))
    assert other.id_map == own.id_map == SemanticIDMap.load(indexed / "semantic_id_map.safetensors")
    assert other.backbone.config.d_model == 24 and own.backbone.config.d_model != 24


@pytest.mark.slow
def test_comparisons_give_an_lmindexer_its_own_backbone_unless_shared(indexed):
    from lmindexer.trainers.bench.rec import run_finetune_arguments
    from lmindexer.trainers.downstream.finetuning import FinetuneArguments

    given = FinetuneArguments(backbone="runs/small-t5")
    assert run_finetune_arguments(given, str(indexed), "own").backbone is None
    shared = run_finetune_arguments(given, str(indexed), "shared")
    assert (shared.indexer, shared.backbone, given.indexer) == (str(indexed), "runs/small-t5", "")
    with pytest.raises(ValueError, match="'own' or 'shared'"):
        run_finetune_arguments(given, str(indexed), "mine")
