"""Card plots draw on bare matplotlib Figures: writing a card never touches the user's backend or pyplot."""

import sys

import matplotlib
from conftest import build_tiny_retriever

from lmindexer.hub_cards import label_distribution_table, write_model_card
from lmindexer.hub_cards.card_data import LMIndexerCardData


def test_writing_a_card_leaves_the_matplotlib_backend_alone(demo_items, demo_tokenizer, tmp_path, monkeypatch):
    model, _ = build_tiny_retriever(demo_items, demo_tokenizer)
    card_data = LMIndexerCardData(
        label_field="category",
        label_distribution=label_distribution_table(
            [i % 3 for i in range(len(demo_items))], [item["category"] for item in demo_items]
        ),
    )
    # A non-Agg backend, as a notebook user might have; restored by monkeypatch afterwards.
    monkeypatch.setitem(matplotlib.rcParams, "backend", "svg")

    def forbidden_use(*args, **kwargs):
        raise AssertionError(f"matplotlib.use{args} called while writing a card")

    monkeypatch.setattr(matplotlib, "use", forbidden_use)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # any `import matplotlib.pyplot` now fails
    write_model_card(model, tmp_path, card_data)
    assert matplotlib.get_backend() == "svg"
    for plot in ("codebook_usage", "prefix_density", "label_distribution"):
        assert (tmp_path / "assets" / f"{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
