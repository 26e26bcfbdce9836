"""Bad inputs to the fine-tuning, evaluation, bench, push and diagnose commands (issue #21, item 8): each ends with
exit code 1 and one line, `lmindexer <command>: error: ...`, that names the file, field or cause; never a
traceback, never a library message that names none of them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import one_torch_thread

from lmindexer.trainers.cli import main
from lmindexer.trainers.data.demo import build_untrained_demo_indexer, generate_demo_corpus, write_jsonl

NUM_ITEMS = 40
TRAINING = [
    "--max_steps",
    "1",
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
    "--eval_num_beams",
    "6",
    "--eval_ks",
    "1,5",
    "--save_strategy",
    "no",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A demo indexer (`idx`), a recommendation folder (`rec`), a BEIR folder (`beir`) and a retriever (`ret`)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    items = generate_demo_corpus(NUM_ITEMS, seed=0)
    ids = [item["item_id"] for item in items]
    with one_torch_thread():
        build_untrained_demo_indexer(root / "idx", NUM_ITEMS, seed=0)
    write_jsonl(items, root / "rec" / "items.jsonl")
    write_jsonl(
        [{"user_id": f"u{u}", "items": [ids[(u + 3 * k) % NUM_ITEMS] for k in range(4)]} for u in range(12)],
        root / "rec" / "sequences.jsonl",
    )
    write_jsonl(
        [{"_id": item["item_id"], "title": item["title"], "text": item["brand"]} for item in items],
        root / "beir" / "corpus.jsonl",
    )
    write_jsonl(
        [{"_id": "q1", "text": "a serum"}, {"_id": "q2", "text": "a lipstick"}], root / "beir" / "queries.jsonl"
    )
    (root / "beir" / "qrels").mkdir()
    (root / "beir" / "qrels" / "train.tsv").write_text(f"query-id\tcorpus-id\tscore\nq1\t{ids[0]}\t1\n")
    (root / "beir" / "qrels" / "test.tsv").write_text(f"query-id\tcorpus-id\tscore\nq2\t{ids[1]}\t1\n")
    with one_torch_thread():
        assert (
            main(
                [
                    "finetune",
                    "--indexer",
                    str(root / "idx"),
                    "--task",
                    "recommendation",
                    "--data",
                    str(root / "rec"),
                    "--output_dir",
                    str(root / "ret"),
                    *TRAINING,
                ]
            )
            == 0
        )
    return root


def damaged_copy(source: Path, target: Path, damage: dict[str, bytes | str | None]) -> Path:
    """A copy of the folder `source` with files replaced (None: removed; bytes or text: new content)."""
    shutil.copytree(source, target)
    for name, content in damage.items():
        path = target / name
        if content is None:
            path.unlink()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return target


def cut_off(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 2]


def sequences_lines(root: Path) -> list[str]:
    return (root / "rec" / "sequences.jsonl").read_text().splitlines()


def with_line(lines: list[str], number: int, text: str) -> str:
    return "\n".join(lines[: number - 1] + [text] + lines[number:]) + "\n"


# (case, command, what to damage: folder -> {file: content}, what the line must name)
CASES = [
    (
        "malformed JSON line",
        "finetune",
        {
            "rec": lambda root: {
                "sequences.jsonl": with_line(
                    sequences_lines(root), 5, '{"user_id": "u4", "items": ["DEMO00001", "DEMO00002",, "DEMO00003"]}'
                )
            }
        },
        "sequences.jsonl line 5 is not valid JSON",
    ),
    (
        "not UTF-8",
        "finetune",
        {
            "rec": lambda root: {
                "sequences.jsonl": (root / "rec" / "sequences.jsonl").read_bytes()
                + b'{"user_id": "caf\xe9", "items": []}\n'
            }
        },
        "sequences.jsonl is not UTF-8 text: byte",
    ),
    (
        "a user without items",
        "finetune",
        {
            "rec": lambda root: {
                "sequences.jsonl": with_line(sequences_lines(root), 2, '{"user_id": "u1", "item": ["DEMO00001"]}')
            }
        },
        "sequences.jsonl: record 2 has no 'items' list",
    ),
    (
        "every user has fewer than 3 items",
        "finetune",
        {
            "rec": lambda root: {
                "sequences.jsonl": "\n".join(
                    json.dumps({"user_id": f"u{u}", "items": [f"DEMO{u:05d}"]}) for u in range(5)
                )
                + "\n"
            }
        },
        "sequences.jsonl: no train sample",
    ),
    (
        "no test query survives",
        "finetune retrieval",
        {"beir": lambda root: {"qrels/test.tsv": "query-id\tcorpus-id\tscore\nq2\tNOT-A-DOC\t1\n"}},
        "qrels/test.tsv: no test query survives",
    ),
    (
        "empty queries.jsonl",
        "finetune retrieval",
        {"beir": lambda root: {"queries.jsonl": ""}},
        "queries.jsonl is empty",
    ),
    (
        "bench retrieval: no test query survives",
        "bench retrieval",
        {"beir": lambda root: {"queries.jsonl": '{"_id": "q7", "text": "nothing judged"}\n'}},
        "qrels/test.tsv: no test query survives",
    ),
    (
        "cut-off ID map",
        "finetune",
        {"idx": lambda root: {"semantic_id_map.safetensors": cut_off(root / "idx" / "semantic_id_map.safetensors")}},
        "semantic_id_map.safetensors cannot be read",
    ),
    (
        "cut-off model weights",
        "evaluate",
        {"ret": lambda root: {"model.safetensors": cut_off(root / "ret" / "model.safetensors")}},
        "model.safetensors cannot be read",
    ),
    (
        "cut-off tokenizer.json",
        "evaluate",
        {"ret": lambda root: {"tokenizer.json": cut_off(root / "ret" / "tokenizer.json")}},
        "tokenizer.json cannot be read",
    ),
    (
        "cut-off card",
        "evaluate",
        {"ret": lambda root: {"lmindexer_card.json": cut_off(root / "ret" / "lmindexer_card.json")}},
        "lmindexer_card.json cannot be read",
    ),
    (
        "cut-off id_method.json",
        "push",
        {"idx": lambda root: {"id_method.json": '{"method": "rqkm'}},
        "id_method.json cannot be read",
    ),
    (
        "cut-off quantizer_config.json",
        "diagnose",
        {
            "idx": lambda root: {
                "id_method.json": '{"method": "rqkmeans"}',
                "quantizer_config.json": '{"codebook_sizes": [8,',
                "config.json": None,
            }
        },
        "quantizer_config.json cannot be read",
    ),
    (
        "diagnose a two-stage folder",
        "diagnose",
        {"idx": lambda root: {"id_method.json": '{"method": "rqkmeans"}', "config.json": None}},
        "holds rqkmeans IDs (an ID map and its quantiser, no language model)",
    ),
    (
        "push a two-stage folder",
        "push",
        {"idx": lambda root: {"id_method.json": '{"method": "rqkmeans"}', "config.json": None}},
        "holds rqkmeans IDs (an ID map and its quantiser, no language model)",
    ),
    (
        "evaluate an indexer",
        "evaluate",
        {"ret": lambda root: {"config.json": (root / "idx" / "config.json").read_text()}},
        "is an indexer folder (model_type lmindexer), not a fine-tuned retriever",
    ),
]


def command_line(command: str, folders: dict[str, Path], tmp_path: Path) -> list[str]:
    if command == "finetune":
        return [
            "finetune",
            "--indexer",
            str(folders["idx"]),
            "--task",
            "recommendation",
            "--data",
            str(folders["rec"]),
            "--output_dir",
            str(tmp_path / "out"),
            *TRAINING,
        ]
    if command == "finetune retrieval":
        return [
            "finetune",
            "--indexer",
            str(folders["idx"]),
            "--task",
            "retrieval",
            "--data",
            str(folders["beir"]),
            "--output_dir",
            str(tmp_path / "out"),
            *TRAINING,
        ]
    if command == "bench retrieval":
        return [
            "bench",
            "retrieval",
            "--data",
            str(folders["beir"]),
            "--indexers",
            str(folders["idx"]),
            "--output",
            str(tmp_path / "bench.json"),
            "--output_dir",
            str(tmp_path / "runs"),
            "--lexical",
            "false",
            "--dense_encoder",
            "",
            *TRAINING,
        ]
    if command == "evaluate":
        return [
            "evaluate",
            "--model",
            str(folders["ret"]),
            "--task",
            "recommendation",
            "--data",
            str(folders["rec"]),
            "--num_beams",
            "6",
            "--ks",
            "1,5",
        ]
    if command == "push":
        return ["push", "--model", str(folders["idx"]), "--save_to", str(tmp_path / "pushed")]
    return [
        "diagnose",
        "--model",
        str(folders["idx"]),
        "--corpus",
        str(folders["rec"] / "items.jsonl"),
        "--output",
        str(tmp_path / "diagnosis.json"),
    ]


@pytest.mark.parametrize("case, command, damage, named", CASES, ids=[case[0] for case in CASES])
def test_bad_input_ends_with_one_line_naming_the_cause(workspace, tmp_path, capsys, case, command, damage, named):
    folders = {name: workspace / name for name in ("idx", "rec", "beir", "ret")}
    for name, make in damage.items():
        folders[name] = damaged_copy(workspace / name, tmp_path / name, make(workspace))
    capsys.readouterr()
    with one_torch_thread():
        status = main(command_line(command, folders, tmp_path))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("lmindexer ")]
    assert status == 1 and len(lines) == 1, err
    assert "Traceback" not in err and named in lines[0], lines[0]
    assert not (tmp_path / "out" / "model.safetensors").exists()  # nothing was trained


def folder_contents(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_push_save_to_never_mixes_the_repo_with_other_files(workspace, tmp_path, capsys):
    """Issue #21, item 6: a folder of the user's own is refused untouched; an earlier export is replaced whole."""
    users = tmp_path / "mine"
    users.mkdir()
    (users / "config.json").write_text('{"mine": true}')
    (users / "notes.txt").write_text("my notes")
    (users / "weights.pt").write_bytes(b"\x80\x04pickle")
    before = folder_contents(users)
    capsys.readouterr()
    assert main(["push", "--model", str(workspace / "ret"), "--save_to", str(users)]) == 1
    line = one_line(capsys)
    assert f"{users} is not empty and is not an earlier export" in line and "nothing was written" in line
    assert folder_contents(users) == before and sorted(path.name for path in tmp_path.iterdir()) == ["mine"]

    export = tmp_path / "export"
    assert main(["push", "--model", str(workspace / "ret"), "--save_to", str(export)]) == 0
    first = folder_contents(export)
    (export / "index.json").write_text('{"stale": true}')  # left from something else
    capsys.readouterr()
    assert main(["push", "--model", str(workspace / "ret"), "--save_to", str(export)]) == 0
    listed = capsys.readouterr().out.split(": ", 1)[1].strip().split(", ")
    assert sorted(listed) == sorted(folder_contents(export)) == sorted(first)  # the stale file is gone, not listed
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export", "mine"]  # no .saving or .old left


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("lmindexer ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_space_export_records_an_absolute_path_and_refuses_an_indexer(workspace, tmp_path, capsys, monkeypatch):
    """Issue #21, item 9."""
    assert main(["space", "--model", str(workspace / "idx"), "--export", str(tmp_path / "no-space")]) == 1
    assert "is an indexer (model_type lmindexer): the Space's demo runs a retriever" in one_line(capsys)
    assert not (tmp_path / "no-space").exists()
    monkeypatch.chdir(workspace)
    assert main(["space", "--model", "ret", "--export", str(tmp_path / "space")]) == 0
    assert json.loads((tmp_path / "space" / "space_config.json").read_text())["model"] == str(workspace / "ret")
    assert "runs only on this machine" in capsys.readouterr().err
    assert main(["space", "--model", "org/tiny-retriever", "--export", str(tmp_path / "hub-space")]) == 0
    assert "pin one with --revision" in capsys.readouterr().err


def test_evaluate_says_how_many_users_it_scores(workspace, tmp_path, capsys):
    """Issue #21, item 9: a map that covers 2 of 30 users scores 2, and says so."""
    data = tmp_path / "rec"
    shutil.copytree(workspace / "rec", data)
    known = [json.loads(line)["items"] for line in sequences_lines(workspace)][:2]
    unknown = [[f"NEW{u}-{k}" for k in range(4)] for u in range(28)]
    write_jsonl(
        [{"user_id": f"u{u}", "items": items} for u, items in enumerate(known + unknown)], data / "sequences.jsonl"
    )
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(workspace / "ret"),
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
    assert f"Scoring 2 of the 30 users in {data / 'sequences.jsonl'}: the other 28" in capsys.readouterr().err
