"""`lmindexer push` and `lmindexer space`: the Hub half of the CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("lmindexer")


@dataclass
class PushArguments:
    model: str = field(default="", metadata={"help": "Folder of a trained indexer or retriever."})
    repo_id: str = field(default="", metadata={"help": "Hub repo to publish to, e.g. org/lmindexer-beauty."})
    revision: str | None = field(default=None, metadata={"help": "Branch to commit to (created when missing)."})
    create_pr: bool = field(default=False, metadata={"help": "Open a pull request instead of committing."})
    private: bool | None = field(default=None, metadata={"help": "Create the repo private (when it does not exist)."})
    token: str | None = field(default=None, metadata={"help": "Hub token; default: the logged-in one."})
    commit_message: str | None = field(default=None)
    dataset: str | None = field(default=None, metadata={"help": "Training dataset named in the card (Hub id or name)."})
    license: str | None = field(default=None, metadata={"help": "License in the card's metadata, e.g. apache-2.0."})
    language: str | None = field(default=None, metadata={"help": "Language in the card's metadata, e.g. en."})
    save_to: str | None = field(
        default=None, metadata={"help": "Write the repo folder here instead of uploading (to inspect or upload later)."}
    )


def run_push(args: PushArguments):
    from transformers import AutoModel, AutoTokenizer

    from ..hub_cards import LMIndexerCardData, push_model_to_hub, save_for_hub

    if not args.model or not Path(args.model).is_dir():
        raise ValueError(f"--model must be the folder of a trained indexer or retriever, got {args.model!r}.")
    if not args.repo_id and not args.save_to:
        raise ValueError("Give --repo_id org/name (or --save_to FOLDER to write the repo without uploading).")
    model = AutoModel.from_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    card_data = LMIndexerCardData.load(args.model) or LMIndexerCardData()  # a retriever's task is filled in later
    if args.dataset and args.dataset not in card_data.datasets:
        card_data.datasets = [args.dataset, *card_data.datasets]
    card_data.license = args.license or card_data.license
    card_data.language = args.language or card_data.language
    if args.save_to:
        written = save_for_hub(model, args.save_to, tokenizer=tokenizer, card_data=card_data, repo_id=args.repo_id or None)
        print(f"Wrote {len(written)} files to {args.save_to}: {', '.join(written)}")
        return written
    commit = push_model_to_hub(
        model, args.repo_id, tokenizer=tokenizer, card_data=card_data, commit_message=args.commit_message,
        private=args.private, token=args.token, revision=args.revision, create_pr=args.create_pr,
    )
    print(f"Pushed to {commit.commit_url}")
    print(f'Pin this commit when loading with remote code: revision="{commit.oid}"')
    return commit


@dataclass
class SpaceArguments:
    model: str = field(default="", metadata={"help": "Retriever folder or Hub repo the demo runs on."})
    revision: str | None = field(default=None, metadata={"help": "Model revision (commit SHA) to load."})
    host: str = field(default="127.0.0.1")
    port: int | None = field(default=None, metadata={"help": "Default: Gradio's (7860, or the next free port)."})
    export: str | None = field(default=None, metadata={"help": "Write a Space folder for --model here instead of running."})
    push_space: str | None = field(default=None, metadata={"help": "Publish the Space to this repo (e.g. org/lmindexer-demo)."})
    token: str | None = field(default=None)


def run_space(args: SpaceArguments):
    from ..hub_cards import export_space, launch_space, push_space

    if not args.model:
        raise ValueError("Give --model: a retriever folder or Hub repo id.")
    if args.export:
        written = export_space(args.model, args.export, args.revision)
        print(f"Wrote the Space for {args.model} to {args.export}: {', '.join(written)}")
        return written
    if args.push_space:
        commit = push_space(args.model, args.push_space, args.revision, token=args.token)
        print(f"Space published: {commit.commit_url}")
        return commit
    return launch_space(args.model, args.revision, host=args.host, port=args.port)
