"""Publishing to the Hub: one folder laid out like the Hub repo, then one commit through `huggingface_hub`.

A published repo holds config.json (with `auto_map` and, for a retriever, `custom_pipelines`), safetensors
weights, the tokenizer, `semantic_id_map.safetensors`, the model's own Python files (nothing else), README.md with
its plots under `assets/`, and `lmindexer_card.json` (the card's data, so a later push rebuilds the same card).

Indexer and retriever are separate repos: an indexer is what `lmindexer assign` / `lmindexer finetune` start
from, a retriever is what users query; the retriever's card names its indexer as `base_model`.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import OfflineModeIsEnabled
from transformers import AutoTokenizer

from ..modeling_lmindexer import LMIndexerForGenerativeRetrieval
from ..modeling_lmindexer.semantic_id_map import ID_MAP_FILE
from .card_data import LMIndexerCardData
from .model_card import default_card_data, write_model_card

# Anything that deserialises by running code must never reach a published repo: pickles and the formats built on
# them (torch, joblib, dill, numpy with object arrays). Lower case; use `is_pickle_file` to test a name.
FORBIDDEN_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz", ".joblib", ".dill")
# Compression wrapped around a pickle does not make it safe: `x.pkl.gz` is judged as `x.pkl`.
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".lzma", ".zst", ".lz4", ".z")


def is_pickle_file(name: str | Path) -> bool:
    """Whether a file name marks a pickle-based format, case-insensitively and through compression suffixes."""
    # The "_" prefix makes a bare dot-name such as ".pkl" count as a suffix too (pathlib sees it as a stem).
    suffixes = [suffix.lower() for suffix in Path("_" + Path(name).name).suffixes]
    while suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes.pop()
    return bool(suffixes) and suffixes[-1] in FORBIDDEN_SUFFIXES


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class HubUnreachableError(ConnectionError):
    """The Hub could not be reached (offline mode or no network); nothing was uploaded."""


def save_for_hub(
    model,
    folder: str | Path,
    tokenizer=None,
    card_data: LMIndexerCardData | None = None,
    repo_id: str | None = None,
    max_shard_size: str | int = "50GB",
) -> list[str]:
    """Write everything a Hub repo of `model` holds into `folder`; return the relative paths written.

    The tokenizer is `tokenizer`, else `model.tokenizer`, else the one saved next to the model; a repo without
    one could not be queried, so its absence is an error. `folder` goes from one complete state to the next: the
    repo is written into `<folder>.saving` and swapped in by renames, so a failure leaves `folder` as it was. A
    `folder` that is not empty must be an earlier export (a complete repo, `check_publishable`), which is replaced
    whole; any other folder is refused before anything is written, so that none of its files is overwritten or
    listed as part of the repo.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file: give a new or empty folder to write the repo to.")
    if folder.is_dir() and any(folder.iterdir()):
        try:
            check_publishable(folder)
        except ValueError as error:
            raise ValueError(
                f"{folder} is not empty and is not an earlier export ({error}): give a new or empty "
                "folder; nothing was written."
            ) from None
    staging = folder.with_name(f"{folder.name}.saving")
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted export: never part of the result
    try:
        written = _write_repo_folder(model, staging, tokenizer, card_data, repo_id, max_shard_size)
        _swap_in(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return written


def _write_repo_folder(model, folder: Path, tokenizer, card_data, repo_id, max_shard_size) -> list[str]:
    folder.mkdir(parents=True)
    if isinstance(model, LMIndexerForGenerativeRetrieval):
        model.id_map  # noqa: B018 - raises a clear error when the retriever has no map
    elif model.id_map is None:
        raise ValueError("The indexer has no ID map: load it from its training output or set `model.id_map`.")
    tokenizer = tokenizer or getattr(model, "tokenizer", None) or _saved_tokenizer(model)
    card_data = default_card_data(model, card_data)
    if repo_id is not None:
        card_data.model_id = repo_id
    model.save_pretrained(folder, max_shard_size=max_shard_size, model_card=False)
    tokenizer.save_pretrained(folder)
    write_model_card(model, folder, card_data)
    check_publishable(folder)
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def _swap_in(staging: Path, folder: Path) -> None:
    """Replace `folder` (absent, empty or an earlier export) by the complete `staging` folder."""
    if not folder.exists():
        staging.rename(folder)
        return
    previous = folder.with_name(f"{folder.name}.old")
    if previous.exists():
        shutil.rmtree(previous)
    folder.rename(previous)
    staging.rename(folder)
    shutil.rmtree(previous)


def check_publishable(folder: str | Path) -> None:
    """Refuse a folder that would publish pickles or lack the files a user needs to load it."""
    folder = Path(folder)
    pickled = [p.name for p in folder.rglob("*") if p.is_file() and is_pickle_file(p.name)]
    if pickled:
        raise ValueError(f"Refusing to publish pickle-based files {pickled}: only safetensors and JSON are allowed.")
    missing = [name for name in ("config.json", "README.md", ID_MAP_FILE) if not (folder / name).is_file()]
    if not any(folder.glob("*.safetensors")) or not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append("weights (*.safetensors) and tokenizer files")
    if missing:
        raise ValueError(f"{folder} is not a complete lmindexer repo: missing {missing}.")


def push_model_to_hub(
    model,
    repo_id: str,
    *,
    tokenizer=None,
    card_data: LMIndexerCardData | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    max_shard_size: str | int = "50GB",
    tags: list[str] | None = None,
):
    """Create `repo_id` if needed and upload the model, tokenizer, ID map, code and card in one commit.

    `revision` names the branch to commit to (created from main when missing); with `create_pr=True` the commit
    becomes a pull request against it instead. Returns the `CommitInfo` (its `oid` is the SHA to pin).
    """
    card_data = default_card_data(model, card_data)
    for tag in tags or []:
        if tag not in card_data.tags:
            card_data.tags.append(tag)
    with tempfile.TemporaryDirectory(prefix="lmindexer-push-") as folder:
        save_for_hub(
            model, folder, tokenizer=tokenizer, card_data=card_data, repo_id=repo_id, max_shard_size=max_shard_size
        )
        return upload_to_hub(
            folder,
            repo_id,
            commit_message=commit_message or f"Upload {type(model).__name__}",
            commit_description=commit_description,
            private=private,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )


def upload_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    commit_message: str,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    api: HfApi | None = None,
):
    """Upload a folder written by `save_for_hub` as one commit (see `push_model_to_hub`)."""
    check_publishable(folder)
    api = api or HfApi(token=token)
    with hub_errors(
        repo_id,
        "Save the repo locally with `lmindexer.hub_cards.save_for_hub(model, folder)` and upload it when online.",
    ):
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
        if revision is not None and not create_pr:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=commit_message,
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
        )


