"""How a user's history becomes a recommender's input: the one rendering rule of fine-tuning and serving.

This file is copied to the Hub: it imports only torch, transformers, the standard library and its siblings.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

logger = logging.getLogger(__name__)

HISTORY_FORMATS = ("text", "ids", "text+ids")


def semantic_id_text(semantic_id, id_token_template: str = "<id_{position}_{code}>") -> str:
    """A semantic ID as the string of its ID tokens, e.g. `<id_1_3><id_2_17><id_3_0>` (positions count from 1)."""
    return "".join(id_token_template.format(position=position, code=int(code)) for position, code in enumerate(semantic_id, start=1))


def render_history_items(
    texts, id_texts, history_format: str = "text", max_items: int = 20, newest_first: bool = False, separator: str = " ; "
) -> str:
    """A user's history as input text: the one rendering rule that fine-tuning data and serving both go through.

    `texts` and `id_texts` give, for every item of the history from oldest to newest, its text and its semantic ID
    as ID tokens (see [`semantic_id_text`]); only what `history_format` uses must be there, the other may hold None.

    1. The newest `max_items` items are kept (0 keeps them all).
    2. They are ordered oldest to newest, or newest first with `newest_first`.
    3. Each becomes its text (`"text"`), its ID tokens (`"ids"`), or its ID tokens, a space and its text (`"text+ids"`).
    4. They are joined by `separator`.

    An input still longer than the model's `max_query_length` tokens is then cut at the config's `truncation_side`,
    which fine-tuning sets so that the newest items are the ones kept: the left end when oldest come first.
    """
    if history_format not in HISTORY_FORMATS:
        raise ValueError(f"`history_format` must be one of {HISTORY_FORMATS}, got {history_format!r}.")
    texts, id_texts = list(texts), list(id_texts)
    if len(texts) != len(id_texts):
        raise ValueError(f"Got {len(texts)} item texts for {len(id_texts)} items.")
    items = list(zip(texts, id_texts))
    if max_items:
        items = items[-max_items:]
    if newest_first:
        items.reverse()
    parts = []
    for text, ids in items:
        if history_format != "ids" and text is None:
            raise ValueError(f"History format {history_format!r} needs every item's text; one item has none.")
        if history_format != "text" and ids is None:
            raise ValueError(f"History format {history_format!r} needs every item's semantic ID; one item has none.")
        parts.append(text if history_format == "text" else ids if history_format == "ids" else f"{ids} {text}")
    return separator.join(parts)



def render_history_with(config, id_map, history, item_texts=None, warn_titles: bool = True) -> str:
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
    if config.history_max_items:
        history, given = history[-config.history_max_items :], given[-config.history_max_items :]
    uses_text, uses_ids = config.history_format != "ids", config.history_format != "text"
    texts, id_texts, from_titles = [], [], False
    for item, text in zip(history, given):
        known = item in id_map
        if uses_ids:
            if not known:
                raise ValueError(f"History item {item!r} is not in the ID map, so it has no semantic ID for the "
                                 f"{config.history_format!r} history format.")
            id_texts.append(semantic_id_text(id_map.semantic_id(item), config.id_token_template))
        else:
            id_texts.append(None)
        if uses_text and text is None:
            if known:
                text = id_map.title(item)
                from_titles = True
                if text is None:
                    raise ValueError(f"The ID map holds no title for {item!r}: pass its text in `item_texts`.")
            elif config.history_format == "text":
                text = item  # an item the map does not hold, given by its text
        texts.append(text)
    fields = config.history_text_fields
    if from_titles and fields and list(fields) != ["title"] and warn_titles:  # once per model: see `warned`
        logger.warning("This model was fine-tuned on item texts made of the fields %s, but the ID map holds titles "
                       "only: pass the same texts in `item_texts` to render histories as in fine-tuning.", fields)
    warned = bool(from_titles and fields and list(fields) != ["title"])
    text = render_history_items(texts, id_texts, history_format=config.history_format, max_items=0,
                                newest_first=config.history_newest_first, separator=config.history_separator)
    return text, warned
