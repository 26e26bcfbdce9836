"""Shared fixtures: tiny random backbones built from configs, never downloaded."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from transformers import T5Config

from lmindexer import LMIndexerConfig, LMIndexerForSemanticID
from lmindexer.modeling_lmindexer.configuration_lmindexer import BEFORE_RECIPE
from lmindexer.trainers.data.demo import generate_demo_corpus, train_tokenizer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tiny_t5(vocab_size: int = 120, d_model: int = 32) -> T5Config:
    return T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=4,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )


def tiny_indexer_config(**overrides) -> LMIndexerConfig:
    # The recipe fields as a Python-built config defaulted to them when these tests were written (`BEFORE_RECIPE`);
    # the recipe itself is tested by turning each fix on.
    settings = dict(
        BEFORE_RECIPE, backbone_config=tiny_t5().to_dict(), id_length=3, codebook_sizes=[6, 5, 4], dedup_size=16
    )
    settings.update(overrides)
    return LMIndexerConfig(**settings)


@contextlib.contextmanager
def one_torch_thread():
    """Whole pipelines of tiny models: on a shared 2-core CPU, contending intra-op threads make them several times
    slower, and one thread gives the same maps (the pinned map hashes hold either way)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def one_torch_thread_in_slow_tests(request):
    if request.node.get_closest_marker("slow") is None:
        yield
        return
    with one_torch_thread():
        yield


# `cuda` tests run on a CUDA device; without one they skip, unless this variable asks for the CPU rehearsal that
# `bash benchmarks/gpu/run.sh --smoke` runs (the same code on device "cpu", so the GPU tests cannot rot unseen).
CUDA_TESTS_ON_CPU = "LMINDEXER_CUDA_TESTS_ON_CPU"


def cuda_test_device() -> str | None:
    """The device `cuda` tests run on: "cuda" when there is one, "cpu" in the rehearsal, else None (skip)."""
    import os

    if torch.cuda.is_available():
        return "cuda"
    return "cpu" if os.environ.get(CUDA_TESTS_ON_CPU) == "1" else None


def pytest_collection_modifyitems(config, items):
    if cuda_test_device() is not None:
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA device (or {CUDA_TESTS_ON_CPU}=1 for the CPU rehearsal)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture
def cuda_device() -> str:
    """ "cuda", or "cpu" in the rehearsal of the `cuda` tests (see `cuda_test_device`)."""
    device = cuda_test_device()
    if device is None:
        pytest.skip("needs a CUDA device")
    return device


@pytest.fixture
def tiny_model() -> LMIndexerForSemanticID:
    torch.manual_seed(0)
    return LMIndexerForSemanticID(tiny_indexer_config())


@pytest.fixture(scope="session")
def demo_items() -> list[dict]:
    return generate_demo_corpus(120, seed=0)


@pytest.fixture(scope="session")
def demo_tokenizer(demo_items):
    return train_tokenizer([f"{item['title']}; {item['brand']}" for item in demo_items], vocab_size=400)


def demo_corpus_file(tmp_path_factory, count: int, seed: int) -> Path:
    """A generated demo catalogue of `count` items written as JSON Lines in a fresh temporary folder."""
    from lmindexer.trainers.data.demo import write_jsonl

    return write_jsonl(generate_demo_corpus(count, seed=seed), tmp_path_factory.mktemp("corpus") / "items.jsonl")


