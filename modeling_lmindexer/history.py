"""How a user's history becomes a recommender's input: the one rendering rule of fine-tuning and serving.

`HistoryFormat` holds the settings (saved in a retriever's config as `history_*`) and the rule; fine-tuning data
(`recommendation_splits`) and `LMIndexerForGenerativeRetrieval.render_history` both render through it.

This file is copied to the Hub: it imports only torch, transformers, the standard library and its siblings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .configuration_lmindexer import HISTORY_FORMATS, ID_TOKEN_TEMPLATE, semantic_id_text

logger = logging.getLogger(__name__)


@dataclass
class HistoryFormat:
    """How a user's history becomes input text.

    Args:
        max_history: most recent items kept (0: all). Saved in a retriever's config as `history_max_items`, the name
            checkpoints have carried since before this class existed.
        newest_first: order of the kept items in the text; oldest to newest by default.
        separator: between items.
        text_fields: item fields joined into each item's text.
        history_format: `"text"` (item texts, the paper's), `"ids"` (items' semantic IDs as ID tokens, TIGER's) or
            `"text+ids"` (both per item: the ID tokens, a space, the text).
        id_token_template: how an ID token reads, as in the model config.

    The rule: 1. the newest `max_history` items are kept; 2. they are ordered oldest to newest, or newest first;
    3. each becomes its text, its ID tokens, or its ID tokens, a space and its text; 4. they are joined by
    `separator`. A rendered history longer than the input limit is then cut by the tokenizer at `truncation_side`:
    the left end when items read oldest to newest, the right end when newest first, so the newest items survive.
    """

    max_history: int = 20
    newest_first: bool = False
    separator: str = " ; "
    text_fields: tuple[str, ...] = ("title",)
    history_format: str = "text"
    id_token_template: str = ID_TOKEN_TEMPLATE

    def __post_init__(self):
        if self.history_format not in HISTORY_FORMATS:
            raise ValueError(f"`history_format` must be one of {HISTORY_FORMATS}, got {self.history_format!r}.")
        if self.max_history < 0:
            raise ValueError(f"`max_history` must not be negative (0 keeps every item), got {self.max_history}.")
        self.text_fields = tuple(self.text_fields)

    @property
    def uses_ids(self) -> bool:
        return self.history_format != "text"

    @property
    def uses_text(self) -> bool:
        return self.history_format != "ids"

    @property
    def truncation_side(self) -> str:
        return "right" if self.newest_first else "left"

    @classmethod
    def from_config(cls, config) -> "HistoryFormat":
        """The history settings a retriever saved in its config (`LMIndexerRetrievalConfig.history_*`)."""
        return cls(
            max_history=config.history_max_items,
            newest_first=config.history_newest_first,
            separator=config.history_separator,
            text_fields=tuple(config.history_text_fields or ("title",)),
            history_format=config.history_format,
            id_token_template=config.id_token_template,
        )

    def config_fields(self) -> dict:
        """These settings as retriever config fields, so that serving renders histories as fine-tuning did."""
        return {
            "history_format": self.history_format,
            "history_max_items": self.max_history,
            "history_newest_first": self.newest_first,
            "history_separator": self.separator,
            "history_text_fields": list(self.text_fields),
            "truncation_side": self.truncation_side,
        }

    def kept(self, items: list) -> list:
        """Step 1 of the rule: the newest `max_history` of `items` (oldest first)."""
        items = list(items)
        return items[-self.max_history :] if self.max_history else items

    def render_items(self, texts: list, id_texts: list) -> str:
        """Steps 2-4 of the rule over kept items, oldest first: `texts` and `id_texts` (an item's semantic ID as ID
        tokens) hold what `history_format` uses; the other may hold None."""
        if len(texts) != len(id_texts):
            raise ValueError(f"Got {len(texts)} item texts for {len(id_texts)} items.")
        items = list(zip(texts, id_texts))
        if self.newest_first:
            items.reverse()
        parts = []
        for text, ids in items:
            if self.uses_text and text is None:
                raise ValueError(f"History format {self.history_format!r} needs every item's text; one item has none.")
            if self.uses_ids and ids is None:
                raise ValueError(
                    f"History format {self.history_format!r} needs every item's semantic ID; one item has none."
                )
            parts.append(text if not self.uses_ids else ids if not self.uses_text else f"{ids} {text}")
        return self.separator.join(parts)

    def render(self, history: list[str], item_text: dict[str, str], semantic_id: Callable | None = None) -> str:
        """`history`: item IDs, oldest first; `item_text`: item ID -> text; `semantic_id`: item ID -> semantic ID (a
        callable such as `SemanticIDMap.semantic_id`), needed by the `ids` and `text+ids` formats."""
        kept = self.kept(history)
        if self.uses_ids and semantic_id is None:
            raise ValueError(f"The {self.history_format!r} history format needs the items' semantic IDs (the ID map).")
        texts = [item_text[item] if self.uses_text else None for item in kept]
        id_texts = [
            semantic_id_text(semantic_id(item), self.id_token_template) if self.uses_ids else None for item in kept
        ]
        return self.render_items(texts, id_texts)


def render_history_with(config, id_map, history, item_texts=None, warn_titles: bool = True) -> tuple[str, bool]:
    """The body of `LMIndexerForGenerativeRetrieval.render_history`: `history` rendered by the settings a retriever's
    `config` saved, with `id_map` giving semantic IDs and titles. Returns the text, and whether map titles stood in
    for the richer item texts fine-tuning used (logged when `warn_titles`)."""
    if isinstance(history, str) or not isinstance(history, Iterable):
        raise TypeError(f"`history` must be a list of document IDs (or item texts), got {type(history).__name__}.")
    history = [str(item) for item in history]
    if not history:
        raise ValueError("`history` is empty: give at least one item.")
    if isinstance(item_texts, dict):
        given = [item_texts.get(item) for item in history]
    elif item_texts is not None:
        given = list(item_texts)
        if len(given) != len(history):
            raise ValueError(f"`item_texts` has {len(given)} entries for a history of {len(history)} items.")
    else:
        given = [None] * len(history)
    rule = HistoryFormat.from_config(config)
    texts, id_texts, from_titles = [], [], False
    for item, text in zip(rule.kept(history), rule.kept(given)):
        known = item in id_map
        if rule.uses_ids:
            if not known:
                raise ValueError(
                    f"History item {item!r} is not in the ID map, so it has no semantic ID for the "
                    f"{config.history_format!r} history format."
                )
            id_texts.append(semantic_id_text(id_map.semantic_id(item), config.id_token_template))
        else:
            id_texts.append(None)
        if rule.uses_text and text is None:
            if known:
                text = id_map.title(item)
                from_titles = True
                if text is None:
                    raise ValueError(f"The ID map holds no title for {item!r}: pass its text in `item_texts`.")
            elif not rule.uses_ids:
                text = item  # an item the map does not hold, given by its text
        texts.append(text)
    fields = config.history_text_fields
    warned = bool(from_titles and fields and list(fields) != ["title"])
    if warned and warn_titles:  # once per model: the caller passes what this returns
        logger.warning(
            "This model was fine-tuned on item texts made of the fields %s, but the ID map holds titles "
            "only: pass the same texts in `item_texts` to render histories as in fine-tuning.",
            fields,
        )
    return rule.render_items(texts, id_texts), warned
