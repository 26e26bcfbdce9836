"""Comma-separated lists as the command line gives them: `--text_fields title,brand`, `--codebook_size 64,32`."""

from __future__ import annotations


def split_names(text: str | None) -> list[str]:
    """`"title, brand"` -> `["title", "brand"]`."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def number_list(text: str | None, cast):
    """`"64,32"` -> `[64, 32]`, `"64"` -> `64`, None -> None."""
    if text is None:
        return None
    values = [cast(part) for part in split_names(str(text))]
    return values[0] if len(values) == 1 else values
