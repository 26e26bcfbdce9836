"""Hub publishing, offline: what would be uploaded, that it loads back without the package, the model card
(matched whole against a pattern), card data, Trainer pushes, and the `generative-retrieval` pipeline.

Long on purpose: one file per public surface (publishing), so that its offline fake Hub and fixtures serve every
case.
"""

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import build_tiny_retriever
from test_remote_code import LOADER, REPO_ROOT

from lmindexer.hub_cards import (
    HubUnreachableError,
    LMIndexerCardData,
    check_publishable,
    label_distribution_table,
    push_model_to_hub,
    save_for_hub,
    write_model_card,
)
from lmindexer.hub_cards.publishing import is_unreachable

MODEL_CODE = {p.name for p in (REPO_ROOT / "modeling_lmindexer").glob("*.py")} - {"__init__.py"}
# Runs with every import of this project blocked and the repo off sys.path (see test_remote_code).
BLOCKED_PREAMBLE = LOADER.split("import torch")[0]
HUB_LOADER = (
    BLOCKED_PREAMBLE
    + """
import json, sys
from transformers import AutoModel, AutoTokenizer, pipeline
folder = sys.argv[1]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
direct = model.retrieve(["gentle cleanser", "lip balm"], tokenizer=tokenizer, top_k=4, num_beams=6)
retriever = pipeline("generative-retrieval", model=folder, trust_remote_code=True)
piped = retriever(["gentle cleanser", "lip balm"], top_k=4, num_beams=6, batch_size=2)
single = retriever("gentle cleanser", top_k=4, num_beams=6)
print(json.dumps({"direct": direct, "piped": piped, "single": single, "pipeline": type(retriever).__module__,
                  "imported_project": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}))
"""
)


def run_without_package(script: str, args: list[str], tmp_path: Path, **env_overrides) -> dict:
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="", **env_overrides
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def as_lists(results):
    return [[dict(hit, semantic_id=list(hit["semantic_id"])) for hit in ranked] for ranked in results]


@pytest.fixture
def retriever(demo_items, demo_tokenizer):
    return build_tiny_retriever(demo_items, demo_tokenizer)


# ------------------------------------------------------------------------------------------ publishing
def test_push_to_hub_uploads_one_complete_commit_that_loads_without_the_package(retriever, fake_hub, tmp_path):
    model, tokenizer = retriever
    commit = model.push_to_hub(
        "org/tiny-retriever",
        tokenizer=tokenizer,
        private=True,
        token="hf_test",
        revision="v1",
        commit_message="first release",
    )

    assert fake_hub.repos == [
        {
            "repo_id": "org/tiny-retriever",
            "private": True,
            "exist_ok": True,
            "repo_type": "model",
            "space_sdk": None,
            "token": "hf_test",
        }
    ]
    assert fake_hub.branches == [{"repo_id": "org/tiny-retriever", "branch": "v1", "exist_ok": True}]
    assert len(fake_hub.commits) == 1
    pushed = fake_hub.commits[0]
    assert (pushed["revision"], pushed["create_pr"], pushed["commit_message"]) == ("v1", False, "first release")
    assert commit.oid == "0" * 39 + "1"
    expected = {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "semantic_id_map.safetensors",
        "README.md",
        "lmindexer_card.json",
        "assets/codebook_usage.png",
        "assets/prefix_density.png",
        *MODEL_CODE,
    }
    assert set(pushed["paths"]) == expected
    # The remote code is exactly the model files: no trainers, cards or demo code.
    assert {p for p in pushed["paths"] if p.endswith(".py")} == MODEL_CODE

    folder = pushed["folder"]
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_retrieval.LMIndexerForGenerativeRetrieval"
    assert (
        config["custom_pipelines"]["generative-retrieval"]["impl"]
        == "pipeline_generative_retrieval.GenerativeRetrievalPipeline"
    )
    assert "trust_remote_code" not in json.dumps(config["backbone_config"])

    expected_results = as_lists(
        model.retrieve(["gentle cleanser", "lip balm"], tokenizer=tokenizer, top_k=4, num_beams=6)
    )
    remote = run_without_package(HUB_LOADER, [str(folder)], tmp_path)
    assert remote["imported_project"] == []
    assert remote["pipeline"].startswith("transformers_modules.")
    for key in ("direct", "piped"):
        assert [[hit["doc_id"] for hit in ranked] for ranked in remote[key]] == [
            [hit["doc_id"] for hit in ranked] for ranked in expected_results
        ]
        for got, want in zip(remote[key], expected_results):
            assert [hit["semantic_id"] for hit in got] == [hit["semantic_id"] for hit in want]
            assert [hit["title"] for hit in got] == [hit["title"] for hit in want]
            assert all(abs(a["score"] - b["score"]) < 1e-4 for a, b in zip(got, want))
    assert [hit["doc_id"] for hit in remote["single"]] == [hit["doc_id"] for hit in expected_results[0]]


