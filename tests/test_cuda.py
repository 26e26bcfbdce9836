"""The models on a CUDA device give what they give on the CPU, the trie processor never makes the host wait inside
decoding, and bf16 training steps learn.

Every test here is marked `cuda`: it runs on "cuda" when there is one and is skipped otherwise, except in the CPU
rehearsal of `bash benchmarks/gpu/run.sh --smoke` (`LMINDEXER_CUDA_TESTS_ON_CPU=1`), where the same code runs on
"cpu" so that it cannot rot while no GPU is lent. The expected values are always computed on the CPU in fp32.
"""

import copy
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_retriever, random_batch, tiny_indexer_config
from test_causal_recommender import teacher_forced_score, tiny_causal, tiny_id_map
from transformers import AutoModel, LogitsProcessor, pipeline

from lmindexer import (
    LMIndexerForSemanticID,
    SemanticIDTrie,
    TrieConstrainedLogitsProcessor,
)
from lmindexer.trainers.downstream.id_streams import (
    CausalStreamCollator,
    causal_training_streams,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "gpu"))
from suite_common import HostSyncCounter

pytestmark = pytest.mark.cuda

QUERIES = ["gentle cleanser", "lip balm for dry lips", "hair spray", "red nail polish"]
HISTORIES = [["item3"], ["item5", "item7", "item1"], ["item2", "item9", "item4", "item11", "item0"]]
# A bf16 forward rounds every activation to 8 significant bits. In these tiny models the CPU's bf16 scores differ
# from the fp32 ones by at most 0.008 (measured); 0.05 leaves room for other kernels. That every score belongs to
# its own ID is checked exactly in fp32 (2e-4) by the test above.
BF16_SCORE_TOLERANCE = 0.05


def seq2seq_teacher_forced_score(model, tokenizer, query: str, semantic_id) -> float:
    """Mean log-probability (fp32, whole vocabulary) of an ID's tokens and EOS after `query`: a hit's exact score."""
    encoded = model.encode_queries([query], tokenizer)
    labels = torch.cat([model.codes_to_tokens(torch.tensor([semantic_id])), torch.tensor([[model.eos_token_id]])], 1)
    with torch.no_grad():
        logits = model(**encoded, labels=labels).logits
    return float(logits.float().log_softmax(-1).gather(2, labels[..., None]).sum() / labels.shape[1])


@pytest.fixture
def seq2seq(demo_items, demo_tokenizer, tmp_path):
    model, tokenizer = build_tiny_retriever(demo_items, demo_tokenizer)
    model.save_pretrained(tmp_path / "seq2seq")
    tokenizer.save_pretrained(tmp_path / "seq2seq")
    return model, tokenizer, tmp_path / "seq2seq", QUERIES


@pytest.fixture
def causal(tmp_path):
    model = tiny_causal(tiny_id_map())
    model.save_pretrained(tmp_path / "causal")
    model.tokenizer.save_pretrained(tmp_path / "causal")
    return model, model.tokenizer, tmp_path / "causal", [model.render_history(history) for history in HISTORIES]


@pytest.fixture(params=["seq2seq", "causal"])
def retriever_kind(request):
    """(CPU model, tokenizer, saved folder, inputs) of each kind of retriever."""
    return request.getfixturevalue(request.param)


def test_indexer_loaded_with_remote_code_on_the_device_assigns_the_cpu_codes(tmp_path, cuda_device):
    torch.manual_seed(0)
    indexer = LMIndexerForSemanticID(tiny_indexer_config()).eval()
    indexer.save_pretrained(tmp_path / "indexer")
    input_ids, attention_mask = random_batch(batch_size=32)
    expected = indexer.assign_codes(input_ids, attention_mask)
    loaded = AutoModel.from_pretrained(tmp_path / "indexer", trust_remote_code=True).eval().to(cuda_device)
    codes = loaded.assign_codes(input_ids.to(cuda_device), attention_mask.to(cuda_device))
    assert codes.device.type == cuda_device
    assert torch.equal(codes.cpu(), expected)


def test_retrieve_and_pipeline_on_the_device_give_the_cpu_ids_and_scores(retriever_kind, cuda_device):
    model, tokenizer, folder, inputs = retriever_kind
    expected = model.retrieve(inputs, tokenizer=tokenizer, top_k=5, num_beams=8)
    loaded = AutoModel.from_pretrained(folder, trust_remote_code=True).eval().to(cuda_device)
    assert next(loaded.parameters()).device.type == cuda_device
    retrieved = loaded.retrieve(inputs, tokenizer=tokenizer, top_k=5, num_beams=8)
    piped = pipeline("generative-retrieval", model=str(folder), trust_remote_code=True, device=cuda_device)(
        inputs, top_k=5, num_beams=8
    )
    for got in (retrieved, piped):
        assert [[hit["doc_id"] for hit in hits] for hits in got] == [
            [hit["doc_id"] for hit in hits] for hits in expected
        ]
        for hits, expected_hits in zip(got, expected):
            assert [hit["score"] for hit in hits] == pytest.approx([hit["score"] for hit in expected_hits], abs=2e-4)


