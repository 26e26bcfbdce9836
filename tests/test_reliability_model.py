"""Reliability of the model side: config hygiene, generation settings against the trie, `retrieve` arguments, what a
hit's score means, and the publisher's pickle check."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import build_tiny_retriever
from transformers import BertConfig, EncoderDecoderConfig, GenerationConfig, T5ForConditionalGeneration, pipeline

from lmindexer import (
    LMIndexerConfig,
    LMIndexerForGenerativeRetrieval,
    LMIndexerRetrievalConfig,
    SemanticIDMap,
    TrieConstrainedLogitsProcessor,
)
from lmindexer.hub_cards.publishing import FORBIDDEN_SUFFIXES, check_publishable, is_pickle_file
from lmindexer.trainers.data.demo import tiny_t5_config

UNSAFE = ("auto_map", "trust_remote_code")


def nested_unsafe_keys(value, path="") -> list[str]:
    """Paths of every unsafe key below the top level of a config dict."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in UNSAFE and path:
                found.append(f"{path}/{key}")
            found += nested_unsafe_keys(item, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += nested_unsafe_keys(item, f"{path}/{index}")
    return found


def mark_unsafe(config):
    config.auto_map = {"AutoModel": "evil.Model"}
    config.trust_remote_code = True
    return config


def dirty_bert2bert() -> EncoderDecoderConfig:
    def side():
        return mark_unsafe(
            BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
        )

    config = EncoderDecoderConfig.from_encoder_decoder_configs(side(), side())
    config.decoder_start_token_id = config.pad_token_id = 0
    return mark_unsafe(config)


@pytest.fixture(scope="module")
def tiny(demo_items, demo_tokenizer):
    model, tokenizer = build_tiny_retriever(demo_items, demo_tokenizer)
    return model, tokenizer


@pytest.fixture
def model(tiny):
    """The module's retriever, with its generation config restored after each test."""
    model, _ = tiny
    saved = copy.deepcopy(model.generation_config)
    yield model
    model.generation_config = model.backbone.generation_config = saved


# ------------------------------------------------------------------------------------------ 1. config hygiene
@pytest.mark.parametrize("config_class", [LMIndexerConfig, LMIndexerRetrievalConfig])
@pytest.mark.parametrize("as_dict", [False, True], ids=["config-object", "dict"])
def test_unsafe_keys_stripped_from_nested_encoder_decoder_configs(config_class, as_dict, tmp_path):
    backbone = dirty_bert2bert()
    config = config_class(backbone_config=backbone.to_dict() if as_dict else backbone, codebook_sizes=4)
    # On construction, at every level of the object...
    for level in (config.backbone_config, config.backbone_config.encoder, config.backbone_config.decoder):
        assert not any(key in level.__dict__ for key in UNSAFE)
    # ...and on save, even for keys put back after construction.
    mark_unsafe(config.backbone_config.decoder)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert nested_unsafe_keys(saved) == []
    assert {"encoder", "decoder"} <= set(saved["backbone_config"])


def test_unsafe_keys_stripped_from_retriever_built_from_backbone_and_map(demo_items, demo_tokenizer, tmp_path):
    tokenizer = copy.deepcopy(demo_tokenizer)
    backbone = T5ForConditionalGeneration(mark_unsafe(tiny_t5_config(len(tokenizer), 32)))
    codes = torch.tensor([[i % 3, (i // 3) % 4] for i in range(len(demo_items))])
    id_map = SemanticIDMap.from_codes([i["item_id"] for i in demo_items], codes, [3, 4], 16)
    retriever = LMIndexerForGenerativeRetrieval.from_backbone_and_map(backbone, tokenizer, id_map)
    assert not any(key in retriever.config.backbone_config.__dict__ for key in UNSAFE)
    retriever.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert nested_unsafe_keys(saved) == []
    assert "auto_map" in saved  # the top-level one, for our own classes, is legitimate and kept


# --------------------------------------------------------------------------- 2. generation settings vs the trie
def conflicts(depth):
    """(setting, value, message fragment) for each length setting one past what the trie allows."""
    return [
        ("min_new_tokens", depth + 3, f"`min_new_tokens={depth + 3}` conflicts with the ID trie.*at most {depth}"),
        ("min_new_tokens", depth + 1, f"`min_new_tokens={depth + 1}`.*at most {depth}"),
        ("min_length", depth + 3, f"`min_length={depth + 3}` conflicts with the ID trie.*at most {depth + 1}"),
        ("min_length", depth + 2, f"`min_length={depth + 2}`.*at most {depth + 1}"),
        ("max_new_tokens", 2, f"`max_new_tokens=2` would cut IDs short.*at least {depth + 1}"),
        ("max_new_tokens", depth, f"`max_new_tokens={depth}`.*at least {depth + 1}"),
    ]


def test_generation_settings_that_break_ids_raise(model, tiny):
    _, tokenizer = tiny
    depth = model.trie.depth
    assert depth == 3  # two learned positions and the dedup position
    encoded = tokenizer(["hydrating face serum"], return_tensors="pt")
    for name, value, message in conflicts(depth):
        with pytest.raises(ValueError, match=message):  # as a keyword
            model.generate(**encoded, num_beams=4, num_return_sequences=4, **{name: value})
        with pytest.raises(ValueError, match=message):  # in a GenerationConfig passed in
            model.generate(**encoded, generation_config=GenerationConfig(num_beams=4, **{name: value}))
    # `max_length` counts only when `max_new_tokens` is unset (then it wins, as in transformers).
    with pytest.raises(ValueError, match=f"`max_length={depth + 1}` would cut IDs short.*at least {depth + 2}"):
        model.generate(**encoded, num_beams=4, max_new_tokens=None, max_length=depth + 1)


def test_generation_settings_at_the_bounds_still_give_whole_ids(model, tiny):
    _, tokenizer = tiny
    depth, eos = model.trie.depth, model.eos_token_id
    encoded = tokenizer(["hydrating face serum", "red lipstick"], return_tensors="pt", padding=True)
    for settings in (
        {"min_new_tokens": depth},
        {"min_length": depth + 1},
        {"max_new_tokens": depth + 1},
        {"max_new_tokens": None, "max_length": depth + 2},
    ):
        sequences = model.generate(**encoded, num_beams=4, num_return_sequences=4, **settings)
        assert model.trie.contains(sequences[:, 1 : 1 + depth]).all(), settings
        assert (sequences[:, 1 + depth] == eos).all(), settings


def test_more_beams_than_ids_is_not_taken_for_a_broken_trie(demo_items, demo_tokenizer, caplog):
    # Two IDs, eight beams: beam search fills the rest with placeholder beams, which must be dropped, not reported.
    model, tokenizer = build_tiny_retriever(demo_items[:2], demo_tokenizer)
    with caplog.at_level("WARNING"):
        [hits] = model.retrieve(["hydrating face serum"], tokenizer=tokenizer, top_k=5, num_beams=8)
    assert sorted(hit["doc_id"] for hit in hits) == sorted(item["item_id"] for item in demo_items[:2])
    assert "only 2 valid IDs" in caplog.text


@pytest.mark.parametrize("name, value", [("min_new_tokens", 6), ("min_length", 6)])
def test_retrieve_refuses_a_conflicting_generation_config(model, tiny, name, value):
    _, tokenizer = tiny
    setattr(model.generation_config, name, value)
    with pytest.raises(ValueError, match=f"`{name}={value}` conflicts with the ID trie"):
        model.retrieve(["hydrating face serum"], tokenizer=tokenizer, top_k=2, num_beams=4)


@pytest.mark.filterwarnings("ignore:Unfeasible length constraints")  # transformers' own note on min_length
def test_dead_end_raises_instead_of_emitting_non_ids(model, tiny):
    _, tokenizer = tiny
    eos = model.eos_token_id
    encoded = tokenizer(["hydrating face serum"], return_tensors="pt")
    # Standalone processor in a plain transformers `generate`: banning EOS leaves no token at the EOS step.
    standalone = TrieConstrainedLogitsProcessor(model.trie, eos_token_id=eos)
    for settings in ({"suppress_tokens": [eos]}, {"min_new_tokens": 6}):
        with pytest.raises(ValueError, match="dead end at the EOS step"):
            model.backbone.generate(**encoded, num_beams=4, logits_processor=[standalone], **settings)
    # Through the retriever: beam search, greedy, and sampling (where torch itself would fail on the empty row).
    for settings in ({"num_beams": 4}, {"num_beams": 1}, {"num_beams": 1, "do_sample": True}):
        with pytest.raises(ValueError, match="dead end"):
            model.generate(**encoded, suppress_tokens=[eos], **settings)


# ------------------------------------------------------------------------------------- 3. retrieve arguments
@pytest.mark.parametrize(
    "settings, message",
    [
        ({"top_k": 0}, "`top_k` must be a positive integer, got 0"),
        ({"top_k": -1}, "`top_k` must be a positive integer, got -1"),
        ({"top_k": 2.0}, "`top_k` must be a positive integer, got 2.0"),
        ({"top_k": 1, "num_beams": 0}, "`num_beams` must be a positive integer, got 0"),
        ({"top_k": 1, "num_beams": -2}, "`num_beams` must be a positive integer, got -2"),
        ({"batch_size": 0}, "`batch_size` must be a positive integer, got 0"),
        ({"batch_size": -1}, "`batch_size` must be a positive integer, got -1"),
    ],
)
def test_retrieve_rejects_non_positive_arguments(model, tiny, settings, message):
    _, tokenizer = tiny
    with pytest.raises(ValueError, match=message):
        model.retrieve(["hydrating face serum"], tokenizer=tokenizer, **{"top_k": 2, "num_beams": 4, **settings})


@pytest.mark.parametrize(
    "queries, error, message",
    [
        (5, TypeError, "got int"),
        (b"face serum", TypeError, "got bytes: decode it first"),
        (["face serum", b"lipstick"], TypeError, "position 1 holds a bytes"),
        (np.array([1, 2]), TypeError, "position 0 holds a int64"),
        (np.array([["a", "b"]]), TypeError, "position 0 holds a ndarray"),
        ({"face serum"}, TypeError, "got set"),
        ((q for q in []), ValueError, "`texts` is empty"),
    ],
    ids=["int", "bytes", "bytes-in-list", "numeric-array", "2d-array", "set", "empty-generator"],
)
def test_retrieve_names_the_wrong_query_type(model, tiny, queries, error, message):
    _, tokenizer = tiny
    with pytest.raises(error, match=message) as raised:
        model.retrieve(queries, tokenizer=tokenizer, top_k=2, num_beams=4)
    assert "a str or a list/tuple" in str(raised.value) or error is ValueError


def test_retrieve_accepts_any_ordered_iterable_of_str(model, tiny):
    _, tokenizer = tiny
    queries = ["hydrating face serum", "red lipstick"]
    expected = model.retrieve(queries, tokenizer=tokenizer, top_k=3, num_beams=4)
    assert model.retrieve(tuple(queries), tokenizer=tokenizer, top_k=3, num_beams=4) == expected
    assert model.retrieve((q for q in queries), tokenizer=tokenizer, top_k=3, num_beams=4) == expected
    assert model.retrieve(np.array(queries), tokenizer=tokenizer, top_k=3, num_beams=4) == expected


def test_one_beam_decodes_greedily(model, tiny):
    _, tokenizer = tiny
    [hits] = model.retrieve(["hydrating face serum"], tokenizer=tokenizer, top_k=1, num_beams=1)
    assert len(hits) == 1
    assert hits[0]["score"] == pytest.approx(
        teacher_forced_score(model, tokenizer, "hydrating face serum", hits[0]), abs=1e-4
    )
    # Greedy: every token is the best one the trie allows after the previous ones.
    encoded = tokenizer(["hydrating face serum"], return_tensors="pt")
    ids = model.codes_to_tokens(torch.tensor(hits[0]["semantic_id"]))
    decoder_input = torch.cat([torch.tensor([model.generation_config.decoder_start_token_id]), ids])[None]
    logits = model(**encoded, decoder_input_ids=decoder_input).logits[0]
    for step, token in enumerate(ids.tolist()):
        allowed = model.trie.allowed_tokens(ids[:step].tolist())
        assert token == allowed[int(logits[step, allowed].argmax())]


def test_pipeline_validates_beams_and_query_types(tiny):
    model, tokenizer = tiny
    retrieve = pipeline("generative-retrieval", model=model, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="`num_beams` must be a positive integer, got 0"):
        retrieve("face serum", num_beams=0)
    with pytest.raises(ValueError, match="`top_k` must be a positive integer, got 0"):
        retrieve("face serum", top_k=0)
    assert len(retrieve("face serum", top_k=1, num_beams=1)) == 1
    for query, given in ((5, "got int"), (b"face serum", "got bytes"), (np.array(["a", "b"]), "got ndarray")):
        with pytest.raises(TypeError, match=given):
            retrieve(query)


# ----------------------------------------------------------------------------------------- 4. hit scores
def teacher_forced_score(model, tokenizer, query: str, hit: dict, length_penalty: float = 1.0) -> float:
    """Sum of the full-vocabulary log-probabilities of the hit's ID tokens and EOS, over (tokens) ** length_penalty."""
    labels = torch.cat([model.codes_to_tokens(torch.tensor(hit["semantic_id"])), torch.tensor([model.eos_token_id])])[
        None
    ]
    with torch.no_grad():
        logits = model(**tokenizer([query], return_tensors="pt"), labels=labels).logits
    log_probs = logits.float().log_softmax(-1).gather(2, labels[..., None]).squeeze(-1)
    return float(log_probs.sum() / labels.shape[1] ** length_penalty)


@pytest.mark.parametrize("length_penalty", [1.0, 0.0])
def test_hit_score_is_the_length_normalised_teacher_forced_log_probability(model, tiny, length_penalty):
    _, tokenizer = tiny
    model.generation_config.length_penalty = length_penalty
    queries = ["hydrating face serum", "hair dryer"]
    for query, hits in zip(queries, model.retrieve(queries, tokenizer=tokenizer, top_k=5, num_beams=8)):
        assert len(hits) == 5
        for hit in hits:
            expected = teacher_forced_score(model, tokenizer, query, hit, length_penalty)
            assert hit["score"] == pytest.approx(expected, abs=1e-4), hit


# ---------------------------------------------------------------------------------------- 5. pickle check
PICKLE_NAMES = [
    "x.pkl.gz",
    "MODEL.BIN",
    "scaler.joblib",
    "arrays.npz",
    "array.npy",
    "state.pickle",
    "weights.pt",
    "weights.PTH",
    "last.ckpt",
    "training_args.bin",
    "model.Pkl",
    "cache.joblib.xz",
    "fn.dill",
    ".pkl",
]
SAFE_NAMES = [
    "model.safetensors",
    "config.json",
    "tokenizer.json",
    "README.md",
    "semantic_id_map.safetensors",
    "x.bin.safetensors",
    "spm.model",
    "notes.txt.gz",
]


@pytest.mark.parametrize("name", PICKLE_NAMES)
def test_pickle_files_are_refused_whatever_their_case_or_compression(name, tmp_path):
    assert is_pickle_file(name)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / name).write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError, match=rf"Refusing to publish pickle-based files \['{name}'\]"):
        check_publishable(tmp_path)


@pytest.mark.parametrize("name", SAFE_NAMES)
def test_safe_files_are_not_taken_for_pickles(name):
    assert not is_pickle_file(name)


def test_forbidden_suffixes_stay_importable_and_lower_case():
    assert {".bin", ".pt", ".pkl", ".joblib", ".npz", ".npy"} <= set(FORBIDDEN_SUFFIXES)
    assert all(suffix == suffix.lower() for suffix in FORBIDDEN_SUFFIXES)