def interrupt_at_step(monkeypatch, trainer_class, step: int, message: str = "simulated interruption"):
    """Make `trainer_class` raise KeyboardInterrupt when it reaches global step `step`; returns the original
    `compute_loss` so that a test can put it back."""
    original = trainer_class.compute_loss

    def interrupted(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.state.global_step == step:
            raise KeyboardInterrupt(message)
        return original(self, model, inputs, return_outputs, num_items_in_batch)

    monkeypatch.setattr(trainer_class, "compute_loss", interrupted)
    return original


def random_batch(batch_size: int = 4, length: int = 10, vocab_size: int = 120, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab_size, (batch_size, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, length - 3 :] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    return input_ids, attention_mask


# ------------------------------------------------------------------------------------------ Hub interception
class FakeHub:
    """Stands in for the Hub behind `huggingface_hub.HfApi`: records every repo, branch and commit our code asks
    for, and stores committed files under `root/<repo>/<revision>/` so that tests can load them back.

    The commit operations are built with huggingface_hub's own `CommitOperationAdd` and pattern filter, from the
    same arguments `upload_folder` receives, so the recorded operations are those that would be sent.
    """

    def __init__(self, root: Path):
        self.root = root
        self.repos: list[dict] = []
        self.branches: list[dict] = []
        self.commits: list[dict] = []

    def create_repo(self, api, repo_id, *, private=None, exist_ok=False, repo_type=None, space_sdk=None, **kwargs):
        from huggingface_hub import RepoUrl

        self.repos.append(
            {
                "repo_id": repo_id,
                "private": private,
                "exist_ok": exist_ok,
                "repo_type": repo_type,
                "space_sdk": space_sdk,
                "token": api.token,
            }
        )
        prefix = "spaces/" if repo_type == "space" else ""
        return RepoUrl(f"https://huggingface.co/{prefix}{repo_id}")

    def create_branch(self, api, repo_id, *, branch, exist_ok=False, repo_type=None, **kwargs):
        self.branches.append({"repo_id": repo_id, "branch": branch, "exist_ok": exist_ok})

    def upload_folder(
        self,
        api,
        *,
        repo_id,
        folder_path,
        path_in_repo=None,
        commit_message=None,
        commit_description=None,
        revision=None,
        create_pr=None,
        allow_patterns=None,
        ignore_patterns=None,
        run_as_future=False,
        repo_type=None,
        **kwargs,
    ):
        import shutil
        from concurrent.futures import Future

        from huggingface_hub import CommitInfo, CommitOperationAdd, ModelCard
        from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
        from huggingface_hub.utils import filter_repo_objects

        folder = Path(folder_path)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        ignore = [ignore_patterns] if isinstance(ignore_patterns, str) else list(ignore_patterns or [])
        kept = list(
            filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore + DEFAULT_IGNORE_PATTERNS)
        )
        prefix = f"{path_in_repo.strip('/')}/" if path_in_repo else ""
        operations = [
            CommitOperationAdd(path_or_fileobj=str(folder / name), path_in_repo=prefix + name) for name in kept
        ]
        if "README.md" in kept:
            ModelCard.load(folder / "README.md")  # the YAML header must parse, as the Hub checks
        branch = "refs/pr/1" if create_pr else (revision or "main")
        target = self.root / repo_id / branch
        for operation in operations:
            destination = target / operation.path_in_repo
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(operation.path_or_fileobj, destination)
        self.commits.append(
            {
                "repo_id": repo_id,
                "revision": revision,
                "create_pr": bool(create_pr),
                "repo_type": repo_type,
                "commit_message": commit_message,
                "commit_description": commit_description,
                "paths": [op.path_in_repo for op in operations],
                "folder": target,
            }
        )
        oid = f"{len(self.commits):040x}"
        info = CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{oid}",
            commit_message=commit_message or "",
            commit_description=commit_description or "",
            oid=oid,
            pr_url=f"https://huggingface.co/{repo_id}/discussions/1" if create_pr else None,
        )
        if run_as_future:
            future = Future()
            future.set_result(info)
            return future
        return info


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    from huggingface_hub import HfApi

    hub = FakeHub(tmp_path / "hub")
    for name in ("create_repo", "create_branch", "upload_folder"):
        method = getattr(hub, name)
        monkeypatch.setattr(HfApi, name, lambda api, *args, _method=method, **kwargs: _method(api, *args, **kwargs))
    return hub


def build_tiny_retriever(items: list[dict], tokenizer, seed: int = 0):
    """A random tiny T5 retriever over `items` with a 2-position ID map (3 x 4 codes) carrying titles."""
    import copy

    from transformers import T5ForConditionalGeneration

    from lmindexer import LMIndexerForGenerativeRetrieval, SemanticIDMap
    from lmindexer.trainers.data.demo import tiny_t5_config

    tokenizer = copy.deepcopy(tokenizer)
    codes = torch.tensor([[i % 3, (i // 3) % 4] for i in range(len(items))])
    id_map = SemanticIDMap.from_codes(
        [i["item_id"] for i in items], codes, [3, 4], 16, doc_titles=[i["title"] for i in items]
    )
    torch.manual_seed(seed)
    backbone = T5ForConditionalGeneration(tiny_t5_config(len(tokenizer), 32))
    model = LMIndexerForGenerativeRetrieval.from_backbone_and_map(backbone, tokenizer, id_map).eval()
    return model, tokenizer
