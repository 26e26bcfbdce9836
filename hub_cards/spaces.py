"""The Spaces demo around a retriever: run it locally, write a Space folder for it, or publish that folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, SpaceCard

logger = logging.getLogger("lmindexer")

SPACE_FOLDER = Path(__file__).parent / "space"
SPACE_FILES = ("app.py", "requirements.txt", "README.md")


def launch_space(
    model: str,
    revision: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    prevent_thread_lock: bool = False,
):
    """Start the Gradio app on `model` (a retriever folder or Hub repo); returns the running Blocks."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        from .space.app import build_demo
    except ImportError as error:
        if getattr(error, "name", None) != "gradio":
            raise
        raise ImportError("The Spaces demo needs gradio: pip install 'lmindexer[space]'.") from error

    demo = build_demo(model, revision)
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=prevent_thread_lock)
    return demo


def export_space(model_repo_id: str, folder: str | Path, revision: str | None = None) -> list[str]:
    """Write a Space for `model_repo_id` into `folder`: the app, its requirements, a README whose YAML header
    links the model, and `space_config.json` naming the model and revision the app loads."""
    model_repo_id = space_model_reference(model_repo_id, revision)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("app.py", "requirements.txt"):
        shutil.copyfile(SPACE_FOLDER / name, folder / name)
    card = SpaceCard.load(SPACE_FOLDER / "README.md")
    card.data.models = [model_repo_id]
    try:
        import gradio

        card.data.sdk_version = gradio.__version__
    except ImportError:  # keep the template's version
        pass
    card.save(folder / "README.md")
    (folder / "space_config.json").write_text(json.dumps({"model": model_repo_id, "revision": revision}, indent=2))
    return sorted(path.name for path in folder.iterdir())


def space_model_reference(model: str, revision: str | None) -> str:
    """What the Space records as its model: a Hub repo id as given, or a local folder's absolute path (so that the
    app finds it from anywhere), with a warning that a Space on the Hub cannot load it. A local indexer folder is
    refused (the demo runs a retriever), and an unpinned Hub model is named in a warning."""
    local = Path(model).expanduser()
    if not local.is_dir():
        if revision is None:
            logger.warning(
                "The Space loads %s at whatever revision is newest when it starts: pin one with --revision "
                "(the commit SHA `lmindexer push` printed).",
                model,
            )
        return model
    config = local / "config.json"
    model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type") if config.is_file() else None
    if model_type != "lmindexer-retrieval":
        what = "an indexer" if model_type == "lmindexer" else "not a fine-tuned retriever"
        raise ValueError(
            f"{model} is {what} (model_type {model_type}): the Space's demo runs a retriever; fine-tune "
            "one (`lmindexer finetune`) and export that."
        )
    logger.warning(
        "The Space will load the local folder %s: it runs only on this machine. Push the retriever "
        "(`lmindexer push`) and export the Space for its repo id to publish it.",
        local.resolve(),
    )
    return str(local.resolve())


def push_space(
    model_repo_id: str,
    space_repo_id: str,
    revision: str | None = None,
    token: str | bool | None = None,
    private: bool | None = None,
):
    """Create (or update) a Gradio Space running the demo on `model_repo_id`; returns the `CommitInfo`."""
    from .publishing import hub_errors

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="lmindexer-space-") as folder, hub_errors(space_repo_id):
        export_space(model_repo_id, folder, revision)
        api.create_repo(space_repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=space_repo_id,
            repo_type="space",
            folder_path=folder,
            commit_message=f"LMIndexer demo for {model_repo_id}",
        )
