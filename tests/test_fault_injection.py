"""Fault injection: the real CLI is SIGKILLed (in a subprocess) at named points of every write, and the next run
must either complete to the map an uninterrupted run gives or refuse with a clear message; it never loads a
mixed state. The points are `lmindexer.trainers.folders.fault_points.crash_point` calls, inert unless
`LMINDEXER_KILL_AT` names one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import demo_corpus_file

from lmindexer import LMIndexerForSemanticID, SemanticIDMap
from lmindexer.trainers.data.demo import generate_demo_corpus, write_jsonl
from lmindexer.trainers.folders.fault_points import KILL_AT_ENV

pytestmark = pytest.mark.slow

TINY = [
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
    "--use_cpu",
    "true",
    "--max_length",
    "32",
    "--kmeans_iterations",
    "5",
    "--label_field",
    "category",
    "--save_strategy",
    "steps",
    "--save_steps",
    "2",
    "--seed",
    "7",
]


def lmindexer(*args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop(KILL_AT_ENV, None)
    if kill_at:
        env[KILL_AT_ENV] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "lmindexer.trainers.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )


def load_map(folder):
    return SemanticIDMap.load(folder / "semantic_id_map.safetensors")


def index_completes(corpus, folder, *extra: str):
    result = lmindexer("index", "--corpus", str(corpus), "--output_dir", str(folder), *TINY, *extra)
    assert result.returncode == 0, result.stderr[-2000:]
    return folder


def assert_killed(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return demo_corpus_file(tmp_path_factory, 48, seed=4)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The uninterrupted run every interrupted one must end at."""
    return index_completes(corpus, tmp_path_factory.mktemp("reference") / "run")


@pytest.mark.parametrize("point", ["trainer_checkpoint.after_weights", "stage_checkpoint.between_renames"])
def test_killed_during_training_resumes_to_the_uninterrupted_map(point, corpus, reference, tmp_path):
    folder = tmp_path / "run"
    assert_killed(lmindexer("index", "--corpus", str(corpus), "--output_dir", str(folder), *TINY, kill_at=point))
    index_completes(corpus, folder, "--resume", "true")
    assert load_map(folder) == load_map(reference)


@pytest.mark.parametrize("point", ["final_save.staged", "final_save.between_renames"])
def test_killed_during_the_final_save_never_leaves_a_mixed_folder(point, corpus, reference, tmp_path):
    folder = tmp_path / "run"
    index_completes(corpus, folder, "--seed", "3")  # a complete earlier run with another seed
    previous = load_map(folder)
    assert previous != load_map(reference)
    assert_killed(lmindexer("index", "--corpus", str(corpus), "--output_dir", str(folder), *TINY, kill_at=point))
    if (folder / "config.json").exists():  # killed before the swap: the previous complete model, map and all
        model = LMIndexerForSemanticID.from_pretrained(folder)  # refuses a map of another run
        assert model.id_map == previous
    else:  # killed between the renames: loading names the leftover instead of loading half a model
        with pytest.raises(Exception, match=r"\.old"):
            LMIndexerForSemanticID.from_pretrained(folder)
    index_completes(corpus, folder, "--resume", "true")
    assert load_map(folder) == load_map(reference)
    assert LMIndexerForSemanticID.from_pretrained(folder).id_map == load_map(reference)


def test_killed_while_assign_holds_the_map_keeps_it_and_frees_the_lock(reference, tmp_path):
    uninterrupted, killed = tmp_path / "a", tmp_path / "b"
    shutil.copytree(reference, uninterrupted)
    shutil.copytree(reference, killed)
    new = write_jsonl(
        [dict(item, item_id=f"NEW{index}") for index, item in enumerate(generate_demo_corpus(6, seed=8))],
        tmp_path / "new.jsonl",
    )
    assert lmindexer("assign", "--model", str(uninterrupted), "--corpus", str(new)).returncode == 0
    assert_killed(lmindexer("assign", "--model", str(killed), "--corpus", str(new), kill_at="assign.map_write"))
    assert load_map(killed) == load_map(reference)  # the map on disk is the last complete one
    again = lmindexer("assign", "--model", str(killed), "--corpus", str(new), "--lock_timeout", "5")
    assert again.returncode == 0, again.stderr[-2000:]  # the dead process's lock was released by the OS
    assert load_map(killed) == load_map(uninterrupted)
