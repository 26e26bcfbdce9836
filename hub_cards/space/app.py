"""Gradio demo of an lmindexer retriever: type a query or pick a user history, see the top-k documents with their
semantic IDs, and browse the ID tree around a result.

Runs on Hugging Face Spaces (the model comes from `space_config.json` beside this file, or the LMINDEXER_MODEL and
LMINDEXER_REVISION variables) and locally through `lmindexer space --model DIR_OR_REPO`. It needs only torch,
transformers and gradio: the model's own code comes with the model (`trust_remote_code`), pinned by revision.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gradio as gr
import torch
from transformers import AutoModel, AutoTokenizer

SPACE_CONFIG = Path(__file__).with_name("space_config.json")
HISTORY_CHOICES = 2000  # titles offered in the history picker; larger catalogues are cut to keep the page light
NEIGHBOURS_SHOWN = 8


def configured_model() -> tuple[str | None, str | None]:
    """(model, revision) from the environment, else from `space_config.json`."""
    settings = json.loads(SPACE_CONFIG.read_text()) if SPACE_CONFIG.is_file() else {}
    return (
        os.environ.get("LMINDEXER_MODEL") or settings.get("model"),
        os.environ.get("LMINDEXER_REVISION") or settings.get("revision"),
    )


class RetrievalDemo:
    """The model, its tokenizer and ID map, and the three things the page does with them."""

    def __init__(self, model_path: str, revision: str | None = None):
        self.model = AutoModel.from_pretrained(model_path, trust_remote_code=True, revision=revision).eval()
        if not hasattr(self.model, "retrieve"):
            raise ValueError(
                f"{model_path} holds a {type(self.model).__name__}, not a retriever: the demo needs a model fine-tuned "
                "with `lmindexer finetune` (LMIndexerForGenerativeRetrieval)."
            )
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=True, revision=revision)
        if torch.cuda.is_available():
            self.model.to("cuda")
        self.id_map = self.model.id_map
        self.name = model_path
        titles = self.id_map.doc_titles or list(self.id_map.doc_ids)
        self.history_choices = [(title, doc_id) for title, doc_id in zip(titles, self.id_map.doc_ids)][:HISTORY_CHOICES]
        self._titles = dict(zip(self.id_map.doc_ids, titles))

    def readable_id(self, semantic_id) -> str:
        return self.model.config.semantic_id_text(semantic_id)

    def query_text(self, query: str, history: list[str] | None) -> str:
        """The typed query, or the picked history (document IDs, in the order picked: oldest first) rendered by the
        model's own `render_history`, as it was fine-tuned (format, order, item limit, separator)."""
        if query and query.strip():
            return query.strip()
        if history:
            if hasattr(self.model, "render_history"):
                try:
                    return self.model.render_history(list(history))
                except ValueError as error:  # e.g. a map without titles for a model fine-tuned on item texts
                    raise gr.Error(str(error)) from None
            # A model published before `render_history` existed was fine-tuned on item titles, oldest first.
            separator = getattr(self.model.config, "history_separator", " ; ")
            return separator.join(self._titles[doc_id] for doc_id in history)
        raise gr.Error("Type a query or pick at least one item of a user history.")

    def search(self, query: str, history: list[str] | None, top_k: int):
        text = self.query_text(query, history)
        top_k = int(top_k)
        ranked = self.model.retrieve([text], tokenizer=self.tokenizer, top_k=top_k, num_beams=max(20, top_k))[0]
        rows = [
            [rank, hit["doc_id"], self.readable_id(hit["semantic_id"]), hit.get("title") or "", round(hit["score"], 4)]
            for rank, hit in enumerate(ranked, start=1)
        ]
        choices = [
            (f"{rank}. {hit.get('title') or hit['doc_id']}", hit["doc_id"]) for rank, hit in enumerate(ranked, start=1)
        ]
        first = ranked[0]["doc_id"] if ranked else None
        return rows, gr.update(choices=choices, value=first), self.id_tree(first)

    def id_tree(self, doc_id: str | None) -> str:
        """Markdown view of the ID tree around a document: each prefix of its ID, how many documents share it,
        the sibling branches one level down, and the documents that share its learned ID."""
        if not doc_id:
            return "Search first; the ID tree of the selected result appears here."
        semantic_id = self.id_map.semantic_id(doc_id)
        learned = self.id_map.id_length
        lines = [f"**{self._titles.get(doc_id, doc_id)}** has semantic ID `{self.readable_id(semantic_id)}`", ""]
        for depth in range(1, learned + 1):
            prefix = semantic_id[:depth]
            branches = branch_counts(self.id_map, prefix[:-1])
            shown = sorted(branches, key=lambda code: -branches[code])[:NEIGHBOURS_SHOWN]
            if prefix[-1] not in shown:  # the document's own branch is always shown
                shown[-1] = prefix[-1]
            siblings = ", ".join(f"`{code}`: {branches[code]}" + (" ←" if code == prefix[-1] else "") for code in shown)
            lines.append(
                f"{'  ' * (depth - 1)}- `{self.readable_id(prefix)}`: {branches[prefix[-1]]} documents "
                f"(branches at position {depth}: {siblings})"
            )
        neighbours = [other for other in self.id_map.documents_with_prefix(semantic_id[:learned]) if other != doc_id]
        lines.append("")
        lines.append(f"Documents sharing its learned ID ({len(neighbours)}):")
        for other in neighbours[:NEIGHBOURS_SHOWN]:
            lines.append(f"- `{self.readable_id(self.id_map.semantic_id(other))}` {self._titles.get(other, other)}")
        return "\n".join(lines)