def test_bf16_retrieve_scores_are_the_fp32_scores_of_the_same_ids(retriever_kind, cuda_device):
    model, tokenizer, folder, inputs = retriever_kind
    loaded = AutoModel.from_pretrained(folder, trust_remote_code=True).eval().to(cuda_device, torch.bfloat16)
    results = loaded.retrieve(inputs, tokenizer=tokenizer, top_k=5, num_beams=8)
    for text, hits in zip(inputs, results):
        assert len(hits) == 5
        for hit in hits:
            assert (
                hit["doc_id"] in model.id_map and tuple(model.id_map.semantic_id(hit["doc_id"])) == hit["semantic_id"]
            )
            if model.config.is_causal:
                history = HISTORIES[inputs.index(text)]
                exact = teacher_forced_score(model, history, hit["doc_id"])
            else:
                exact = seq2seq_teacher_forced_score(model, tokenizer, text, hit["semantic_id"])
            assert hit["score"] == pytest.approx(exact, abs=BF16_SCORE_TOLERANCE)


class RecordingProcessor(LogitsProcessor):
    """Wraps a logits processor and keeps a CPU copy of every call's input ids, scores in and scores out."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def __call__(self, input_ids, scores):
        before = scores.detach().cpu().clone()
        output = self.inner(input_ids, scores)
        self.calls.append((input_ids.cpu().clone(), before, output.detach().cpu().clone()))
        return output


def test_trie_processor_on_the_device_equals_the_cpu_one_at_every_step(seq2seq, cuda_device):
    model, tokenizer, _, queries = seq2seq
    model = copy.deepcopy(model).to(cuda_device)
    recorder = RecordingProcessor(model.trie_processor(raise_on_dead_end=False))
    encoded = model.encode_queries(queries, tokenizer).to(cuda_device)
    with torch.no_grad():
        model.backbone.generate(
            **encoded,
            num_beams=6,
            num_return_sequences=6,
            max_new_tokens=model.trie.depth + 1,
            logits_processor=[recorder],
        )
    assert len(recorder.calls) == model.trie.depth + 1  # every ID token, then EOS
    cpu_trie = SemanticIDTrie(model.codes_to_tokens(model.id_map.semantic_ids))
    cpu_processor = TrieConstrainedLogitsProcessor(
        cpu_trie,
        eos_token_id=model.eos_token_id,
        raise_on_dead_end=False,
        pad_token_id=model.generation_config.pad_token_id,
    )
    for step, (input_ids, before, after) in enumerate(recorder.calls):
        expected = cpu_processor(input_ids, before.clone())
        assert torch.equal(after, expected), f"step {step}"
        assert bool(torch.isfinite(after).any(1).all())  # every row keeps a token


def test_trie_processor_never_makes_the_host_wait_inside_decoding(retriever_kind, cuda_device, monkeypatch):
    """Counted around every processor call of real `retrieve` calls (HF `generate` for seq2seq, the prefix-shared
    beam search for causal): CUDA's own synchronisation count on a GPU, and Python reads of tensor values anywhere."""
    model, tokenizer, _, inputs = retriever_kind
    model = copy.deepcopy(model).to(cuda_device)
    counter = HostSyncCounter(cuda_device)
    calls = []
    original = TrieConstrainedLogitsProcessor.__call__

    def counted(self, input_ids, scores):
        calls.append(input_ids.shape[1])
        with counter:
            return original(self, input_ids, scores)

    monkeypatch.setattr(TrieConstrainedLogitsProcessor, "__call__", counted)
    hits = model.retrieve(inputs, tokenizer=tokenizer, top_k=5, num_beams=8, batch_size=2)
    assert all(len(ranked) == 5 for ranked in hits)
    steps = model.trie.depth + (0 if model.config.is_causal else 1)
    assert len(calls) == steps * 2  # two batches
    assert (dict(counter.reads), counter.cuda_syncs) == ({}, 0)


def test_bf16_indexer_steps_lower_the_loss(cuda_device):
    torch.manual_seed(0)
    indexer = LMIndexerForSemanticID(tiny_indexer_config()).to(cuda_device).train()
    input_ids, attention_mask = random_batch(batch_size=16, length=12)
    generator = torch.Generator().manual_seed(1)
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "prefix_codes": torch.randint(0, 6, (16, 1), generator=generator),
        "hint_visible": torch.rand(input_ids.shape, generator=generator) < 0.5,
    }
    batch = {key: value.to(cuda_device) for key, value in batch.items()}
    losses = bf16_steps(indexer, lambda: indexer(**batch, position=2, mode="straight_through").loss, cuda_device)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0], losses


def test_bf16_recommender_steps_lower_the_loss(cuda_device):
    model = tiny_causal(tiny_id_map()).to(cuda_device).train()
    id_map = model.id_map
    item_tokens = dict(zip(id_map.doc_ids, model.codes_to_tokens(id_map.semantic_ids).tolist()))
    users = [[f"item{(user + step) % 24}" for step in range(6)] for user in range(16)]
    rows = causal_training_streams(users, item_tokens, model.tokenizer.bos_token_id)
    batch = {
        key: value.to(cuda_device) for key, value in CausalStreamCollator(model.tokenizer.pad_token_id)(rows).items()
    }
    losses = bf16_steps(model, lambda: model(**batch).loss, cuda_device)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0], losses


def bf16_steps(model, loss_of_batch, device: str, steps: int = 12) -> list[float]:
    """AdamW steps under bf16 autocast (fp32 weights, as Trainer's --bf16) on one fixed batch; the loss of each."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            loss = loss_of_batch()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    return losses
