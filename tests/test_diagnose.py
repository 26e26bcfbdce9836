"""The health checks of `lmindexer diagnose`, each against a case whose answer is known."""

import numpy as np
import pytest
import torch
from conftest import tiny_indexer_config

from lmindexer import LMIndexerForSemanticID
from lmindexer.trainers.indexer.diagnose import reconstruction_losses, shared_component_share, verdicts


def test_shared_component_share_by_hand():
    same = np.tile(np.array([[3.0, 4.0]]), (5, 1))
    assert shared_component_share(same) == pytest.approx(1.0)
    opposite = np.array([[1.0, 2.0], [-1.0, -2.0]])
    assert shared_component_share(opposite) == pytest.approx(0.0)
    # mean (1, 0): |mean|^2 = 1; mean |v|^2 = (4 + 0) / 2 = 2 for v = (2, 0) and (0, 0).
    assert shared_component_share(np.array([[2.0, 0.0], [0.0, 0.0]])) == pytest.approx(0.5)


class WordTokenizer:
    """Whitespace tokens over a fixed vocabulary, padded to the longest text: enough for the loss checks."""

    def __init__(self, vocabulary_size: int):
        self.vocabulary_size = vocabulary_size

    def __call__(self, texts, max_length, truncation, padding, return_tensors):
        rows = [[int(word) % self.vocabulary_size for word in text.split()][:max_length] for text in texts]
        width = max(len(row) for row in rows)
        input_ids = torch.tensor([row + [0] * (width - len(row)) for row in rows])
        attention_mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
        return _Batch(input_ids=input_ids, attention_mask=attention_mask)


class _Batch(dict):
    def to(self, device):
        return _Batch({key: value.to(device) for key, value in self.items()})


def test_a_reconstructor_that_ignores_the_ids_is_named():
    torch.manual_seed(0)
    model = LMIndexerForSemanticID(tiny_indexer_config(id_length=2, codebook_sizes=[6, 5]))
    texts = [" ".join(str(3 + (i * 7 + j * 5) % 100) for j in range(10)) for i in range(24)]
    codes = np.stack([np.arange(24) % 6, np.arange(24) % 5], axis=1)
    healthy = reconstruction_losses(model, WordTokenizer(120), texts, codes, 16, 8, seed=0)
    # Cut the ID vector out of the reconstructor: its query is then the same for every document.
    with torch.no_grad():
        model.reconstructor.id_projection.weight.zero_()
    ignored = reconstruction_losses(model, WordTokenizer(120), texts, codes, 16, 8, seed=0)
    for entry in ignored:
        assert entry["true_ids"] == pytest.approx(entry["shuffled_ids"]) == pytest.approx(entry["zero_ids"])
    assert any(abs(entry["true_ids"] - entry["shuffled_ids"]) > 1e-4 for entry in healthy)
    report = {
        "positions": [
            {
                "position": t,
                "reconstruction_loss": losses,
                "nmi_with_prefix": None,
                "diff_ratio": 1.0,
                "shared_share_scored": 0.1,
            }
            for t, losses in enumerate(ignored, start=1)
        ]
    }
    assert all("ignores the IDs" in line for line in verdicts(report))


def test_verdicts_name_lowered_quality_copied_prefix_and_a_shared_component():
    losses = {"true_ids": 3.0, "shuffled_ids": 4.0, "zero_ids": 4.5}
    report = {
        "untrained_vs_trained": {"untrained_ami_c1": 0.29, "trained_ami_c1": 0.17},
        "positions": [
            {
                "position": 1,
                "reconstruction_loss": losses,
                "nmi_with_prefix": None,
                "diff_ratio": 1.0,
                "shared_share_scored": 0.99,
            },
            {
                "position": 2,
                "reconstruction_loss": losses,
                "nmi_with_prefix": 0.97,
                "diff_ratio": 0.05,
                "shared_share_scored": 0.2,
            },
        ],
    }
    lines = verdicts(report)
    assert lines[0].startswith("PROBLEM: training lowered")
    assert any("mostly repeats the earlier codes" in line for line in lines)
    assert any("position 1" in line and "shared by every document" in line for line in lines)
    assert sum(line.startswith("OK:") for line in lines) == 2  # both positions use their IDs
