"""The Spaces demo around a retriever: run it locally, write a Space folder for it, or publish that folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, SpaceCard

SPACE_FOLDER = Path(__file__).parent / "space"
SPACE_FILES = ("app.py", "requirements.txt", "README.md")


def launch_space(model: str, revision: str | None = None, host: str = "127.0.0.1", port: int | None = None,
                 share: bool = False, prevent_thread_lock: bool = False):
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


def push_space(model_repo_id: str, space_repo_id: str, revision: str | None = None, token: str | bool | None = None,
               private: bool | None = None):
    """Create (or update) a Gradio Space running the demo on `model_repo_id`; returns the `CommitInfo`."""
    from .publishing import hub_errors

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="lmindexer-space-") as folder, hub_errors(space_repo_id):
        export_space(model_repo_id, folder, revision)
        api.create_repo(space_repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        return api.upload_folder(repo_id=space_repo_id, repo_type="space", folder_path=folder,
                                 commit_message=f"LMIndexer demo for {model_repo_id}")
