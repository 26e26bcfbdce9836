"""Replacing a model folder as a whole: a complete new folder is written beside the old one and swapped in by renames.

```
runs/x/          the model: config.json, model.safetensors, semantic_id_map.safetensors, tokenizer files, README.md
                 (+ assets/), indexer_metrics.json, id_method.json, code; the run's own checkpoint-stage/, stages/;
                 semantic_id_map.lock, which `lmindexer assign` (and the swap) hold while they change the folder
runs/x.saving/x/ only while a save runs: the new model folder being written (named like the model, since cards
                 are titled after their folder)
runs/x.old/      only during the swap: the previous complete folder
```

A save writes every file of the new model into `x.saving/x/`, renames `x/` to `x.old/` and `x.saving/x/` to `x/`, then
moves what belongs to the run rather than to the model (`checkpoint-stage/`, `stages/`, logs, anything the save did
not write and that is not a model file) from `x.old/` into `x/`, and removes `x.old/`. Whenever the process dies,
`x/` is either the previous complete model or the new one (or, between the two renames, only `x.old/` is there), and
`recover_model_folder` (run before the next save and by `IndexerTrainer`) finishes or rolls back the swap.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path

from .fault_points import crash_point

logger = logging.getLogger("lmindexer")

# The lock `lmindexer assign` holds while it extends a folder's ID map; a save holds it for the swap.
MAP_LOCK_FILE = "semantic_id_map.lock"
STAGING_SUFFIX = ".saving"
PREVIOUS_SUFFIX = ".old"
# Files a saved model consists of: a new save replaces them all, so the previous folder's are never carried over.
MODEL_FILE_PATTERNS = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.*",
    "merges.txt",
    "spiece.model",
    "sentencepiece*.model",
    "chat_template.*",
    "README.md",
    "assets",
    "lmindexer_card.json",
    "indexer_metrics.json",
    "id_method.json",
    "quantizer_config.json",
    "*.py",
)


def staging_folder(folder: Path) -> Path:
    """Where the new folder is written: `<folder>.saving/<folder name>/`."""
    return folder.with_name(folder.name + STAGING_SUFFIX) / folder.name


def previous_folder(folder: Path) -> Path:
    return folder.with_name(folder.name + PREVIOUS_SUFFIX)


def is_model_file(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in MODEL_FILE_PATTERNS)


def write_model_folder(folder: str | os.PathLike, write: Callable[[Path], None], lock_timeout: float = 600.0) -> Path:
    """Replace the model in `folder` by what `write(staging)` writes, in one swap (see the module docstring).

    The run's own entries in `folder` (checkpoints, logs) stay. If `write` raises, `folder` is untouched and the
    staging folder is removed. The swap holds the folder's map lock (`MAP_LOCK_FILE`), so that an `lmindexer
    assign` never writes the previous model's map into the new folder. Returns `folder`.
    """
    folder = Path(folder).absolute()
    recover_model_folder(folder)
    staging = staging_folder(folder)
    shutil.rmtree(staging.parent, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        write(staging)
        _sync_tree(staging)
        crash_point("final_save.staged")
    except BaseException:
        shutil.rmtree(staging.parent, ignore_errors=True)
        raise
    with folder_lock(folder / MAP_LOCK_FILE, lock_timeout) if folder.is_dir() else nullcontext():
        _swap_in(staging, folder)
    return folder


def _swap_in(staging: Path, folder: Path) -> None:
    cwd = Path.cwd().absolute()
    if folder.exists() and (folder == cwd or folder in cwd.parents):
        # Renaming the working directory would move this process along with it: replace file by file instead.
        logger.warning(
            "%s is the working directory (or holds it): its files are replaced one by one, not swapped as a whole.",
            folder,
        )
        for entry in staging.iterdir():
            target = folder / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
        shutil.rmtree(staging.parent)
        return
    previous = previous_folder(folder)
    if folder.exists():
        folder.rename(previous)
        crash_point("final_save.between_renames")
    staging.rename(folder)
    _fsync_directory(folder.parent)
    staging.parent.rmdir()
    _finish_swap(folder, previous)


def recover_model_folder(folder: str | os.PathLike) -> str | None:
    """Bring `folder` back to one complete state after a save that was killed; returns what was done, if anything.

    - only `<folder>.old` exists: the kill came between the two renames; the previous complete folder is put back.
    - both exist: the new folder was already in place; the run's entries still in `.old` are moved over.
    - `<folder>.saving/` exists: an unfinished (or abandoned) new folder, removed.
    """
    folder = Path(folder).absolute()
    previous, staging = previous_folder(folder), staging_folder(folder)
    done = None
    if previous.is_dir() and not folder.exists():
        previous.rename(folder)
        done = (
            f"A save into {folder} was interrupted while swapping folders; the previous complete folder "
            f"({previous.name}) was put back."
        )
    elif previous.is_dir():
        _finish_swap(folder, previous)
        done = f"A save into {folder} was interrupted after the new folder was in place; finished it."
    if staging.parent.is_dir():
        shutil.rmtree(staging.parent, ignore_errors=True)
        done = done or f"Removed {staging.parent.name}, left by an interrupted save into {folder}."
    if done:
        logger.warning(done)
    return done


def _finish_swap(folder: Path, previous: Path) -> None:
    """Move the run's entries (not the model's files, not what the new folder has) from `previous`, then drop it."""
    if not previous.is_dir():
        return
    for entry in sorted(previous.iterdir()):
        if not is_model_file(entry.name) and not (folder / entry.name).exists():
            entry.rename(folder / entry.name)
    shutil.rmtree(previous, ignore_errors=True)


def _sync_tree(root: Path) -> None:
    """Flush every file under `root` to disk, so that the swap never exposes a folder whose data is not written."""
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_directory(root)


def _fsync_directory(path: Path) -> None:
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


@contextmanager
def folder_lock(path: Path, timeout: float):
    """Hold an exclusive `flock` on `path` (created if missing), waiting up to `timeout` seconds for it.

    The lock belongs to the open file: the OS releases it when the holder exits or dies, so a killed run never
    leaves a stale lock behind (the file itself stays, empty but for the last holder's pid).
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        logger.warning(
            "File locks are not available here: concurrent `lmindexer assign` runs on %s may lose updates.", path.parent
        )
        yield
        return
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "unknown"
                    raise TimeoutError(
                        f"{path.parent} is being extended by another `lmindexer assign` (or saved; pid {holder}, lock "
                        f"file {path.name}); gave up after {timeout:g} s. Retry once it has finished, or wait longer "
                        "with --lock_timeout."
                    ) from None
                if not waited:
                    logger.info("Waiting for another `lmindexer assign` (or save) on %s to finish...", path.parent)
                    waited = True
                time.sleep(0.1)
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(handle)