def test_push_as_pull_request_and_repo_folder_checks(retriever, fake_hub, tmp_path):
    model, tokenizer = retriever
    commit = push_model_to_hub(model, "org/tiny", tokenizer=tokenizer, create_pr=True, revision="main")
    assert fake_hub.branches == []  # a PR targets an existing branch; nothing is created
    assert fake_hub.commits[0]["create_pr"] is True and commit.pr_url.endswith("/discussions/1")

    with pytest.raises(ValueError, match="No tokenizer to publish"):
        save_for_hub(model, tmp_path / "no-tokenizer")
    folder = tmp_path / "complete"
    written = save_for_hub(model, folder, tokenizer=tokenizer, repo_id="org/tiny")
    assert "semantic_id_map.safetensors" in written and "README.md" in written
    (folder / "training_args.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError, match=r"pickle-based files \['training_args.bin'\]"):
        check_publishable(folder)
    (folder / "training_args.bin").unlink()
    (folder / "semantic_id_map.safetensors").unlink()
    with pytest.raises(ValueError, match="missing.*semantic_id_map.safetensors"):
        check_publishable(folder)


def test_indexer_without_map_is_refused(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="has no ID map"):
        save_for_hub(tiny_model, tmp_path / "indexer")


def test_offline_push_fails_with_a_clear_error(retriever, tmp_path):
    model, tokenizer = retriever
    folder = tmp_path / "repo"
    save_for_hub(model, folder, tokenizer=tokenizer)
    script = (
        "import sys\nfrom lmindexer.hub_cards import upload_to_hub, HubUnreachableError\n"
        "try:\n    upload_to_hub(sys.argv[1], 'org/x', commit_message='m', token='hf_test')\n"
        "except HubUnreachableError as error:\n    print('OFFLINE:', error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "OFFLINE: Cannot reach the Hub to publish org/x" in result.stdout
    assert "Nothing was uploaded" in result.stdout

    class ConnectError(Exception):  # httpx-style transport errors are recognised by name
        pass

    assert is_unreachable(ConnectError()) and is_unreachable(TimeoutError()) and not is_unreachable(ValueError())
    assert issubclass(HubUnreachableError, ConnectionError)


# ------------------------------------------------------------------------------------------ model card
def card_pattern(skeleton: str) -> str:
    """A regex from an expected card: literal text, with `{ANY}` (one line's rest) and `{NUM}` placeholders."""
    parts = re.split(r"(\{ANY\}|\{NUM\})", skeleton)
    mapping = {"{ANY}": r"[^\n]*", "{NUM}": r"-?[0-9][0-9.e+-]*"}
    return "".join(mapping.get(part, re.escape(part)) for part in parts)


CARD_SKELETON = """---
language: en
license: apache-2.0
library_name: transformers
tags:
- lmindexer
- semantic-ids
- generative-retrieval
- custom_code
base_model: org/lmindexer-demo-indexer
datasets:
- demo-catalogue
model-index:
- name: org/tiny-retriever
  results:
  - task:
      type: generative-retrieval
      name: Sequential recommendation
    dataset:
      name: demo-catalogue
      type: demo-catalogue
      split: test
    metrics:
    - type: recall@5
      value: 0.25
      name: recall@5
    - type: ndcg@5
      value: 0.125
      name: ndcg@5
---

# tiny-retriever

A generative sequential recommendation model built with [lmindexer](https://pypi.org/project/lmindexer/): it reads a user's history of item titles (an encoder-decoder) and generates the **semantic ID** of a document, decoding under a prefix trie so that only IDs of real documents come out. The ID map (120 documents) and the trie travel with the weights.

## Usage

This repository runs its own model code, so loading needs `trust_remote_code=True`. **Pin `revision` to a commit you have read**: without it, a later push to this repository changes the code you run.

```python
from transformers import AutoModel, AutoTokenizer

repo = "org/tiny-retriever"
revision = "main"  # replace with a commit SHA of this repository
model = AutoModel.from_pretrained(repo, trust_remote_code=True, revision=revision)
tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True, revision=revision)

query = model.render_history({ANY})  # the user's items, oldest first, rendered as in training
results = model.retrieve([query], tokenizer=tokenizer, top_k=10)
for hit in results[0]:
    print(hit["doc_id"], hit["semantic_id"], round(hit["score"], 3), hit.get("title"))
```

The same through a `transformers` pipeline:

```python
from transformers import pipeline

retriever = pipeline("generative-retrieval", model="org/tiny-retriever", trust_remote_code=True, revision=revision)
retriever(query, top_k=5)
```

## Model details

| | |
|:--|:--|
| Model type | LMIndexerForGenerativeRetrieval |
| Base model | org/lmindexer-demo-indexer |
| Backbone | t5 ({NUM}M parameters) |
| Semantic ID | 2 learned codes + 1 dedup position |
| Codebook sizes | 3, 4 |
| Dedup position size | 16 |
| Code geometry | cosine |
| Documents in the ID map | 120 |
| Training data | demo-catalogue |
| lmindexer version | {NUM} |

## Semantic IDs

| Position | Codebook size | Utilisation | Perplexity |
|:--|--:|--:|--:|
| 1 | 3 | 1.000 | 3.0 |
| 2 | 4 | 1.000 | 4.0 |

- Distinct learned IDs: 12 for 120 documents (10.00 per ID on average, at most 10).
- Collision rate before dedup: 1.000 (share of documents whose learned codes are shared with another document; the dedup position tells them apart).

![Codebook usage](assets/codebook_usage.png)

*Documents per code at each learned position, codes sorted by use.*

![Documents per ID prefix](assets/prefix_density.png)

*How many documents share each ID prefix, for every prefix length.*

![Labels per first code](assets/label_distribution.png)

*Share of each category among the documents of the most populated first codes.*


## Training

- **fine-tuning**: epochs 3; learning rate 0.001; per device batch size 32; optimizer adamw_torch; final training loss 1.25; steps 40


## Evaluation

**demo-catalogue** (test)

| Metric | Value |
|:--|--:|
| recall@5 | 0.2500 |
| ndcg@5 | 0.1250 |


## Framework versions

- lmindexer: {NUM}
- transformers: {ANY}
- torch: {ANY}
- huggingface_hub: {ANY}

## Citation

LMIndexer is described in *Language Models As Semantic Indexers* (Jin et al., ICML 2024).
"""


def demo_card_data(items) -> LMIndexerCardData:
    codes = [i % 3 for i in range(len(items))]
    card_data = LMIndexerCardData(
        model_id="org/tiny-retriever",
        language="en",
        license="apache-2.0",
        base_model="org/lmindexer-demo-indexer",
        datasets=["demo-catalogue"],
        task="recommendation",
        label_field="category",
        label_distribution=label_distribution_table(codes, [item["category"] for item in items]),
    )
    card_data.record_stage(
        "fine-tuning",
        {"learning_rate": 1e-3, "epochs": 3.0, "per_device_batch_size": 32, "optimizer": "adamw_torch"},
        {"final_training_loss": 1.25, "steps": 40},
    )
    card_data.add_evaluation("demo-catalogue", "test", {"recall@5": 0.25, "ndcg@5": 0.125})
    return card_data


def test_model_card_matches_the_whole_pattern(retriever, demo_items, tmp_path):
    model, tokenizer = retriever
    card = write_model_card(model, tmp_path, demo_card_data(demo_items))
    text = (tmp_path / "README.md").read_text()
    assert str(card) == text
    assert re.fullmatch(card_pattern(CARD_SKELETON.rstrip("\n")), text), text
    for plot in ("codebook_usage", "prefix_density", "label_distribution"):
        assert (tmp_path / "assets" / f"{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert card.data.to_dict()["model-index"][0]["results"][0]["metrics"][0] == {
        "type": "recall@5",
        "value": 0.25,
        "name": "recall@5",
    }


def test_card_data_round_trip_and_validation(demo_items, tmp_path):
    card_data = demo_card_data(demo_items)
    card_data.save(tmp_path)
    assert LMIndexerCardData.load(tmp_path) == card_data
    assert LMIndexerCardData.load(tmp_path / "elsewhere") is None
    (tmp_path / "lmindexer_card.json").write_text(json.dumps({**card_data.body_fields(), "colour": "red"}))
    with pytest.raises(ValueError, match=r"does not know: \['colour'\]"):
        LMIndexerCardData.load(tmp_path)
    with pytest.raises(ValueError, match="`task` must be one of"):
        LMIndexerCardData(task="ranking")
    with pytest.raises(ValueError, match="is 'high', not a number"):
        card_data.add_evaluation("x", "test", {"recall@5": "high"})
    card_data.add_evaluation("demo-catalogue", "test", {"recall@5": 0.5})  # replaces, never duplicates
    # Hub metadata holds repo ids only; a local base model path and a corpus file name stay in the body.
    local = LMIndexerCardData(base_model="/tmp/runs/indexer", datasets=["amazon-beauty", "my items.jsonl"])
    assert "base_model" not in local.to_dict() and local.to_dict()["datasets"] == ["amazon-beauty"]
    assert [e["metrics"] for e in card_data.eval_results] == [{"recall@5": 0.5}]


def test_label_distribution_table_counts_by_hand():
    import random

    rng = random.Random(3)
    codes = [rng.randrange(6) for _ in range(500)]
    labels = [rng.choice("abcdefghij") for _ in range(500)]
    table = label_distribution_table(codes, labels, max_codes=4, max_labels=3)
    top_codes = [code for code, _ in Counter(codes).most_common(4)]
    top_labels = [label for label, _ in Counter(labels).most_common(3)]
    assert table["codes"] == top_codes and table["labels"] == [*top_labels, "other"]
    for row, code in enumerate(top_codes):
        mine = [label for c, label in zip(codes, labels) if c == code]
        expected = [sum(label == wanted for label in mine) for wanted in top_labels]
        assert table["counts"][row] == [*expected, len(mine) - sum(expected)]
    with pytest.raises(ValueError, match="3 first codes but 2 labels"):
        label_distribution_table([0, 1, 2], ["a", "b"])


# -------------------------------------------------------------------------------------- the pipeline task
def test_generative_retrieval_pipeline_in_process(retriever):
    from transformers import pipeline

    model, tokenizer = retriever
    retrieve = pipeline("generative-retrieval", model=model, tokenizer=tokenizer)
    queries = ["gentle cleanser", "matte lipstick", "hair spray strong hold"]
    expected = model.retrieve(queries, tokenizer=tokenizer, top_k=5, num_beams=8)
    got = retrieve(queries, top_k=5, num_beams=8, batch_size=2)
    assert [[h["doc_id"] for h in ranked] for ranked in got] == [[h["doc_id"] for h in ranked] for ranked in expected]
    assert all(set(hit) == {"doc_id", "semantic_id", "score", "title"} for ranked in got for hit in ranked)
    assert all(model.id_map.semantic_id(hit["doc_id"]) == hit["semantic_id"] for ranked in got for hit in ranked)
    assert [h["doc_id"] for h in retrieve("gentle cleanser", top_k=5, num_beams=8)] == [
        h["doc_id"] for h in expected[0]
    ]
    with pytest.raises(ValueError, match="cannot exceed `num_beams`"):
        retrieve("gentle cleanser", top_k=9, num_beams=8)
    with pytest.raises(ValueError, match="non-empty string"):
        retrieve("   ")


# -------------------------------------------------------------------------------------- trainer pushes
def test_trainer_pushes_checkpoints_with_map_code_and_card(retriever, demo_items, fake_hub, tmp_path):
    import datasets

    from lmindexer.trainers.downstream.collators import RetrievalCollator
    from lmindexer.trainers.downstream.retrieval_trainer import GenerativeRetrievalTrainer, RetrievalTrainingArguments

    model, tokenizer = retriever
    rows = [
        {"input_text": item["title"], "target_doc_id": item["item_id"], "relevant": json.dumps({item["item_id"]: 1})}
        for item in demo_items[:16]
    ]
    args = RetrievalTrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=4,
        per_device_train_batch_size=8,
        save_strategy="steps",
        save_steps=2,
        push_to_hub=True,
        hub_model_id="org/ft",
        hub_private_repo=True,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        eval_num_beams=4,
        eval_ks="1,3",
    )
    card_data = LMIndexerCardData(task="recommendation", datasets=["demo-catalogue"], base_model="org/indexer")
    data = datasets.Dataset.from_list(rows)
    trainer = GenerativeRetrievalTrainer(
        model=model,
        args=args,
        train_dataset=data,
        eval_dataset=data,
        card_data=card_data,
        data_collator=RetrievalCollator(tokenizer, model, 32),
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.evaluate()
    trainer.push_to_hub()

    assert fake_hub.repos[0]["repo_id"] == "org/ft" and fake_hub.repos[0]["private"] is True
    checkpoint_pushes = [c for c in fake_hub.commits if c["commit_message"].startswith("Training in progress")]
    assert [c["commit_message"] for c in checkpoint_pushes] == [
        "Training in progress, step 2",
        "Training in progress, step 4",
    ]
    final = fake_hub.commits[-1]
    assert final["commit_message"] == "End of training"
    for pushed in [*checkpoint_pushes, final]:
        paths = set(pushed["paths"])
        assert {
            "semantic_id_map.safetensors",
            "README.md",
            "modeling_retrieval.py",
            "pipeline_generative_retrieval.py",
            "tokenizer.json",
            "model.safetensors",
            "config.json",
        } <= paths
        assert not [p for p in paths if p.endswith((".bin", ".pt", ".pth")) or p.startswith("checkpoint-")]
    card = (final["folder"] / "README.md").read_text()
    assert "- **fine-tuning**: max steps 4; learning rate 0.001; per device batch size 8" in card
    assert "**demo-catalogue** (validation)" in card and "| recall@1 |" in card
    assert (Path(args.output_dir) / "checkpoint-4" / "training_args.json").is_file()
    assert not list(Path(args.output_dir).rglob("training_args.bin"))


CACHE_LOADER = (
    BLOCKED_PREAMBLE
    + """
import json, sys
from transformers import AutoModel, AutoTokenizer
repo, revision = sys.argv[1], sys.argv[2]
try:
    model = AutoModel.from_pretrained(repo, trust_remote_code=True, revision=revision).eval()
except OSError as error:
    print(json.dumps({"error": str(error)}))
    raise SystemExit(0)
tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True, revision=revision)
print(json.dumps({"results": model.retrieve(["gentle cleanser"], tokenizer=tokenizer, top_k=4, num_beams=6)}))
"""
)


def test_pinned_revision_loads_offline_from_the_hub_cache_and_a_missing_map_is_an_error(retriever, tmp_path):
    model, tokenizer = retriever
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo_cache = tmp_path / "cache" / "models--org--tiny"
    save_for_hub(model, repo_cache / "snapshots" / sha, tokenizer=tokenizer, repo_id="org/tiny")
    (repo_cache / "refs").mkdir()
    (repo_cache / "refs" / "main").write_text(sha)
    cache = {"HF_HUB_CACHE": str(tmp_path / "cache")}

    expected = as_lists(model.retrieve(["gentle cleanser"], tokenizer=tokenizer, top_k=4, num_beams=6))
    remote = run_without_package(CACHE_LOADER, ["org/tiny", sha], tmp_path, **cache)
    assert [h["doc_id"] for h in remote["results"][0]] == [h["doc_id"] for h in expected[0]]

    (repo_cache / "snapshots" / sha / "semantic_id_map.safetensors").unlink()
    refused = run_without_package(CACHE_LOADER, ["org/tiny", sha], tmp_path, **cache)
    assert "semantic_id_map.safetensors of org/tiny is not in the local cache" in refused["error"]


def test_no_code_path_unpickles():
    """safetensors and JSON only: no module of the package calls an unpickling loader."""
    offenders = []
    for folder in ("modeling_lmindexer", "trainers", "hub_cards"):
        for source in (REPO_ROOT / folder).rglob("*.py"):
            text = source.read_text()
            for needle in ("torch.load(", "pickle.load", "allow_pickle=True", "joblib.load", "dill.load"):
                if needle in text:
                    offenders.append(f"{source.relative_to(REPO_ROOT)}: {needle}")
    assert offenders == []


@pytest.mark.cuda
def test_pushed_retriever_on_cuda_matches_cpu(retriever, fake_hub, cuda_device):
    from transformers import AutoModel

    model, tokenizer = retriever
    model.push_to_hub("org/tiny-cuda", tokenizer=tokenizer)
    loaded = AutoModel.from_pretrained(fake_hub.commits[0]["folder"]).eval().to(cuda_device)
    queries = ["gentle cleanser", "lip balm", "hair spray"]
    on_gpu = loaded.retrieve(queries, tokenizer=tokenizer, top_k=5, num_beams=8)
    on_cpu = model.retrieve(queries, tokenizer=tokenizer, top_k=5, num_beams=8)
    assert [[h["doc_id"] for h in r] for r in on_gpu] == [[h["doc_id"] for h in r] for r in on_cpu]


def test_save_pretrained_writes_the_card_when_there_is_a_map(retriever, tiny_model, tmp_path):
    model, tokenizer = retriever
    model.card_data = LMIndexerCardData(task="retrieval", model_id="org/tiny", datasets=["demo-catalogue"])
    model.save_pretrained(tmp_path / "with-card")
    card = (tmp_path / "with-card" / "README.md").read_text()
    assert 'repo = "org/tiny"' in card and "| Training data | demo-catalogue |" in card
    assert (tmp_path / "with-card" / "assets" / "prefix_density.png").is_file()
    assert LMIndexerCardData.load(tmp_path / "with-card") == model.card_data
    model.save_pretrained(tmp_path / "no-card", model_card=False)
    assert not (tmp_path / "no-card" / "README.md").exists()
    tiny_model.save_pretrained(tmp_path / "indexer")  # no ID map yet: nothing to describe
    assert not (tmp_path / "indexer" / "README.md").exists()


def test_a_model_loaded_from_the_hub_cache_republishes_with_its_tokenizer_and_card(retriever, demo_items, tmp_path):
    """Forking a published model: tokenizer and card data come from the cached repo, not from arguments."""
    model, tokenizer = retriever
    sha = "fedcba9876543210" * 2 + "fedcba98"
    repo_cache = tmp_path / "cache" / "models--org--tiny"
    save_for_hub(
        model,
        repo_cache / "snapshots" / sha,
        tokenizer=tokenizer,
        card_data=demo_card_data(demo_items),
        repo_id="org/tiny",
    )
    (repo_cache / "refs").mkdir()
    (repo_cache / "refs" / "main").write_text(sha)
    script = (
        "import json, sys\nimport lmindexer\nfrom transformers import AutoModel\n"
        "from lmindexer.hub_cards import save_for_hub\n"
        f"model = AutoModel.from_pretrained('org/tiny', revision='{sha}')\n"
        "written = save_for_hub(model, sys.argv[1], repo_id='me/fork')\n"
        "print(json.dumps(written))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "cache"))
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "fork")], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tokenizer.json" in json.loads(result.stdout.strip().splitlines()[-1])
    card = (tmp_path / "fork" / "README.md").read_text()
    assert (
        'repo = "me/fork"' in card and "**demo-catalogue** (test)" in card and "assets/label_distribution.png" in card
    )