@contextmanager
def hub_errors(repo_id: str, advice: str = ""):
    """Turn any "the Hub cannot be reached" error raised inside into a `HubUnreachableError` naming `repo_id`."""
    try:
        yield
    except Exception as error:
        if is_unreachable(error):
            raise HubUnreachableError(
                f"Cannot reach the Hub to publish {repo_id} ({error}). Nothing was uploaded. {advice}".rstrip()
            ) from error
        raise


def is_unreachable(error: BaseException) -> bool:
    """Offline mode, a refused or unresolvable connection, or a timeout, from any HTTP client the Hub uses."""
    if isinstance(error, (OfflineModeIsEnabled, ConnectionError, TimeoutError)):
        return True
    return any(
        cls.__name__ in ("TransportError", "NetworkError", "ConnectError", "ConnectTimeout")
        for cls in type(error).__mro__
    )


def _saved_tokenizer(model):
    """The tokenizer stored where the model was loaded from (a folder, or a Hub repo already in the cache)."""
    source = model.name_or_path
    if source and Path(source).is_dir() and not any((Path(source) / name).is_file() for name in TOKENIZER_FILES):
        source = None
    if source:
        try:
            return AutoTokenizer.from_pretrained(source)
        except OSError:
            pass
    raise ValueError(
        "No tokenizer to publish: pass `tokenizer=`, attach one as `model.tokenizer`, or load the model from a "
        "folder or repo that holds its tokenizer."
    )
