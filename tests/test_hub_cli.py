"""`lmindexer index --push_to_hub` and `lmindexer push`: the indexer's card and what reaches the Hub, offline."""

import json
import re

import pytest
from test_cli import SMALL

from lmindexer.hub_cards import LMIndexerCardData
from lmindexer.trainers.cli import main
from lmindexer.trainers.data.demo import generate_demo_corpus, write_jsonl

STAGES = [
    "reconstructor_warmup",
    "encoder_warmup_t1",
    "kmeans_t1",
    "codebook_t1",
    "encoder_warmup_t2",
    "kmeans_t2",
    "codebook_t2",
]


@pytest.fixture
def pushed_indexer(tmp_path, fake_hub):
    corpus = write_jsonl(generate_demo_corpus(96, seed=2), tmp_path / "items.jsonl")
    output = tmp_path / "indexer"
    arguments = [
        "index",
        "--corpus",
        str(corpus),
        "--output_dir",
        str(output),
        "--label_field",
        "category",
        "--push_to_hub",
        "true",
        "--hub_model_id",
        "org/demo-indexer",
        "--hub_private_repo",
        "true",
        "--reconstructor_warmup_learning_rate",
        "0.002",
        "--codebook_epochs",
        "2",
        *SMALL,
    ]
    assert main(arguments) == 0
    return output, fake_hub


def test_index_pushes_once_with_a_card_of_every_stage(pushed_indexer):
    output, hub = pushed_indexer
    assert [repo["repo_id"] for repo in hub.repos] == ["org/demo-indexer"]  # stages never create or push repos
    assert hub.repos[0]["private"] is True
    assert len(hub.commits) == 1 and hub.commits[0]["commit_message"] == "LMIndexer: trained indexer"
    paths = set(hub.commits[0]["paths"])
    assert {
        "semantic_id_map.safetensors",
        "README.md",
        "assets/label_distribution.png",
        "assets/codebook_usage.png",
        "tokenizer.json",
        "model.safetensors",
        "modeling_lmindexer.py",
        "lmindexer_card.json",
    } <= paths
    assert "modeling_retrieval.py" not in paths  # an indexer repo carries only the indexer's code

    card = (hub.commits[0]["folder"] / "README.md").read_text()
    assert card == (output / "README.md").read_text()  # the local folder holds the same card
    metrics = json.loads((output / "indexer_metrics.json").read_text())
    card_data = LMIndexerCardData.load(output)
    assert list(card_data.stage_hyperparameters) == STAGES
    rows = re.findall(r"^- \*\*(\w+)\*\*: (.*)$", card, flags=re.MULTILINE)
    assert [stage for stage, _ in rows] == STAGES
    described = dict(rows)
    assert described["reconstructor_warmup"].startswith("epochs 1; learning rate 0.002; per device batch size 16")
    assert described["codebook_t2"].startswith("epochs 2; learning rate 0.001")
    assert described["kmeans_t1"].startswith(
        "seed 44; geometry cosine; iterations 5; method faiss k-means"
    )  # seed + stage index
    # Table rows and model-index values come from the final ID map, computed by the pipeline.
    statistics = metrics["id_map"]
    assert f"| 1 | 4 | {statistics['utilisation'][0]:.3f} | {statistics['perplexity'][0]:.1f} |" in card
    assert f"Collision rate before dedup: {statistics['collision_rate']:.3f}" in card
    results = card_data.to_dict()["model-index"][0]["results"][0]
    assert results["dataset"]["split"] == "train"
    assert {m["type"]: m["value"] for m in results["metrics"]}["ami_t1"] == pytest.approx(metrics["final"]["ami_t1"])
    table = card_data.label_distribution
    assert sum(map(sum, table["counts"])) == 96  # every document of the 4 first codes, every label column


def test_push_command_republishes_a_trained_folder(pushed_indexer, tmp_path, capsys):
    output, hub = pushed_indexer
    assert (
        main(
            [
                "push",
                "--model",
                str(output),
                "--repo_id",
                "org/other",
                "--revision",
                "dev",
                "--dataset",
                "org/demo-data",
                "--license",
                "mit",
                "--token",
                "hf_cli",
            ]
        )
        == 0
    )
    commit = hub.commits[-1]
    assert (commit["repo_id"], commit["revision"]) == ("org/other", "dev")
    assert hub.branches[-1] == {"repo_id": "org/other", "branch": "dev", "exist_ok": True}
    assert hub.repos[-1]["token"] == "hf_cli"
    card = (commit["folder"] / "README.md").read_text()
    assert "license: mit" in card and "- org/demo-data" in card and 'repo = "org/other"' in card
    # The stage table survives: it came from lmindexer_card.json, not from a rerun.
    assert "- **codebook_t2**: epochs 2" in card

    saved = tmp_path / "saved"
    assert main(["push", "--model", str(output), "--save_to", str(saved)]) == 0
    assert (saved / "README.md").is_file() and (saved / "semantic_id_map.safetensors").is_file()
    capsys.readouterr()
    assert main(["push", "--model", str(output)]) == 1
    assert "--repo_id" in capsys.readouterr().err
    assert main(["push", "--model", str(tmp_path / "missing"), "--repo_id", "org/x"]) == 1
    assert "folder of a trained indexer" in capsys.readouterr().err


def test_a_published_indexer_is_a_starting_point_by_repo_id(pushed_indexer, tmp_path):
    """`from_indexer("org/demo-indexer")` (what `lmindexer finetune --indexer REPO` does) reads weights, tokenizer and
    ID map from the Hub cache, here filled with exactly the files that were pushed."""
    import os
    import shutil
    import subprocess
    import sys

    output, hub = pushed_indexer
    sha = "89abcdef" * 5
    repo_cache = tmp_path / "cache" / "models--org--demo-indexer"
    shutil.copytree(hub.commits[0]["folder"], repo_cache / "snapshots" / sha)
    (repo_cache / "refs").mkdir()
    (repo_cache / "refs" / "main").write_text(sha)
    script = (
        "import json\nfrom lmindexer import LMIndexerForGenerativeRetrieval\n"
        "model = LMIndexerForGenerativeRetrieval.from_indexer('org/demo-indexer')\n"
        "print(json.dumps({'documents': len(model.id_map), 'first': list(model.id_map.semantic_ids[0].tolist())}))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    from lmindexer import SemanticIDMap

    local = SemanticIDMap.load(output / "semantic_id_map.safetensors")
    assert loaded == {"documents": len(local), "first": local.semantic_ids[0].tolist()}
