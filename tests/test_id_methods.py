"""ID methods through the registry and the CLI: `lmindexer index --method`, `assign` on a baseline folder,
`finetune --indexer <baseline> --backbone`, and `lmindexer bench ids`, with a tiny random BERT as the encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import one_torch_thread
from transformers import BertConfig, BertModel, T5ForConditionalGeneration

from lmindexer import SemanticIDMap
from lmindexer.trainers.cli import main
from lmindexer.trainers.data.demo import generate_demo_corpus, tiny_t5_config, train_tokenizer, write_jsonl
from lmindexer.trainers.data.embeddings import cached_embeddings
from lmindexer.trainers.id_methods import ID_METHODS, get_id_method, method_of_folder
from lmindexer.trainers.id_methods.quantizer import load_quantizer

TINY_RQVAE = {"hidden_dims": [16], "latent_dim": 8, "epochs": 2, "batch_size": 32, "kmeans_init_points": 64}
SMALL = [
    "--id_length",
    "2",
    "--codebook_size",
    "4",
    "--report_to",
    "none",
    "--disable_tqdm",
    "true",
    "--embedding_max_length",
    "24",
]


@pytest.fixture(scope="module")
def items():
    return generate_demo_corpus(64, seed=2)


@pytest.fixture(scope="module")
def encoder(items, tmp_path_factory):
    """A random two-layer BERT with a tokenizer trained on the corpus, saved like any local checkpoint."""
    folder = tmp_path_factory.mktemp("encoder")
    tokenizer = train_tokenizer([f"{i['title']}; {i['brand']}" for i in items], vocab_size=300)
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def corpus_file(items, tmp_path_factory):
    return write_jsonl(items, tmp_path_factory.mktemp("corpus") / "items.jsonl")


@pytest.fixture(scope="module")
def indexed(corpus_file, encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("indexed")
    for method in ("rqkmeans", "hkmeans", "rqvae"):
        settings = ["--method_settings", json.dumps(TINY_RQVAE)] if method == "rqvae" else []
        assert (
            main(
                [
                    "index",
                    "--method",
                    method,
                    "--corpus",
                    str(corpus_file),
                    "--encoder",
                    str(encoder),
                    "--label_field",
                    "category",
                    "--dedup_size",
                    "64",
                    "--output_dir",
                    str(root / method),
                    *SMALL,
                    *settings,
                ]
            )
            == 0
        )
    return root


def test_the_registry_names_every_method():
    assert {"lmindexer", "rqkmeans", "rqvae", "hkmeans"} <= set(ID_METHODS)
    with pytest.raises(ValueError, match=r"Unknown ID method 'kmeans\+\+'; the methods are hkmeans, lmindexer"):
        get_id_method("kmeans++")


@pytest.mark.parametrize("method", ["rqkmeans", "hkmeans", "rqvae"])
def test_baseline_folder_has_the_indexer_layout(method, indexed, items, encoder):
    folder = indexed / method
    for name in (
        "semantic_id_map.safetensors",
        "indexer_metrics.json",
        "README.md",
        "lmindexer_card.json",
        "quantizer.safetensors",
        "quantizer_config.json",
        "id_method.json",
        "assets/codebook_usage.png",
    ):
        assert (folder / name).is_file(), name
    assert method_of_folder(folder).name == method
    id_map = SemanticIDMap.load(folder / "semantic_id_map.safetensors")
    assert sorted(id_map.doc_ids) == sorted(item["item_id"] for item in items)
    assert len({tuple(row) for row in id_map.semantic_ids.tolist()}) == len(items)  # unique with the dedup position
    metrics = json.loads((folder / "indexer_metrics.json").read_text())
    for key in ("perplexity_t1", "utilisation_t2", "diff_ratio_t2", "collision_rate", "ami_t1", "ami_t2"):
        assert key in metrics["final"], key
    assert metrics["id_map"]["documents"] == len(items)
    # The saved quantiser gives every training document its learned codes back from the cached embeddings.
    stamp = json.loads((folder / "id_method.json").read_text())["embedding"]
    texts = [f"{item['title']}; {item['brand']}" for item in items]
    vectors = cached_embeddings(
        [i["item_id"] for i in items],
        texts,
        indexed / ".embeddings",
        stamp["encoder"],
        stamp["pooling"],
        stamp["normalize"],
        stamp["max_length"],
        stamp["text_fields"],
    )
    learned = np.asarray([id_map.semantic_id(item["item_id"])[:2] for item in items])
    assert np.array_equal(load_quantizer(folder).assign(vectors), learned)
    card = (folder / "README.md").read_text()
    assert f"made by **{method}**" in card and "lmindexer assign --model" in card


def test_assign_on_a_baseline_folder_keeps_ids_and_adds_new_documents(indexed, items, tmp_path, capsys):
    folder = indexed / "rqkmeans"
    before = SemanticIDMap.load(folder / "semantic_id_map.safetensors")
    new = [dict(item, item_id=f"NEW{index}") for index, item in enumerate(generate_demo_corpus(10, seed=9))]
    path = write_jsonl(items[:3] + new, tmp_path / "new.jsonl")
    assert main(["assign", "--model", str(folder), "--corpus", str(path)]) == 0
    assert '"new_documents": 10, "already_mapped": 3' in capsys.readouterr().out
    after = SemanticIDMap.load(folder / "semantic_id_map.safetensors")
    assert len(after) == len(before) + 10
    for doc_id in before.doc_ids:
        assert after.semantic_id(doc_id) == before.semantic_id(doc_id)


def test_bad_method_settings_and_unknown_method_are_named(corpus_file, encoder, tmp_path, capsys):
    cases = [
        (
            ["--method", "rqvae", "--encoder", str(encoder), "--method_settings", "{epochs: 2}"],
            "--method_settings is not valid JSON",
        ),
        (["--method", "nope"], "Unknown ID method 'nope'"),
        (["--method", "rqkmeans", "--encoder", str(tmp_path / "does-not-exist")], "does-not-exist"),
        (
            ["--method", "hkmeans", "--encoder", str(encoder), "--codebook_size", "100"],
            "cannot make 100 codes from 64 documents",
        ),
    ]
    for index, (extra, message) in enumerate(cases):
        assert (
            main(["index", "--corpus", str(corpus_file), "--output_dir", str(tmp_path / str(index)), *SMALL, *extra])
            == 1
        )
        stderr = capsys.readouterr().err
        errors = [line for line in stderr.splitlines() if line.startswith("lmindexer index: error:")]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in stderr, stderr


def test_finetune_on_baseline_ids_needs_and_uses_a_backbone(indexed, items, tmp_path, capsys):
    data = tmp_path / "rec"
    write_jsonl(items, data / "items.jsonl")
    write_jsonl(
        [
            {"user_id": f"u{u}", "items": [items[(u + 5 * k) % len(items)]["item_id"] for k in range(4)]}
            for u in range(12)
        ],
        data / "sequences.jsonl",
    )
    tokenizer = train_tokenizer([item["title"] for item in items], vocab_size=300)
    torch.manual_seed(0)
    backbone = tmp_path / "t5"
    T5ForConditionalGeneration(tiny_t5_config(len(tokenizer), 32)).save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    common = [
        "--indexer",
        str(indexed / "hkmeans"),
        "--task",
        "recommendation",
        "--data",
        str(data),
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
        "4",
        "--eval_ks",
        "1,4",
        "--max_length",
        "48",
    ]
    assert main(["finetune", *common, "--output_dir", str(tmp_path / "no-backbone")]) == 1
    assert "two-stage method 'hkmeans', which has no language model" in capsys.readouterr().err
    output = tmp_path / "retriever"
    assert main(["finetune", *common, "--backbone", str(backbone), "--output_dir", str(output)]) == 0
    saved = json.loads((output / "retrieval_metrics.json").read_text())
    assert {"test_recall@4", "test_ndcg@4"} <= set(saved)
    retriever_map = SemanticIDMap.load(output / "semantic_id_map.safetensors")
    assert retriever_map == SemanticIDMap.load(indexed / "hkmeans" / "semantic_id_map.safetensors")


@pytest.mark.slow
def test_bench_ids_writes_records_per_method_and_seed(corpus_file, encoder, tmp_path):
    out = tmp_path / "ids.json"
    assert (
        main(
            [
                "bench",
                "ids",
                "--data",
                str(corpus_file.parent),
                "--methods",
                "rqkmeans,hkmeans",
                "--seeds",
                "0,1",
                "--label_field",
                "category",
                "--coarse_level",
                "0",
                "--fine_levels",
                "1",
                "--encoder",
                str(encoder),
                "--output",
                str(out),
                "--output_dir",
                str(tmp_path / "work"),
                *SMALL,
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert [(r["method"], r["seed"]) for r in result["records"]] == [
        ("rqkmeans", 0),
        ("rqkmeans", 1),
        ("hkmeans", 0),
        ("hkmeans", 1),
    ]
    for record in result["records"]:
        assert 0 <= record["collision_rate"] <= 1 and len(record["utilisation"]) == 2
    # The demo label is "category > subcategory"; level 0 of a plain string is the string itself.
    assert set(result["summary"]) == {"rqkmeans", "hkmeans"} and result["summary"]["hkmeans"]["runs"] == 2
    table = out.with_suffix(".md").read_text()
    assert "| rqkmeans | 2 |" in table and "| hkmeans | 2 |" in table


@pytest.mark.slow
def test_bench_ids_rerun_keeps_finished_runs_of_the_same_settings(corpus_file, encoder, tmp_path, monkeypatch):
    from lmindexer.trainers.bench import ids as bench_ids

    out = tmp_path / "ids.json"
    args = [
        "bench",
        "ids",
        "--data",
        str(corpus_file.parent),
        "--methods",
        "rqkmeans",
        "--label_field",
        "category",
        "--coarse_level",
        "0",
        "--fine_levels",
        "1",
        "--encoder",
        str(encoder),
        "--output",
        str(out),
        "--output_dir",
        str(tmp_path / "work"),
        *SMALL,
    ]
    assert main([*args, "--seeds", "0"]) == 0
    first = json.loads(out.read_text())["records"]
    ran = []
    index_corpus = bench_ids.index_corpus
    monkeypatch.setattr(
        bench_ids,
        "index_corpus",
        lambda method_args, run_args: ran.append(run_args.seed) or index_corpus(method_args, run_args),
    )
    assert main([*args, "--seeds", "0,1"]) == 0  # more seeds: only the new one runs
    result = json.loads(out.read_text())
    assert ran == [1] and result["records"][0] == first[0] and [r["seed"] for r in result["records"]] == [0, 1]
    assert result["summary"]["rqkmeans"]["runs"] == 2
    ran.clear()
    assert main([*args, "--seeds", "0", "--fine_levels", "2"]) == 0  # other settings: nothing is kept
    assert ran == [0] and len(json.loads(out.read_text())["records"]) == 1


@pytest.mark.slow
def test_bench_retrieval_compares_id_methods_with_bm25_and_dense(
    indexed, items, corpus_file, encoder, tmp_path, capsys
):
    """Atomic IDs (a random bit, then a dedup token that alone names the document) and RQ-KMeans IDs fine-tuned under the same
    budget on a tiny BEIR folder; BM25 and dense rankings recomputed independently; each run's figures are those of
    its saved retriever."""
    from lmindexer.trainers.data.embeddings import encode_texts
    from lmindexer.trainers.downstream.finetuning import DownstreamDataArguments, EvaluateArguments, evaluate_retriever
    from lmindexer.trainers.downstream.ranking_metrics import ranking_metrics

    beir = tmp_path / "beir"
    write_jsonl(
        [{"_id": item["item_id"], "title": item["title"], "text": item["brand"]} for item in items],
        beir / "corpus.jsonl",
    )
    write_jsonl([{"_id": f"q{i}", "text": item["title"]} for i, item in enumerate(items)], beir / "queries.jsonl")
    (beir / "qrels").mkdir()
    for split, rows in (("train", range(0, 48)), ("test", range(48, 64))):
        lines = [f"q{i}\t{items[i]['item_id']}\t1" for i in rows]
        (beir / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(lines) + "\n")
    atomic = tmp_path / "atomic"
    assert (
        main(
            [
                "index",
                "--method",
                "random",
                "--corpus",
                str(corpus_file),
                "--encoder",
                str(encoder),
                "--output_dir",
                str(atomic),
                "--report_to",
                "none",
                "--id_length",
                "1",
                "--codebook_size",
                "2",
                "--embedding_max_length",
                "24",
            ]
        )
        == 0
    )
    atomic_map = SemanticIDMap.load(atomic / "semantic_id_map.safetensors")
    assert atomic_map.codebook_sizes == [2]
    for code in (0, 1):  # within each half the dedup token alone names the document: 0, 1, 2, ...
        dedup = atomic_map.semantic_ids[atomic_map.semantic_ids[:, 0] == code, 1]
        assert sorted(dedup.tolist()) == list(range(len(dedup)))
    tokenizer = train_tokenizer([f"{item['title']} {item['brand']}" for item in items], vocab_size=300)
    torch.manual_seed(0)
    backbone = tmp_path / "t5"
    T5ForConditionalGeneration(tiny_t5_config(len(tokenizer), 32)).save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    output = tmp_path / "retrieval.json"
    with one_torch_thread():
        assert (
            main(
                [
                    "bench",
                    "retrieval",
                    "--data",
                    str(beir),
                    "--indexers",
                    f"{atomic},{indexed / 'rqkmeans'}",
                    "--backbone",
                    str(backbone),
                    "--dense_encoder",
                    str(encoder),
                    "--dense_max_length",
                    "24",
                    "--output",
                    str(output),
                    "--output_dir",
                    str(tmp_path / "runs"),
                    "--max_steps",
                    "3",
                    "--per_device_train_batch_size",
                    "16",
                    "--report_to",
                    "none",
                    "--save_strategy",
                    "no",
                    "--use_cpu",
                    "true",
                    "--disable_tqdm",
                    "true",
                    "--eval_num_beams",
                    "8",
                    "--eval_ks",
                    "5,8",
                    "--max_length",
                    "24",
                    "--train_sampling_strategy",
                    "group_by_length",
                ]
            )
            == 0
        )
    result = json.loads(output.read_text())
    queries, relevant = [items[i]["title"] for i in range(48, 64)], [{items[i]["item_id"]} for i in range(48, 64)]
    doc_ids = [item["item_id"] for item in items]
    bm25, dense = result["baselines"]
    assert bm25["ids"].startswith("BM25") and bm25["metrics"]["recall@8"] >= 0.9  # a query is its document's title
    documents = encode_texts(
        [f"{item['title']} {item['brand']}" for item in items], encoder, max_length=24, progress=False
    )
    scores = encode_texts(queries, encoder, max_length=24, progress=False) @ documents.T
    by_hand = [[doc_ids[j] for j in np.argsort(-row, kind="stable")[:8]] for row in scores]
    assert dense["metrics"] == pytest.approx(ranking_metrics(by_hand, relevant, [5, 8]))
    assert [(record["ids"], record["max_steps"], record["layout"][:-1]) for record in result["records"]] == [
        ("atomic", 3, [2]),
        ("rqkmeans", 3, [4, 4]),
    ]
    for record in result["records"]:
        again = evaluate_retriever(
            EvaluateArguments(model=str(tmp_path / "runs" / f"{record['ids']}-seed0"), num_beams=8, ks="5,8"),
            DownstreamDataArguments(task="retrieval", data=str(beir)),
        )
        assert again["recall@8"] == pytest.approx(record["metrics"]["recall@8"])
        assert again["ndcg@5"] == pytest.approx(record["metrics"]["ndcg@5"])
    table = output.with_suffix(".md").read_text()
    assert "| atomic | t5 | 0 |" in table and "| BM25 (bm25s) | - | - |" in table and "| dense (encoder" in table
    # Recall@k beyond the beams would compare a shorter generative list with BM25's and dense's k documents.
    assert (
        main(
            [
                "bench",
                "retrieval",
                "--data",
                str(beir),
                "--indexers",
                str(atomic),
                "--backbone",
                str(backbone),
                "--output",
                str(tmp_path / "other.json"),
                "--eval_num_beams",
                "8",
                "--eval_ks",
                "5,20",
            ]
        )
        == 1
    )
    assert "exceeds --eval_num_beams 8" in capsys.readouterr().err


def test_reindexing_a_baseline_folder_swaps_it_whole(indexed, corpus_file, encoder, tmp_path, monkeypatch):
    """A kill while the new quantiser and map are written leaves the previous quantiser with its own map."""
    import shutil

    from lmindexer.trainers.id_methods import two_stage

    folder = tmp_path / "rq"
    shutil.copytree(indexed / "rqkmeans", folder)
    before = SemanticIDMap.load(folder / "semantic_id_map.safetensors")
    quantizer_before = (folder / "quantizer.safetensors").read_bytes()

    def killed_after_the_quantizer(*args, **kwargs):
        raise KeyboardInterrupt("killed between the quantiser and the map")

    monkeypatch.setattr(two_stage, "write_id_map_card", killed_after_the_quantizer)
    with pytest.raises(KeyboardInterrupt):
        main(
            [
                "index",
                "--method",
                "rqkmeans",
                "--corpus",
                str(corpus_file),
                "--encoder",
                str(encoder),
                "--seed",
                "5",
                "--label_field",
                "category",
                "--dedup_size",
                "64",
                "--output_dir",
                str(folder),
                *SMALL,
            ]
        )
    assert SemanticIDMap.load(folder / "semantic_id_map.safetensors") == before
    assert (folder / "quantizer.safetensors").read_bytes() == quantizer_before
