"""Causal ID-stream recommendation data: an ID-only tokenizer, one training stream per user, and its collator.

A user's training stream is `<bos>` then the ID tokens of the items before the validation item, oldest first:
one causal forward pass scores every item of it (as SASRec does), instead of one (history, next item) example per
prefix re-encoding the history each time. The loss covers the ID tokens of items 1..n-3 of a user with n items
(0-based): item 0 has no history, and items n-2 (validation) and n-1 (test) are never in a training stream.

Decoding renders a history with the model's `render_history` (the `ids` format, no separator) and its tokenizer puts
`<bos>` first: the same tokens, position for position, as the stream the model was trained on.
"""

from __future__ import annotations

import torch

from ...modeling_lmindexer.configuration_lmindexer import ID_TOKEN_TEMPLATE, id_token_text

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")


def id_vocabulary_tokenizer(id_vocabulary_sizes: list[int], id_token_template: str = ID_TOKEN_TEMPLATE):
    """A tokenizer whose whole vocabulary is `<pad> <bos> <eos> <unk>` and the ID tokens of every position, in order.

    It reads rendered ID histories (`<id_1_3><id_2_17><id_3_0>...`, spaces ignored), puts `<bos>` first, pads and cuts
    on the left (the newest items stay). Saved as `tokenizer.json`, it loads with `AutoTokenizer` anywhere.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocabulary = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for position, size in enumerate(id_vocabulary_sizes, start=1):
        for code in range(size):
            vocabulary[id_token_text(position, code, id_token_template)] = len(vocabulary)
    backend = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"<[^<>]*>"), behavior="isolated")]
    )
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
        truncation_side="left",
    )


def stream_windows(length: int, window_items: int) -> list[tuple[int, int]]:
    """`(start, end)` item windows of a training sequence of `length` items, newest first, such that every item
    but the first is a target exactly once: a window's first item is context only, so the next (older) window ends
    one item after this one starts. `window_items` 0 keeps one window of everything."""
    if window_items and window_items < 2:
        raise ValueError(f"A stream window needs at least 2 items (a context and a target), got {window_items}.")
    windows, end = [], length
    while True:
        start = max(0, end - window_items) if window_items else 0
        windows.append((start, end))
        if start == 0:
            return windows
        end = start + 1


def causal_training_streams(
    sequences: list[list[str]], item_tokens: dict[str, list[int]], bos_token_id: int, window_items: int = 0
) -> list[dict]:
    """One `{"input_ids", "labels"}` row per user window; `sequences` are users' whole item sequences (oldest first),
    of which the last two items (validation, test) are held out. Users with fewer than 4 items train nothing."""
    rows = []
    for sequence in sequences:
        train = sequence[:-2]
        if len(train) < 2:
            continue
        for start, end in stream_windows(len(train), window_items):
            input_ids, labels = [bos_token_id], [-100]
            for offset, item in enumerate(train[start:end]):
                tokens = item_tokens[item]
                input_ids += tokens
                labels += [-100] * len(tokens) if offset == 0 else tokens
            rows.append({"input_ids": input_ids, "labels": labels})
    return rows


class CausalStreamCollator:
    """Right-pads streams; padding is masked out of attention and loss (positions count real tokens only)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        longest = max(len(feature["input_ids"]) for feature in features)
        input_ids = torch.full((len(features), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), longest), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(features), longest), dtype=torch.long)
        for row, feature in enumerate(features):
            length = len(feature["input_ids"])
            input_ids[row, :length] = torch.tensor(feature["input_ids"])
            labels[row, :length] = torch.tensor(feature["labels"])
            attention_mask[row, :length] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
