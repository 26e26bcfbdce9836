"""Files replaced whole: a reader sees the previous complete file or the new one, never a half-written one.

Used by the ID map's save and by every file the package writes beside a model (cards, caches, quantisers, reports).
This file is copied to the Hub: it imports only the standard library.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class atomic_file:
    """Context manager yielding a temporary path beside `path` that replaces `path` only on success."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(handle)
        self.temporary = Path(name)
        return self.temporary

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            self.temporary.unlink(missing_ok=True)
            return
        with open(self.temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        # mkstemp creates owner-only files; a map is meant to be shared like the weights next to it.
        os.chmod(self.temporary, 0o644)
        os.replace(self.temporary, self.path)
