"""The `semantic_id_ranking` evaluate module: hand-computed values, trec_eval called directly, offline loading."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytrec_eval

from lmindexer.trainers.downstream.ranking_metrics import (
    METRIC_PATH,
    load_ranking_metric,
    query_metrics,
    ranking_metrics,
)

# Four queries: several relevant documents (more than k=2), graded relevance, a miss, the first hit at rank 3.
RANKINGS = [
    ["a", "x", "b", "y", "z"],
    ["d2", "d1", "d9"],
    ["p", "q"],
    ["p", "q", "r", "s"],
]
RELEVANTS = [
    {"a": 1, "b": 1, "c": 1},
    {"d1": 2, "d2": 1, "d3": 3},
    {"r": 1},
    {"r": 1, "s": 1},
]
KS = [2, 5]


# Per query and k, by hand: (recall, ndcg, map, mrr). Ranks are 1-based, discount 1 / log2(rank + 1).
HAND = [
    {
        2: (1 / 3, 1 / (1 + 1 / math.log2(3)), 1 / 2, 1.0),  # MAP over min(R=3, k=2) = 2
        5: (2 / 3, (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3) + 1 / math.log2(4)), (1 + 2 / 3) / 3, 1.0),
    },
    {
        2: (2 / 3, (1 + 2 / math.log2(3)) / (3 + 2 / math.log2(3)), (1 + 1) / 2, 1.0),
        5: (2 / 3, (1 + 2 / math.log2(3)) / (3 + 2 / math.log2(3) + 1 / math.log2(4)), (1 + 1) / 3, 1.0),
    },
    {2: (0.0, 0.0, 0.0, 0.0), 5: (0.0, 0.0, 0.0, 0.0)},
    {
        2: (0.0, 0.0, 0.0, 0.0),
        5: (1.0, (1 / math.log2(4) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)), (1 / 3 + 2 / 4) / 2, 1 / 3),
    },
]


def hand_mean() -> dict[str, float]:
    mean = {}
    for k in KS:
        for position, name in enumerate(["recall", "ndcg", "map", "mrr"]):
            mean[f"{name}@{k}"] = sum(query[k][position] for query in HAND) / len(HAND)
    return mean


def structured(relevant: dict) -> dict:
    return {"doc_ids": list(relevant), "grades": list(relevant.values())}


def trec_eval_mean() -> dict[str, float]:
    """The same scores from pytrec_eval called directly, with our MAP normalisation and MRR cut at k."""
    qrels = {f"q{i}": relevant for i, relevant in enumerate(RELEVANTS)}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"recall.2,5", "ndcg_cut.2,5", "map_cut.2,5", "recip_rank"})
    mean = {}
    for k in KS:
        run = {
            f"q{i}": {doc: float(len(ranked) - rank) for rank, doc in enumerate(ranked[:k])}
            for i, ranked in enumerate(RANKINGS)
        }
        results = evaluator.evaluate(run)
        for query, relevant in zip(qrels, RELEVANTS):
            measures, count = results[query], len(relevant)
            values = {
                "recall": measures[f"recall_{k}"],
                "ndcg": measures[f"ndcg_cut_{k}"],
                "map": measures[f"map_cut_{k}"] * count / min(count, k),
                "mrr": measures["recip_rank"],
            }
            for name, value in values.items():
                mean[f"{name}@{k}"] = mean.get(f"{name}@{k}", 0.0) + value / len(RANKINGS)
    return mean


def assert_same(actual: dict, expected: dict):
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        assert actual[name] == pytest.approx(value, abs=1e-12), name


@pytest.fixture(scope="module")
def metric():
    return load_ranking_metric()


def test_module_against_hand_values_and_trec_eval(metric):
    expected = hand_mean()
    assert_same(trec_eval_mean(), expected)
    result = metric.compute(predictions=RANKINGS, references=[structured(r) for r in RELEVANTS], ks=KS)
    assert list(result) == sorted(result)
    assert_same(result, expected)
    # The JSON-string form of the references (the `relevant` column of our retrieval splits) gives the same.
    assert_same(metric.compute(predictions=RANKINGS, references=[json.dumps(r) for r in RELEVANTS], ks=KS), expected)
    assert_same(ranking_metrics(RANKINGS, RELEVANTS, KS), expected)


def test_per_query_values_and_map_differs_from_trec_map_cut():
    for ranked, relevant, hand in zip(RANKINGS, RELEVANTS, HAND):
        for k in KS:
            values = query_metrics(ranked, relevant, k)
            assert [values[f"{name}@{k}"] for name in ["recall", "ndcg", "map", "mrr"]] == pytest.approx(hand[k])
    # Three relevant documents, k=2, the first one at rank 1: trec_eval's map_cut_2 divides by 3, ours by 2.
    trec = pytrec_eval.RelevanceEvaluator({"q": {"a": 1, "b": 1, "c": 1}}, {"map_cut.2"}).evaluate(
        {"q": {"a": 2.0, "x": 1.0}}
    )
    assert trec["q"]["map_cut_2"] == pytest.approx(1 / 3)
    assert query_metrics(["a", "x"], {"a", "b", "c"}, 2)["map@2"] == pytest.approx(1 / 2)


def test_order_is_the_ranking_not_the_document_ids(metric):
    # trec_eval breaks score ties by document id; scores strictly decrease by rank, so the list order wins.
    assert query_metrics(["z", "a"], {"z"}, 2)["mrr@2"] == 1.0
    assert query_metrics(["a", "z"], {"z"}, 2)["mrr@2"] == 0.5
    # A document listed twice keeps its first rank and counts once; the next distinct document moves up.
    assert query_metrics(["x", "x", "a"], {"a"}, 2)["recall@2"] == 1.0
    assert query_metrics(["a", "a"], {"a", "b"}, 2)["recall@2"] == 0.5
    # Sets, ranking deeper than k, an empty ranking.
    assert ranking_metrics([["a"], []], [{"a"}, {"b"}], ks=[1]) == {
        "map@1": 0.5,
        "mrr@1": 0.5,
        "ndcg@1": 0.5,
        "recall@1": 0.5,
    }


def test_invalid_inputs(metric):
    with pytest.raises(ValueError, match="no relevant document"):
        ranking_metrics([["a"], ["b"]], [{"a"}, set()], ks=[1])
    with pytest.raises(ValueError, match="no relevant document"):
        query_metrics(["a"], {"a": 0}, 1)
    with pytest.raises(ValueError, match="no relevant document"):
        metric.compute(predictions=[["a"]], references=["{}"], ks=[1])
    with pytest.raises(ValueError, match="whole numbers"):
        query_metrics(["a"], {"a": 0.5}, 1)
    with pytest.raises(ValueError, match="ks"):
        ranking_metrics([["a"]], [{"a"}], ks=[])
    with pytest.raises(ValueError, match="ks"):
        ranking_metrics([["a"]], [{"a"}], ks=[0])
    with pytest.raises(ValueError):
        ranking_metrics([["a"]], [{"a"}, {"b"}], ks=[1])
    with pytest.raises(ValueError):
        ranking_metrics([], [], ks=[1])
    with pytest.raises(ValueError, match="format"):
        metric.compute(predictions=[["a"], 5], references=['["a"]', '["a"]'], ks=[1])
    # The in-package entry point is unaffected by failures, its own included.
    assert_same(ranking_metrics(RANKINGS, RELEVANTS, KS), hand_mean())


def test_loads_offline_from_its_folder_in_a_fresh_process(tmp_path):
    before = sorted(path.name for path in METRIC_PATH.iterdir())
    assert {"semantic_id_ranking.py", "README.md"} <= set(before)
    script = (
        "import json, sys, evaluate\n"
        "metric = evaluate.load(sys.argv[1])\n"
        "print(json.dumps(metric.compute(predictions=[['x', 'a']], references=['[\"a\"]'], ks=[1, 2])))\n"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HF_", "HUGGINGFACE_")) and key not in {"XDG_CACHE_HOME"}
    }
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-c", script, str(METRIC_PATH)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == pytest.approx(
        {
            "map@1": 0.0,
            "map@2": 0.5,
            "mrr@1": 0.0,
            "mrr@2": 0.5,
            "ndcg@1": 0.0,
            "ndcg@2": 1 / math.log2(3),
            "recall@1": 0.0,
            "recall@2": 1.0,
        }
    )
    # The script was copied into evaluate's modules cache; nothing was written next to it.
    cached = tmp_path / "hf" / "modules" / "evaluate_modules" / "metrics" / "semantic_id_ranking"
    assert list(cached.rglob("semantic_id_ranking.py"))
    assert sorted(path.name for path in METRIC_PATH.iterdir()) == before


def test_metric_script_is_self_contained():
    source = (METRIC_PATH / "semantic_id_ranking.py").read_text()
    imported = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imported == {"__future__", "json", "datasets", "evaluate", "pytrec_eval"}
    assert "lmindexer" not in source
    assert Path(METRIC_PATH, "README.md").read_text().startswith("---\n")
