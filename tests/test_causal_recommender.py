"""The causal (decoder-only) ID-stream recommender, its data and its CLI preset, and how new ID-token rows start."""

import copy
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, GPT2Config, LlamaConfig, T5ForConditionalGeneration

from lmindexer import LMIndexerForGenerativeRetrieval, SemanticIDMap
from lmindexer.trainers.data.demo import tiny_t5_config, write_jsonl
from lmindexer.trainers.downstream.id_streams import (
    CausalStreamCollator,
    causal_training_streams,
    id_vocabulary_tokenizer,
    stream_windows,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_id_map(count: int = 24, titles: bool = True) -> SemanticIDMap:
    codes = torch.tensor([[i % 3, (i // 3) % 4] for i in range(count)])
    ids = [f"item{i}" for i in range(count)]
    return SemanticIDMap.from_codes(ids, codes, [3, 4], 4, doc_titles=[f"title {i}" for i in ids] if titles else None)


def tiny_causal(
    id_map: SemanticIDMap, family: str = "gpt2", seed: int = 0, positions: str = "start"
) -> LMIndexerForGenerativeRetrieval:
    tokenizer = id_vocabulary_tokenizer(id_map.vocabulary_sizes)
    if family == "gpt2":
        config = GPT2Config(
            n_layer=1, n_embd=32, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
        )
    else:
        config = LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
        )
    torch.manual_seed(seed)
    return LMIndexerForGenerativeRetrieval.from_causal_config(
        config, tokenizer, id_map, history_max_items=5, max_query_length=1 + 5 * 3, causal_positions=positions
    ).eval()


def teacher_forced_score(model, history: list[str], doc_id: str) -> float:
    """Mean log-probability of `doc_id`'s ID tokens after the rendered history, from one forward pass."""
    encoded = model.encode_queries([model.render_history(history)], model.tokenizer)
    target = model.codes_to_tokens(torch.tensor([model.id_map.semantic_id(doc_id)]))
    stream = torch.cat([encoded["input_ids"], target], 1)
    with torch.no_grad():
        logits = model(input_ids=stream, attention_mask=torch.ones_like(stream)).logits
    prompt = encoded["input_ids"].shape[1]
    log_probs = logits[0, prompt - 1 : -1].float().log_softmax(-1).gather(1, target[0][:, None])
    return float(log_probs.sum() / target.shape[1])


def test_new_id_rows_are_distinct_and_at_the_scale_of_the_text_rows(demo_items, demo_tokenizer):
    """`mean_resizing` made every ID row the same tiny vector (norm ~0.03 against ~5 for text rows)."""
    tokenizer = copy.deepcopy(demo_tokenizer)
    torch.manual_seed(0)
    backbone = T5ForConditionalGeneration(tiny_t5_config(len(tokenizer), 32))
    text_rows = len(tokenizer)
    model = LMIndexerForGenerativeRetrieval.from_backbone_and_map(backbone, tokenizer, tiny_id_map())
    table = model.get_input_embeddings().weight.detach()
    text_norm = table[:text_rows].norm(dim=1).mean()
    id_rows = table[text_rows:]
    assert id_rows.shape[0] == 3 + 4 + 4
    assert torch.allclose(id_rows.norm(dim=1), torch.full((id_rows.shape[0],), float(text_norm)), rtol=1e-3)
    distances = torch.cdist(id_rows, id_rows)[~torch.eye(id_rows.shape[0], dtype=torch.bool)]
    assert float(distances.min()) > 0.5 * float(text_norm)  # random directions in 32 dims: far apart
    assert model.config.id_token_init == "random"


def test_id_vocabulary_tokenizer_reads_rendered_histories():
    tokenizer = id_vocabulary_tokenizer([3, 4, 2])
    assert len(tokenizer) == 4 + 3 + 4 + 2
    encoded = tokenizer("<id_1_2><id_2_0> <id_3_1>")["input_ids"]
    assert encoded == [tokenizer.bos_token_id, 4 + 2, 4 + 3 + 0, 4 + 3 + 4 + 1]
    assert tokenizer.padding_side == "left" and tokenizer.truncation_side == "left"


def test_end_aligned_positions_count_the_tokens_that_follow():
    from lmindexer.modeling_lmindexer.causal_decoding import causal_position_ids

    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert causal_position_ids(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 1, 2, 2, 2]]
    end = causal_position_ids(mask, "end", tokens_after=4)
    assert end[0, 2:].tolist() == [6, 5, 4] and end[1].tolist() == [8, 7, 6, 5, 4] and end[2, :3].tolist() == [6, 5, 4]


def test_stream_windows_make_every_item_but_the_first_a_target_once():
    for length in range(2, 30):
        for window in (0, 2, 3, 5, 21):
            targets = [item for start, end in stream_windows(length, window) for item in range(start + 1, end)]
            assert sorted(targets) == list(range(1, length)), (length, window)


@pytest.mark.parametrize("window_items", [0, 3])
def test_training_streams_target_items_1_to_n_minus_3_and_never_the_held_out_items(window_items):
    item_tokens = {f"i{k}": [10 + k, 100 + k] for k in range(20)}
    sequences = [[f"i{k}" for k in range(n)] for n in (3, 4, 7, 12)]
    rows = causal_training_streams(sequences, item_tokens, bos_token_id=1, window_items=window_items)
    targets, seen = {}, {}
    for row in rows:
        assert row["input_ids"][0] == 1 and row["labels"][0] == -100
        labelled = [token for token in row["labels"] if token != -100]
        targets.setdefault(len(labelled), []).append(labelled)
        for token in row["input_ids"][1:]:
            seen[token] = True
    labelled_items = sorted({token - 10 for row in rows for token in row["labels"] if 10 <= token < 100})
    # Every item of a user, 0-based: 1..n-3 are targets; a user of 3 items has no training target.
    per_user = []
    for row in rows:
        per_user += [token - 10 for token in row["labels"] if 10 <= token < 100]
    expected = [k for n in (4, 7, 12) for k in range(1, n - 2)]
    assert sorted(per_user) == sorted(expected)
    assert labelled_items == sorted(set(expected))
    # Items n-2 and n-1 of the longest user never enter a stream as input either.
    assert 10 + 10 not in seen and 10 + 11 not in seen
    batch = CausalStreamCollator(0)(rows)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert bool((batch["labels"][batch["attention_mask"] == 0] == -100).all())


@pytest.mark.parametrize("family, positions", [("gpt2", "start"), ("llama", "start"), ("gpt2", "end")])
def test_scores_are_teacher_forced_log_probabilities_with_left_padded_prompts(family, positions):
    id_map = tiny_id_map()
    model = tiny_causal(id_map, family, positions=positions)
    histories = [
        ["item3"],
        ["item5", "item7", "item1"],
        ["item2", "item9", "item4", "item11", "item0", "item6", "item8"],
    ]
    texts = [model.render_history(history) for history in histories]
    results = model.retrieve(texts, top_k=5, num_beams=8, batch_size=3)
    for history, hits in zip(histories, results):
        assert len(hits) == 5
        for hit in hits:
            assert hit["score"] == pytest.approx(teacher_forced_score(model, history, hit["doc_id"]), abs=1e-4)
        # Alone (no padding) the same history gives the same ranking and scores.
        alone = model.retrieve([model.render_history(history)], top_k=5, num_beams=8)[0]
        assert [hit["doc_id"] for hit in alone] == [hit["doc_id"] for hit in hits]


def test_shared_prompt_beam_search_equals_generate():
    """The fast path (prompt encoded once, cache copied to the beams) returns what transformers' beam search does."""
    id_map = tiny_id_map()
    model = tiny_causal(id_map)
    texts = [model.render_history(["item1", "item2"]), model.render_history(["item4"])]
    encoded = model.encode_queries(texts, model.tokenizer)
    rows, scores = model.decode_rows(encoded["input_ids"], encoded["attention_mask"], num_beams=6)
    output = model.generate(
        **encoded,
        num_beams=6,
        num_return_sequences=6,
        max_new_tokens=3,
        return_dict_in_generate=True,
        output_scores=True,
    )
    tokens = output.sequences[:, encoded["input_ids"].shape[1] :]
    expected_rows = id_map.rows_of(model.tokens_to_codes(tokens)).view(2, 6)
    assert torch.equal(rows, expected_rows)
    assert torch.allclose(scores, output.sequences_scores.view(2, 6), atol=1e-4)


def test_decoding_emits_only_ids_whatever_the_prompt_length_and_beam_count():
    id_map = tiny_id_map(7)  # fewer IDs than beams
    model = tiny_causal(id_map)
    histories = [[f"item{k}" for k in range(length)] for length in range(1, 7)]
    results = model.retrieve([model.render_history(h) for h in histories], top_k=7, num_beams=12, batch_size=6)
    for hits in results:
        assert sorted(hit["doc_id"] for hit in hits) == sorted(id_map.doc_ids)


def test_save_load_and_pipeline_round_trip(tmp_path):
    from transformers import pipeline

    from lmindexer.hub_cards import LMIndexerCardData

    model = tiny_causal(tiny_id_map())
    model.card_data = LMIndexerCardData(task="recommendation", datasets=["walks"])
    folder = tmp_path / "causal"
    model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    card = (folder / "README.md").read_text()
    # The card's usage renders a history of map items, as the model reads them, not free text.
    assert 'query = model.render_history(["item0", "item1"])' in card and "semantic-ID tokens" in card
    text = model.render_history(["item3", "item8"])
    expected = model.retrieve([text], top_k=4, num_beams=6)[0]
    loaded = AutoModel.from_pretrained(folder).eval()
    assert type(loaded) is LMIndexerForGenerativeRetrieval and loaded.config.is_causal
    assert loaded.render_history(["item3", "item8"]) == text
    assert loaded.retrieve([text], tokenizer=AutoTokenizer.from_pretrained(folder), top_k=4, num_beams=6)[0] == expected
    piped = pipeline("generative-retrieval", model=str(folder), trust_remote_code=True)(text, top_k=4, num_beams=6)
    assert [hit["doc_id"] for hit in piped] == [hit["doc_id"] for hit in expected]


REMOTE_LOADER = textwrap.dedent(
    """
    import importlib.abc, json, sys
    BLOCKED = {"lmindexer", "modeling_lmindexer", "trainers", "hub_cards"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, Block())
    sys.path = [p for p in sys.path if p not in ("", REPO_ROOT)]
    from transformers import AutoModel, AutoTokenizer
    folder = sys.argv[1]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    text = model.render_history(["item3", "item8"])
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    hits = model.retrieve([text], tokenizer=tokenizer, top_k=4, num_beams=6)[0]
    print(json.dumps({"hits": hits, "module": type(model).__module__,
                      "imported_project": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}))
    """
).replace("REPO_ROOT", repr(str(REPO_ROOT)))


@pytest.mark.slow
def test_remote_code_round_trip(tmp_path):
    model = tiny_causal(tiny_id_map())
    folder = tmp_path / "causal"
    model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    assert (folder / "causal_decoding.py").is_file()
    expected = model.retrieve([model.render_history(["item3", "item8"])], top_k=4, num_beams=6)[0]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_LOADER, str(folder)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["imported_project"] == [] and remote["module"].startswith("transformers_modules.")
    assert [hit["doc_id"] for hit in remote["hits"]] == [hit["doc_id"] for hit in expected]
    assert [hit["score"] for hit in remote["hits"]] == pytest.approx([hit["score"] for hit in expected], abs=1e-5)


def write_sequence_data(folder: Path, users: int = 40, items: int = 12) -> None:
    """Users who walk the catalogue in order (item k is followed by item k+1): a recommender that learns the
    stream predicts the next item; popularity cannot. (With at most 3 history items, every prompt position of the
    test users is trained: GPT-2's positions are learned, and these users are all as long.)"""
    write_jsonl([{"item_id": f"item{k}", "title": f"title {k}"} for k in range(items)], folder / "items.jsonl")
    write_jsonl(
        [{"user_id": f"u{u}", "items": [f"item{(u + step) % items}" for step in range(6)]} for u in range(users)],
        folder / "sequences.jsonl",
    )


# A small run of the CPU preset on a synthetic next-item task (sizes and epochs scaled down by flags).
PRESET_CPU_SMALL = (
    "--causal_layers 2 --causal_hidden_size 64 --num_train_epochs 30 --per_device_train_batch_size 8 "
    "--learning_rate 1e-2 --validation_users 8 --eval_num_beams 6 --eval_ks 1,5 --metric_for_best_model recall@1 "
    "--max_history 3 --report_to none --disable_tqdm true --use_cpu true"
).split()


@pytest.mark.slow
def test_finetune_preset_cpu_learns_the_next_item(tmp_path):
    from lmindexer.trainers.cli import main

    data = tmp_path / "data"
    data.mkdir()
    write_sequence_data(data)
    indexer = tmp_path / "ids"
    indexer.mkdir()
    tiny_id_map(12, titles=False).save(indexer / "semantic_id_map.safetensors")
    output = tmp_path / "rec"
    warnings = []
    catcher = logging.Handler(logging.WARNING)
    catcher.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("transformers").addHandler(catcher)
    try:
        status = main(
            ["finetune", "--preset", "cpu", "--indexer", str(indexer), "--data", str(data), "--output_dir", str(output)]
            + PRESET_CPU_SMALL
        )
    finally:
        logging.getLogger("transformers").removeHandler(catcher)
    assert status == 0
    # Reloading the best checkpoint of a tied GPT-2 re-ties its head instead of calling it missing.
    assert not [message for message in warnings if "missing keys" in message]
    metrics = json.loads((output / "retrieval_metrics.json").read_text())
    assert metrics["preset"] == "cpu"
    assert metrics["test_recall@1"] >= 0.75  # popularity scores 1/12 here: every item is equally popular
    curve = metrics["learning_curve"]
    assert len(curve) == 30 and all(entry["eval_train_seconds"] > 0 for entry in curve)
    # The best epoch on the validation users is the model kept.
    newest = max(output.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    state = json.loads((newest / "trainer_state.json").read_text())
    assert state["best_metric"] == max(entry["eval_recall@1"] for entry in curve)
    loaded = AutoModel.from_pretrained(output)
    assert loaded.config.is_causal and loaded.config.history_format == "ids" and loaded.config.history_separator == ""
    hits = loaded.eval().retrieve([loaded.render_history(["item2", "item3", "item4"])], top_k=1, num_beams=6)[0]
    assert hits[0]["doc_id"] == "item5"


def test_preset_defaults_give_way_to_flags():
    from lmindexer.trainers.cli import parse

    finetune, data, training = parse("finetune", ["--preset", "cpu", "--indexer", "x", "--learning_rate", "1e-3"])
    assert (finetune.architecture, finetune.preset, data.history_format) == ("causal", "cpu", "ids")
    assert training.learning_rate == 1e-3 and training.num_train_epochs == 20 and training.load_best_model_at_end
    with pytest.raises(ValueError, match="not a preset of `lmindexer finetune`"):
        parse("finetune", ["--preset", "huge"])


def test_index_preset_cpu_is_the_benchmark_script():
    """`lmindexer index --preset cpu` resolves to the flags of benchmarks/run_bench_lmindexer.sh."""
    from lmindexer.trainers.cli import parse

    script = (REPO_ROOT / "benchmarks" / "run_bench_lmindexer.sh").read_text()
    words = script.split("lmindexer bench ids", 1)[1].replace("\\\n", " ").split()
    flags = {}
    for index, word in enumerate(words):
        if word.startswith("--") and index + 1 < len(words) and not words[index + 1].startswith("--"):
            flags[word[2:]] = words[index + 1]
    dataset_specific = {
        "data",
        "text_fields",
        "methods",
        "seeds",
        "id_length",
        "codebook_size",
        "backbone",
        "max_length",
        "output_dir",
        "output",
        "disable_tqdm",
        "report_to",
    }
    argv = [word for name, value in flags.items() if name not in dataset_specific for word in (f"--{name}", value)]
    assert len(argv) == 2 * 14
    preset_index, preset_training = parse("index", ["--preset", "cpu"])
    flag_index, flag_training = parse("index", argv)
    assert preset_index.preset == "cpu"
    flag_index.preset = "cpu"
    assert vars(preset_index) == vars(flag_index)
    assert preset_training.to_dict() == flag_training.to_dict()


def test_id_output_vocabulary_normalises_over_ids_and_eos_in_training_and_decoding(
    demo_items, demo_tokenizer, tmp_path
):
    tokenizer = copy.deepcopy(demo_tokenizer)
    torch.manual_seed(0)
    backbone = T5ForConditionalGeneration(tiny_t5_config(len(tokenizer), 32))
    model = LMIndexerForGenerativeRetrieval.from_backbone_and_map(backbone, tokenizer, tiny_id_map()).eval()
    query = "red lipstick"
    encoded = model.encode_queries([query], tokenizer)
    labels = torch.cat(
        [
            model.codes_to_tokens(torch.tensor([model.id_map.semantic_id("item5")])),
            torch.tensor([[model.eos_token_id]]),
        ],
        1,
    )
    with torch.no_grad():
        full = model(**encoded, labels=labels)
    model.config.output_vocabulary = "ids"
    model.install_id_token_scoring()
    with torch.no_grad():
        restricted = model(**encoded, labels=labels)
    allowed = torch.zeros(full.logits.shape[-1], dtype=torch.bool)
    for start, size in zip(model.config.id_token_offsets, model.config.id_vocabulary_sizes):
        allowed[start : start + size] = True
    allowed[model.eos_token_id] = True
    # The loss is the cross-entropy of the softmax over ID tokens and EOS only.
    expected = torch.nn.functional.cross_entropy(
        full.logits[0][:, allowed], torch.tensor([int(allowed[:token].sum()) for token in labels[0].tolist()])
    )
    assert float(restricted.loss) == pytest.approx(float(expected), abs=1e-4)
    assert float(restricted.loss) < float(full.loss)
    # Decoding scores are the same log-probabilities, and the setting survives saving.
    hit = model.retrieve([query], tokenizer=tokenizer, top_k=1, num_beams=4)[0][0]
    target = torch.cat(
        [model.codes_to_tokens(torch.tensor([hit["semantic_id"]])), torch.tensor([[model.eos_token_id]])], 1
    )
    with torch.no_grad():
        logits = model(**encoded, labels=target).logits
    log_probs = logits.float().log_softmax(-1).gather(2, target[..., None]).squeeze(-1)
    assert hit["score"] == pytest.approx(float(log_probs.sum() / target.shape[1]), abs=1e-4)
    model.save_pretrained(tmp_path / "restricted")
    tokenizer.save_pretrained(tmp_path / "restricted")
    loaded = LMIndexerForGenerativeRetrieval.from_pretrained(tmp_path / "restricted").eval()
    assert loaded.retrieve([query], tokenizer=tokenizer, top_k=1, num_beams=4)[0][0]["doc_id"] == hit["doc_id"]
