import random

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from lmindexer.modeling_lmindexer.trie import SemanticIDTrie, TrieConstrainedLogitsProcessor


def reference_allowed(sequences, prefix):
    """Plain-Python trie: tokens that follow `prefix` in any sequence."""
    return sorted({seq[len(prefix)] for seq in sequences if list(seq[: len(prefix)]) == list(prefix)})


@pytest.mark.parametrize("seed", range(12))
def test_every_step_matches_a_python_reference(seed):
    rng = random.Random(seed)
    depth = rng.randint(1, 5)
    sizes = [rng.randint(1, 9) for _ in range(depth)]
    offsets = [3 + sum(sizes[:level]) for level in range(depth)]  # disjoint token range per position, like <id_t_k>
    sequences = sorted(
        {
            tuple(offsets[level] + rng.randrange(sizes[level]) for level in range(depth))
            for _ in range(rng.randint(1, 60))
        }
    )
    trie = SemanticIDTrie(torch.tensor(sequences))
    assert trie.num_sequences == len(sequences)
    prefixes = {seq[:cut] for seq in sequences for cut in range(depth)}
    prefixes |= {
        tuple(rng.randrange(3, offsets[-1] + sizes[-1] + 2) for _ in range(rng.randint(0, depth - 1)))
        for _ in range(30)
    }
    for prefix in prefixes:
        assert trie.allowed_tokens(list(prefix)) == reference_allowed(sequences, prefix), prefix
    # The processor allows exactly the reference set, per row, for a batch of mixed prefixes at one depth.
    vocab = offsets[-1] + sizes[-1] + 3
    processor = TrieConstrainedLogitsProcessor(trie, eos_token_id=1)
    for cut in range(depth + 1):
        rows = [seq[:cut] for seq in sequences][:16]
        input_ids = torch.tensor([[0, *row] for row in rows])
        scores = torch.randn(len(rows), vocab)
        constrained = processor(input_ids, scores.clone())  # the processor writes in place
        for row, prefix in enumerate(rows):
            allowed = torch.isfinite(constrained[row]).nonzero().flatten().tolist()
            expected = [1] if cut == depth else reference_allowed(sequences, prefix)
            assert allowed == expected
            assert torch.equal(constrained[row, allowed], scores[row, allowed])
    assert trie.contains(torch.tensor(sequences)).all()


def test_prefix_outside_the_trie_may_only_end():
    trie = SemanticIDTrie(torch.tensor([[5, 7], [6, 7]]))
    constrained = TrieConstrainedLogitsProcessor(trie, eos_token_id=1)(torch.tensor([[0, 9]]), torch.zeros(1, 12))
    assert torch.isfinite(constrained[0]).nonzero().flatten().tolist() == [1]


def tiny_seq2seq(vocab_size=64):
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5ForConditionalGeneration(config).eval()


def random_ids(count, sizes, offsets, seed=0):
    rng = random.Random(seed)
    return sorted({tuple(o + rng.randrange(s) for o, s in zip(offsets, sizes)) for _ in range(count)})


def test_twenty_beams_return_only_valid_ids_for_a_batch():
    sizes, offsets = [6, 6, 4], [10, 16, 22]
    sequences = random_ids(300, sizes, offsets)
    trie = SemanticIDTrie(torch.tensor(sequences))
    model = tiny_seq2seq()
    inputs = torch.randint(3, 64, (3, 7))
    output = model.generate(
        input_ids=inputs,
        num_beams=20,
        num_return_sequences=20,
        max_new_tokens=5,
        do_sample=False,
        logits_processor=[TrieConstrainedLogitsProcessor(trie, eos_token_id=1)],
        output_scores=True,
        return_dict_in_generate=True,
    )
    generated = output.sequences
    assert generated.shape[0] == 3 * 20
    ids = generated[:, 1:4]
    assert trie.contains(ids).all()
    assert (generated[:, 4] == 1).all()  # EOS right after the ID
    for query in range(3):  # beams of one query are 20 distinct IDs
        assert len({tuple(row) for row in ids[query * 20 : (query + 1) * 20].tolist()}) == 20
    # Layout: each query's block equals generating that query alone.
    alone = model.generate(
        input_ids=inputs[1:2],
        num_beams=20,
        num_return_sequences=20,
        max_new_tokens=5,
        logits_processor=[TrieConstrainedLogitsProcessor(trie, eos_token_id=1)],
    )
    assert torch.equal(alone[:, 1:4], ids[20:40])


def test_fewer_ids_than_beams_does_not_crash_or_invent_ids():
    trie = SemanticIDTrie(torch.tensor([[10, 16], [10, 17], [11, 16]]))
    model = tiny_seq2seq()
    output = model.generate(
        input_ids=torch.randint(3, 64, (2, 5)),
        num_beams=8,
        num_return_sequences=8,
        max_new_tokens=4,
        logits_processor=[TrieConstrainedLogitsProcessor(trie, eos_token_id=1)],
        output_scores=True,
        return_dict_in_generate=True,
    )
    ids = output.sequences[:, 1:3]
    valid = trie.contains(ids)
    scores = output.sequences_scores
    # The three real IDs come first with finite scores; the other beams are marked by -inf scores or fail `contains`.
    for query in range(2):
        block = slice(query * 8, query * 8 + 8)
        finite = torch.isfinite(scores[block]) & (scores[block] > -1e3)
        assert sorted({tuple(r) for r in ids[block][valid[block] & finite].tolist()}) == [(10, 16), (10, 17), (11, 16)]


def test_bad_trie_input():
    with pytest.raises(ValueError, match="non-empty"):
        SemanticIDTrie(torch.zeros(0, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="non-negative"):
        SemanticIDTrie(torch.tensor([[1, -2]]))
