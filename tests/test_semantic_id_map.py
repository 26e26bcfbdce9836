import json
import random

import pytest
import torch
from conftest import tiny_indexer_config

from lmindexer import SemanticIDMap

SIZES = [4, 3]


def brute_force_map(doc_ids, codes):
    """Reference dedup: group by learned codes, number documents by sorted ID."""
    groups = {}
    for doc_id, code in zip(doc_ids, codes):
        groups.setdefault(tuple(code), []).append(doc_id)
    return {doc_id: (*code, sorted(members).index(doc_id)) for code, members in groups.items() for doc_id in members}


def test_dedup_is_deterministic_and_matches_reference():
    rng = random.Random(0)
    doc_ids = [f"item-{rng.randrange(10**6)}-{i}" for i in range(300)]
    codes = [[rng.randrange(4), rng.randrange(3)] for _ in doc_ids]
    id_map = SemanticIDMap.from_codes(doc_ids, torch.tensor(codes), SIZES, dedup_size=64)
    expected = brute_force_map(doc_ids, codes)
    assert {d: id_map.semantic_id(d) for d in doc_ids} == expected
    # Row order does not matter: IDs are keyed by document ID.
    order = list(range(300))
    rng.shuffle(order)
    shuffled = SemanticIDMap.from_codes([doc_ids[i] for i in order], torch.tensor([codes[i] for i in order]), SIZES, 64)
    assert {d: shuffled.semantic_id(d) for d in doc_ids} == expected
    assert len({tuple(row) for row in id_map.semantic_ids.tolist()}) == 300


def test_lookups_by_document_id_semantic_id_and_prefix():
    id_map = SemanticIDMap.from_codes(["b", "a", "c", "d"], torch.tensor([[1, 2], [1, 2], [1, 0], [3, 2]]), SIZES, 4)
    assert id_map.semantic_id("a") == (1, 2, 0) and id_map.semantic_id("b") == (1, 2, 1)
    assert id_map.doc_id((1, 2, 1)) == "b"
    assert id_map.doc_id((1, 2, 3)) is None and id_map.doc_id((9, 2, 0)) is None
    assert id_map.documents_with_prefix([1]) == ["c", "a", "b"]
    assert id_map.documents_with_prefix([1, 2]) == ["a", "b"]
    assert id_map.documents_with_prefix([2]) == []
    assert sorted(id_map.documents_with_prefix([])) == ["a", "b", "c", "d"]
    assert id_map.rows_of(torch.tensor([[3, 2, 0], [0, 0, 0]])).tolist() == [3, -1]
    with pytest.raises(KeyError, match="'zz' is not in the semantic-ID map"):
        id_map.semantic_id("zz")
    assert "a" in id_map and "zz" not in id_map and len(id_map) == 4


def test_statistics_computed_independently():
    codes = torch.tensor([[0, 0], [0, 0], [0, 1], [2, 1]])
    stats = SemanticIDMap.from_codes(list("wxyz"), codes, SIZES, 4).statistics()
    assert stats["utilisation"] == [2 / 4, 2 / 3]
    p = torch.tensor([0.75, 0.25])
    assert stats["perplexity"][0] == pytest.approx(float(torch.exp(-(p * p.log()).sum())))
    assert stats["perplexity"][1] == pytest.approx(2.0)
    assert stats["collision_rate"] == 0.5
    assert stats["max_documents_per_learned_id"] == 2 and stats["distinct_learned_ids"] == 3


def test_overflow_error_says_how_large_dedup_must_be():
    codes = torch.tensor([[1, 1]] * 5 + [[0, 0]])
    with pytest.raises(
        ValueError, match="5 documents share one learned ID .* holds only 3: set `dedup_size` to at least 5"
    ):
        SemanticIDMap.from_codes([str(i) for i in range(6)], codes, SIZES, 3)


@pytest.mark.parametrize("suffix", [".json", ".safetensors"])
def test_round_trip_and_atomic_write(tmp_path, suffix):
    doc_ids = ["α-1", "b/2", "c\n3", 'd"4']
    id_map = SemanticIDMap.from_codes(
        doc_ids, torch.tensor([[1, 2], [1, 2], [0, 0], [3, 1]]), SIZES, 4, doc_titles=["t1", "t2", "t3", "t4"]
    )
    path = id_map.save(tmp_path / f"map{suffix}")
    loaded = SemanticIDMap.load(path)
    assert loaded == id_map and loaded.title("c\n3") == "t3"
    assert [p.name for p in tmp_path.iterdir()] == [f"map{suffix}"]  # no temporary left behind

    class Boom(Exception):
        pass

    import lmindexer.modeling_lmindexer.semantic_id_map as module

    original = module.safe_save_file if suffix == ".safetensors" else None
    try:
        if original:
            module.safe_save_file = lambda *a, **k: (_ for _ in ()).throw(Boom())
        else:
            id_map.doc_ids.append(object())  # not JSON-serialisable: the write fails midway
        with pytest.raises((Boom, TypeError)):
            id_map.save(path)
    finally:
        if original:
            module.safe_save_file = original
        else:
            id_map.doc_ids.pop()
    assert SemanticIDMap.load(path) == loaded  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == [f"map{suffix}"]


def test_extend_keeps_existing_ids_and_stays_unique():
    id_map = SemanticIDMap.from_codes(["b", "d"], torch.tensor([[1, 2], [1, 2]]), SIZES, 8)
    extended = id_map.extend(["a", "b", "e"], torch.tensor([[1, 2], [0, 0], [2, 2]]))
    assert extended.semantic_id("b") == (1, 2, 0) and extended.semantic_id("d") == (1, 2, 1)
    assert extended.semantic_id("a") == (1, 2, 2)  # next free index, even though "a" sorts first
    assert extended.semantic_id("e") == (2, 2, 0)
    assert len(extended) == 4


def test_load_rejects_a_map_from_another_config(tmp_path):
    config = tiny_indexer_config()  # sizes [6, 5, 4] + dedup 16
    id_map = SemanticIDMap.from_codes(["a"], torch.tensor([[0, 0]]), SIZES, 4)
    path = id_map.save(tmp_path / "map.safetensors")
    with pytest.raises(ValueError, match=r"position sizes \[4, 3, 4\] .* expects \[6, 5, 4, 16\]"):
        SemanticIDMap.load(path, config=config)


def test_load_rejects_foreign_and_future_files(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a semantic-ID map"):
        SemanticIDMap.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"format": "lmindexer-semantic-id-map", "version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        SemanticIDMap.load(tmp_path / "y.json")
    with pytest.raises(FileNotFoundError):
        SemanticIDMap.load(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "doc_ids, codes, message",
    [
        ([], torch.zeros(0, 2, dtype=torch.long), "empty corpus"),
        (["a", "a"], torch.tensor([[0, 0], [1, 1]]), r"Duplicate document IDs: \['a'\]"),
        (["a", "b"], torch.tensor([[0, 3], [1, 1]]), "Code 3 at position 2 lies outside its codebook of size 3"),
        (["a", "b"], torch.tensor([[0, 0, 0], [1, 1, 1]]), "3 positions but 2 codebook sizes"),
    ],
)
def test_bad_input(doc_ids, codes, message):
    with pytest.raises(ValueError, match=message):
        SemanticIDMap.from_codes(doc_ids, codes, SIZES, 4)