def branch_counts(id_map, prefix) -> dict[int, int]:
    """How many documents under `prefix` continue with each next code.

    The Space runs the model repo's own code, and a model published before `SemanticIDMap.prefix_children`
    existed brings a map class without it: hence the plain tensor fallback."""
    if hasattr(id_map, "prefix_children"):
        return id_map.prefix_children(list(prefix))
    ids = id_map.semantic_ids
    under_prefix = (ids[:, : len(prefix)] == torch.tensor(list(prefix), dtype=ids.dtype)).all(dim=1)
    codes, counts = torch.unique(ids[under_prefix, len(prefix)], return_counts=True)
    return dict(zip(codes.tolist(), counts.tolist()))


def build_demo(model_path: str, revision: str | None = None) -> gr.Blocks:
    demo_state = RetrievalDemo(model_path, revision)
    task = getattr(demo_state.model.config, "task", "retrieval")
    with gr.Blocks(title="LMIndexer generative retrieval") as demo:
        gr.Markdown(
            f"# LMIndexer generative retrieval\nModel: `{model_path}`"
            + (f" @ `{revision}`" if revision else "")
            + f" · {len(demo_state.id_map)} documents · IDs of {demo_state.id_map.id_length} learned codes"
            + " + dedup. Results are decoded under the ID trie, so every one is a real document."
        )
        with gr.Row():
            with gr.Column(scale=3):
                query = gr.Textbox(label="Query", placeholder="e.g. moisturizer for dry skin", elem_id="query")
                history = gr.Dropdown(
                    choices=demo_state.history_choices,
                    multiselect=True,
                    elem_id="history",
                    label="…or pick a user history (items in the order bought)"
                    + (" — this model recommends" if task == "recommendation" else ""),
                )
            with gr.Column(scale=1):
                top_k = gr.Slider(1, 20, value=10, step=1, label="Top k", elem_id="top-k")
                search = gr.Button("Search", variant="primary", elem_id="search-button")
        results = gr.Dataframe(
            headers=["rank", "doc_id", "semantic ID", "title", "score"],
            label="Results",
            elem_id="results",
            interactive=False,
        )
        selected = gr.Dropdown(choices=[], label="ID tree around result", elem_id="tree-choice")
        tree = gr.Markdown("Search first; the ID tree of the selected result appears here.", elem_id="id-tree")
        outputs = [results, selected, tree]
        search.click(demo_state.search, [query, history, top_k], outputs)
        query.submit(demo_state.search, [query, history, top_k], outputs)
        selected.change(demo_state.id_tree, [selected], [tree])
    return demo


if __name__ == "__main__":
    model, revision = configured_model()
    if not model:
        raise SystemExit("Set LMINDEXER_MODEL (a retriever folder or Hub repo) or write space_config.json.")
    build_demo(model, revision).launch()
