"""Reliability of `finetune`, `evaluate` and `bench rec` (issue #21): bad inputs and settings are refused before the
first training step with one line naming the file or flag; a failure after training never costs the trained model;
checkpoints of different runs never mix; metrics past the beam count are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import one_torch_thread

from lmindexer.trainers.cli import main
from lmindexer.trainers.data.demo import build_untrained_demo_indexer, generate_demo_corpus, write_jsonl
from lmindexer.trainers.downstream import retrieval_trainer

NUM_ITEMS = 40


@pytest.fixture(scope="module")
def indexer(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("indexer") / "demo"
    with one_torch_thread():
        build_untrained_demo_indexer(folder, NUM_ITEMS, seed=0)
    return folder


@pytest.fixture(scope="module")
def items() -> list[dict]:
    return generate_demo_corpus(NUM_ITEMS, seed=0)


def recommendation_folder(folder: Path, items: list[dict], users: list[list[str]] | None = None) -> Path:
    ids = [item["item_id"] for item in items]
    users = users if users is not None else [[ids[(u + 3 * k) % len(ids)] for k in range(4)] for u in range(12)]
    write_jsonl(items, folder / "items.jsonl")
    write_jsonl(
        [{"user_id": f"u{u}", "items": sequence} for u, sequence in enumerate(users)], folder / "sequences.jsonl"
    )
    return folder


def beir_folder(folder: Path, items: list[dict], test_qrels: str | None = "q1\t{0}\t1\nq2\t{1}\t1\n") -> Path:
    ids = [item["item_id"] for item in items]
    write_jsonl(
        [{"_id": item["item_id"], "title": item["title"], "text": item["brand"]} for item in items],
        folder / "corpus.jsonl",
    )
    write_jsonl([{"_id": "q1", "text": "a serum"}, {"_id": "q2", "text": "a lipstick"}], folder / "queries.jsonl")
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "qrels" / "train.tsv").write_text(f"query-id\tcorpus-id\tscore\nq1\t{ids[0]}\t1\n")
    if test_qrels is not None:
        (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + test_qrels.format(*ids))
    return folder


TINY_TRAINING = [
    "--max_steps",
    "2",
    "--per_device_train_batch_size",
    "8",
    "--report_to",
    "none",
    "--eval_strategy",
    "no",
    "--use_cpu",
    "true",
    "--disable_tqdm",
    "true",
    "--max_length",
    "32",
]


def finetune(indexer: Path, task: str, data: Path, output: Path, *extra: str) -> int:
    settings = {"--eval_num_beams": "6", "--eval_ks": "1,5", "--save_strategy": "no"}
    for flag, value in zip(extra[::2], extra[1::2]):
        settings[flag] = value
    with one_torch_thread():
        return main(
            [
                "finetune",
                "--indexer",
                str(indexer),
                "--task",
                task,
                "--data",
                str(data),
                "--output_dir",
                str(output),
                *TINY_TRAINING,
                *[word for pair in settings.items() for word in pair],
            ]
        )


@pytest.fixture
def training_must_not_start(monkeypatch):
    def refuse(self, *args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(retrieval_trainer.GenerativeRetrievalTrainer, "train", refuse)


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lmindexer ")]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize(
    "case, task, named",
    [
        ("no test qrels", "retrieval", "qrels/test.tsv is missing"),
        ("test qrels name unknown documents", "retrieval", "qrels/test.tsv: no test query survives"),
        ("every user has fewer than 3 items", "recommendation", "sequences.jsonl: no train sample"),
        ("eval_ks 0", "recommendation", "--eval_ks '0'"),
        ("eval_ks above the beams", "recommendation", "--eval_ks 30 exceeds --eval_num_beams 6"),
        ("eval_rows outside the test split", "retrieval", "eval_rows"),
    ],
)
def test_bad_finetune_inputs_are_refused_before_training(
    indexer, items, tmp_path, capsys, training_must_not_start, case, task, named
):
    extra = []
    if task == "retrieval":
        qrels = {"no test qrels": None, "test qrels name unknown documents": "q1\tNOPE\t1\n"}.get(case, "q1\t{0}\t1\n")
        data = beir_folder(tmp_path / "beir", items, qrels)
    else:
        ids = [item["item_id"] for item in items]
        short = [[ids[u], ids[u + 1]] for u in range(6)] if case == "every user has fewer than 3 items" else None
        data = recommendation_folder(tmp_path / "rec", items, short)
    if case == "eval_ks 0":
        extra = ["--eval_ks", "0"]
    elif case == "eval_ks above the beams":
        extra = ["--eval_ks", "5,30"]
    elif case == "eval_rows outside the test split":
        extra = ["--eval_rows", "7"]
    assert finetune(indexer, task, data, tmp_path / "out", *extra) == 1
    line = one_error_line(capsys)
    assert named in line and "training started" not in line, line


def test_a_failed_evaluation_after_training_keeps_the_trained_model(indexer, items, tmp_path, capsys, monkeypatch):
    data = recommendation_folder(tmp_path / "rec", items)

    def broken(*args, **kwargs):
        raise RuntimeError("scoring broke")

    monkeypatch.setattr(retrieval_trainer, "retrieval_metrics", broken)
    output = tmp_path / "out"
    assert finetune(indexer, "recommendation", data, output) == 1
    line = one_error_line(capsys)
    assert "scoring broke" in line and f"saved in {output}" in line
    from lmindexer import LMIndexerForGenerativeRetrieval

    model = LMIndexerForGenerativeRetrieval.from_pretrained(output)  # complete: config, weights, ID map
    assert len(model.id_map) == NUM_ITEMS and (output / "tokenizer.json").is_file()


def test_evaluate_refuses_cut_offs_past_the_beam_count(indexer, items, tmp_path, capsys):
    data = recommendation_folder(tmp_path / "rec", items)
    output = tmp_path / "out"
    assert finetune(indexer, "recommendation", data, output) == 0
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
                "5",
                "--ks",
                "1,30",
            ]
        )
        == 1
    )
    assert "--ks 30 exceeds --num_beams 5" in one_error_line(capsys)
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


def checkpoints(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("checkpoint-*"))


def test_checkpoints_of_another_run_are_never_mixed(indexer, items, tmp_path, capsys):
    data = recommendation_folder(tmp_path / "rec", items)
    output = tmp_path / "out"
    saving = ["--save_strategy", "steps", "--save_steps", "1", "--history_format", "ids"]
    assert finetune(indexer, "recommendation", data, output, *saving) == 0
    assert checkpoints(output) == ["checkpoint-1", "checkpoint-2"]
    assert json.loads((output / "config.json").read_text())["history_format"] == "ids"
    capsys.readouterr()
    # Resuming with another history format or learning rate: refused, naming what differs.
    for change, named in (
        (["--history_format", "text"], "history_format: 'ids' -> 'text'"),
        (["--learning_rate", "0.5"], "learning_rate: 0.001 -> 0.5"),
    ):
        assert (
            finetune(
                indexer,
                "recommendation",
                data,
                output,
                *saving,
                *change,
                "--resume_from_checkpoint",
                str(output / "checkpoint-1"),
            )
            == 1
        )
        line = one_error_line(capsys)
        assert "checkpoint-1 belongs to another fine-tuning run" in line and named in line, line
    # A new run into the folder without resuming: refused while the old checkpoints are there.
    assert finetune(indexer, "recommendation", data, output, *saving, "--seed", "3") == 1
    assert "holds checkpoints of an earlier run (checkpoint-1, checkpoint-2)" in one_error_line(capsys)
    assert checkpoints(output) == ["checkpoint-1", "checkpoint-2"]
    # The same run resumes; --overwrite_output_dir starts afresh without the old run's checkpoints.
    assert finetune(indexer, "recommendation", data, output, *saving, "--resume_from_checkpoint", "true") == 0
    assert (
        finetune(indexer, "recommendation", data, output, "--history_format", "text", "--overwrite_output_dir", "true")
        == 0
    )
    assert checkpoints(output) == []
    assert json.loads((output / "config.json").read_text())["history_format"] == "text"


def bench_rec(indexer: Path, data: Path, output: Path, *extra: str) -> int:
    settings = {"--eval_num_beams": "6", "--eval_ks": "1,3", "--max_steps": "2"}
    for flag, value in zip(extra[::2], extra[1::2]):
        settings[flag] = value
    with one_torch_thread():
        return main(
            [
                "bench",
                "rec",
                "--data",
                str(data),
                "--indexers",
                str(indexer),
                "--output",
                str(output),
                "--output_dir",
                str(output.parent / "runs"),
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
                "--max_length",
                "32",
                *[word for pair in settings.items() for word in pair],
            ]
        )


def test_bench_rec_tables_the_cut_offs_given_and_refuses_k_past_the_beams(
    indexer, items, tmp_path, capsys, monkeypatch
):
    data = recommendation_folder(tmp_path / "rec", items)
    output = tmp_path / "bench" / "rec.json"
    assert bench_rec(indexer, data, output) == 0  # --eval_ks 1,3: no recall@5 or @10 to table
    result = json.loads(output.read_text())
    (record,) = result["records"]
    assert {"test_recall@1", "test_recall@3", "test_ndcg@3"} <= set(record["metrics"])
    table = output.with_suffix(".md").read_text()
    assert "| recall@1 | recall@3 | ndcg@1 | ndcg@3 |" in table and f"{record['metrics']['test_recall@3']:.4f}" in table
    capsys.readouterr()

    def refuse(self, *args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(retrieval_trainer.GenerativeRetrievalTrainer, "train", refuse)
    assert bench_rec(indexer, data, tmp_path / "other.json", "--eval_ks", "5,30") == 1
    assert "--eval_ks 30 exceeds --eval_num_beams 6" in one_error_line(capsys)
    assert not (tmp_path / "other.json").exists()


def test_bench_rec_never_overwrites_an_earlier_result_it_cannot_keep(indexer, items, tmp_path, capsys):
    data = recommendation_folder(tmp_path / "rec", items)
    output = tmp_path / "rec.json"
    output.write_text('{"settings": {"seeds": "0"}, "records": [{"ids": "rq-VAE", "wall_s": 66')  # cut off
    assert bench_rec(indexer, data, output) == 0
    err = capsys.readouterr().err
    assert f"{output}: it is not readable JSON" in err and str(tmp_path / "rec.earlier-1.json") in err
    assert (tmp_path / "rec.earlier-1.json").read_text().endswith('"wall_s": 66')  # kept byte for byte
    finished = json.loads(output.read_text())
    assert len(finished["records"]) == 1
    # Other settings: the finished run is moved aside, naming what differs, not silently dropped.
    assert bench_rec(indexer, data, output, "--max_steps", "3") == 0
    err = capsys.readouterr().err
    assert "made with other settings (training.max_steps: 2 -> 3)" in err and "rec.earlier-2.json" in err
    assert json.loads((tmp_path / "rec.earlier-2.json").read_text()) == finished
    assert (tmp_path / "rec.earlier-2.md").is_file()
    assert [record["max_steps"] for record in json.loads(output.read_text())["records"]] == [3]


def test_an_interrupted_bench_run_goes_on_from_its_own_checkpoint_only(indexer, items, tmp_path, monkeypatch, caplog):
    from conftest import interrupt_at_step

    data = recommendation_folder(tmp_path / "rec", items)
    output = tmp_path / "rec.json"
    saving = ["--save_strategy", "steps", "--save_steps", "1", "--max_steps", "3"]
    original = interrupt_at_step(monkeypatch, retrieval_trainer.GenerativeRetrievalTrainer, 2)
    with pytest.raises(KeyboardInterrupt):
        bench_rec(indexer, data, output, *saving)
    run = tmp_path / "runs" / f"{indexer.name}-ids-seed0"
    assert checkpoints(run) == ["checkpoint-1", "checkpoint-2"] and not output.exists()
    monkeypatch.setattr(retrieval_trainer.GenerativeRetrievalTrainer, "compute_loss", original)
    with caplog.at_level("INFO", logger="lmindexer"):
        assert bench_rec(indexer, data, output, *saving) == 0
    assert f"Resuming the unfinished run from {run / 'checkpoint-2'}" in caplog.text
    assert checkpoints(run) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    # Other settings: the run folder's checkpoints are another run's, so they are removed, never resumed.
    caplog.clear()
    with caplog.at_level("INFO", logger="lmindexer"):
        assert bench_rec(indexer, data, output, *saving, "--learning_rate", "0.01") == 0
    assert "Resuming" not in caplog.text and "Removing" in caplog.text
    stamp = json.loads((run / "checkpoint-3" / "finetune_fingerprint.json").read_text())
    assert stamp["training"]["learning_rate"] == 0.01


@pytest.mark.parametrize(
    "users, extra, named",
    [
        ("short", [], "sequences.jsonl: no train sample"),
        ("fine", ["--eval_ks", "10,30"], "--eval_ks 30 exceeds --eval_num_beams 20"),
        ("fine", ["--validation_users", "0", "--eval_rows", "99"], "eval_rows [99] lie outside"),
    ],
)
def test_the_causal_recommender_is_checked_before_training_too(
    indexer, items, tmp_path, capsys, training_must_not_start, users, extra, named
):
    ids = [item["item_id"] for item in items]
    data = recommendation_folder(tmp_path / "rec", items, [ids[:2], ids[2:4]] if users == "short" else None)
    with one_torch_thread():
        status = main(
            [
                "finetune",
                "--preset",
                "cpu",
                "--indexer",
                str(indexer),
                "--data",
                str(data),
                "--output_dir",
                str(tmp_path / "out"),
                "--use_cpu",
                "true",
                "--report_to",
                "none",
                "--disable_tqdm",
                "true",
                *extra,
            ]
        )
    assert status == 1
    line = one_error_line(capsys)
    assert named in line and "training started" not in line, line


@pytest.mark.slow
def test_a_kill_during_the_final_evaluation_leaves_the_trained_model(indexer, items, tmp_path, capsys):
    import os
    import signal
    import subprocess
    import sys

    from lmindexer import LMIndexerForGenerativeRetrieval
    from lmindexer.trainers.folders.fault_points import KILL_AT_ENV

    data = recommendation_folder(tmp_path / "rec", items)
    output = tmp_path / "out"
    command = [
        "finetune",
        "--indexer",
        str(indexer),
        "--task",
        "recommendation",
        "--data",
        str(data),
        "--output_dir",
        str(output),
        *TINY_TRAINING,
        "--eval_num_beams",
        "6",
        "--eval_ks",
        "1,5",
        "--save_strategy",
        "no",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", KILL_AT_ENV: "finetune.evaluation"}
    result = subprocess.run(
        [sys.executable, "-m", "lmindexer.trainers.cli", *command], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert not (output / "retrieval_metrics.json").exists()
    model = LMIndexerForGenerativeRetrieval.from_pretrained(output)  # complete without its test metrics
    assert len(model.id_map) == NUM_ITEMS
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


def test_a_bench_result_of_other_settings_is_moved_aside_naming_them(tmp_path, capsys):
    """`bench ids` / `bench retrieval` share this with `bench rec`: a finished 66 s rq-VAE run survives another
    --codebook_size."""
    from lmindexer.trainers.bench.results import earlier_result, finished_records

    output = tmp_path / "ids.json"
    earlier = {
        "settings": {"codebook_size": 256, "seeds": "0"},
        "records": [{"method": "rqvae", "seed": 0, "wall_s": 66}],
    }
    output.write_text(json.dumps(earlier))
    output.with_suffix(".md").write_text("the table")
    settings = {"codebook_size": 64, "seeds": "0,1"}
    assert finished_records(earlier_result(output), settings, ("method", "seed"), output=output) == []
    assert not output.exists() and "codebook_size: 256 -> 64" in capsys.readouterr().err
    assert json.loads((tmp_path / "ids.earlier-1.json").read_text()) == earlier
    assert (tmp_path / "ids.earlier-1.md").read_text() == "the table"
    # The same settings with more seeds: the finished run is kept in place.
    output.write_text(json.dumps(earlier))
    same = {"codebook_size": 256, "seeds": "0,1"}
    assert finished_records(earlier_result(output), same, ("method", "seed"), output=output) == earlier["records"]
    assert output.exists() and not (tmp_path / "ids.earlier-2.json").exists()
