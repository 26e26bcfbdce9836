"""The saved folder loads through `trust_remote_code` in a process where lmindexer cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import random_batch

REPO_ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter: any import of this project's packages fails, and the repo is off sys.path.
LOADER = textwrap.dedent(
    """
    import importlib.abc, json, sys
    BLOCKED = {"lmindexer", "modeling_lmindexer", "trainers", "hub_cards"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, Block())
    sys.path = [p for p in sys.path if p not in ("", REPO_ROOT)]
    import torch
    from transformers import AutoModel
    folder, trust = sys.argv[1], sys.argv[2] == "trust"
    try:
        model = AutoModel.from_pretrained(folder, trust_remote_code=trust)
    except ValueError as error:
        print(json.dumps({"error": str(error)}))
        raise SystemExit(0)
    batch = json.loads(open(folder + "/batch.json").read())
    codes = model.eval().assign_codes(torch.tensor(batch["input_ids"]), torch.tensor(batch["attention_mask"]))
    print(json.dumps({
        "codes": codes.tolist(),
        "module": type(model).__module__,
        "codebook": model.codebooks.tables[0].weight.sum().item(),
        "imported_project": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
    }))
    """
).replace("REPO_ROOT", repr(str(REPO_ROOT)))


def run_loader(folder: Path, trust: bool, tmp_path: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(folder), "trust" if trust else "no"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_remote_code_path_without_the_package(tiny_model, tmp_path):
    folder = tmp_path / "checkpoint"
    tiny_model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_lmindexer.LMIndexerConfig",
        "AutoModel": "modeling_lmindexer.LMIndexerForSemanticID",
    }
    copied = {p.name for p in folder.glob("*.py")}
    assert copied == {
        "configuration_lmindexer.py",
        "modeling_lmindexer.py",
        "reconstructor.py",
        "losses.py",
        "semantic_id_map.py",
        "atomic_writes.py",
    }
    for source in folder.glob("*.py"):  # Hub code imports only torch, transformers, stdlib and siblings
        for line in source.read_text().splitlines():
            if line.startswith(("import ", "from ")) and not line.startswith("from ."):
                root = line.split()[1].split(".")[0]
                assert root in {"torch", "transformers", *sys.stdlib_module_names}, line

    input_ids, attention_mask = random_batch(batch_size=3, seed=11)
    (folder / "batch.json").write_text(
        json.dumps({"input_ids": input_ids.tolist(), "attention_mask": attention_mask.tolist()})
    )
    expected = tiny_model.eval().assign_codes(input_ids, attention_mask).tolist()

    remote = run_loader(folder, trust=True, tmp_path=tmp_path)
    assert remote["codes"] == expected
    assert remote["imported_project"] == []
    assert remote["module"].startswith("transformers_modules.")
    assert abs(remote["codebook"] - tiny_model.codebooks.tables[0].weight.sum().item()) < 1e-4

    refused = run_loader(folder, trust=False, tmp_path=tmp_path)
    assert "trust_remote_code=True" in refused["error"]


def test_id_map_module_is_hub_safe():
    source = (REPO_ROOT / "modeling_lmindexer" / "semantic_id_map.py").read_text()
    roots = {
        line.split()[1].split(".")[0]
        for line in source.splitlines()
        if line.startswith(("import ", "from ")) and not line.startswith("from .")
    }
    assert roots <= {"__future__", "json", "math", "os", "tempfile", "collections", "pathlib", "torch", "transformers"}
    assert "pickle" not in source and "torch.load" not in source


RETRIEVAL_LOADER = LOADER.split("batch = json.loads")[0] + textwrap.dedent(
    """
    from transformers import AutoTokenizer
    results = model.eval().retrieve(["gentle cleanser"], tokenizer=AutoTokenizer.from_pretrained(folder, trust_remote_code=True), top_k=3, num_beams=6)
    print(json.dumps({"results": results, "module": type(model).__module__,
                      "imported_project": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}))
    """
).replace("\n    ", "\n")


def test_retrieval_model_through_remote_code(tmp_path, demo_items, demo_tokenizer):
    from conftest import build_tiny_retriever

    model, tokenizer = build_tiny_retriever(demo_items, demo_tokenizer)
    folder = tmp_path / "retriever"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert {p.name for p in folder.glob("*.py")} == {
        "configuration_lmindexer.py",
        "modeling_lmindexer.py",
        "modeling_retrieval.py",
        "reconstructor.py",
        "losses.py",
        "semantic_id_map.py",
        "trie.py",
        "pipeline_generative_retrieval.py",
        "causal_decoding.py",
        "history.py",
        "id_tokens.py",
        "atomic_writes.py",
    }
    expected = model.retrieve(["gentle cleanser"], tokenizer=tokenizer, top_k=3, num_beams=6)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", RETRIEVAL_LOADER, str(folder), "trust"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["imported_project"] == [] and remote["module"].startswith("transformers_modules.")
    got = [[dict(r, semantic_id=tuple(r["semantic_id"])) for r in ranked] for ranked in remote["results"]]
    assert [[r["doc_id"] for r in ranked] for ranked in got] == [[r["doc_id"] for r in ranked] for ranked in expected]
