"""PNG figures for the model card: codebook usage, documents per ID prefix, labels per first code.

Each figure is a bare `matplotlib.figure.Figure`, saved straight to PNG: no pyplot and no `matplotlib.use`, so
writing a card (e.g. from `save_pretrained` in a notebook) never switches the user's backend or opens a window,
and it renders on headless machines. Every function writes one file and returns its path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..modeling_lmindexer.semantic_id_map import prefix_keys

PLOT_FOLDER = "assets"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def codebook_usage_plot(semantic_ids: np.ndarray, codebook_sizes: list[int], path: Path) -> Path:
    """Per learned position: documents per code, codes sorted from most to least used."""
    positions = len(codebook_sizes)
    figure = _figure(3.6 * positions, 3.0)
    axes = figure.subplots(1, positions, squeeze=False)
    for index, size in enumerate(codebook_sizes):
        counts = np.sort(np.bincount(semantic_ids[:, index], minlength=size))[::-1]
        axis = axes[0, index]
        axis.bar(np.arange(size), counts, width=1.0, color="#3b6ea8")
        used = int((counts > 0).sum())
        axis.set_title(f"position {index + 1}: {used}/{size} codes used", fontsize=9)
        axis.set_xlabel("code (sorted by use)", fontsize=8)
        axis.set_ylabel("documents" if index == 0 else "", fontsize=8)
        axis.tick_params(labelsize=7)
    figure.tight_layout()
    return _save(figure, path)


def prefix_density_plot(semantic_ids: np.ndarray, codebook_sizes: list[int], path: Path) -> Path:
    """Per prefix length: how many documents share each prefix (log-spaced histogram)."""
    positions = len(codebook_sizes)
    figure = _figure(5.2, 3.2)
    axis = figure.subplots()
    for length in range(1, positions + 1):
        keys = prefix_keys(semantic_ids[:, :length], codebook_sizes)
        _, sizes = np.unique(keys, return_counts=True)
        bins = np.unique(np.geomspace(1, max(int(sizes.max()), 2) + 1, num=20).astype(int))
        axis.hist(sizes, bins=bins, histtype="step", linewidth=1.5, label=f"length {length} ({len(sizes)} prefixes)")
    axis.set_xscale("log")
    axis.set_xlabel("documents sharing the prefix", fontsize=8)
    axis.set_ylabel("prefixes", fontsize=8)
    axis.tick_params(labelsize=7)
    axis.legend(fontsize=7)
    figure.tight_layout()
    return _save(figure, path)


def label_distribution_plot(table: dict, path: Path, label_field: str | None = None) -> Path:
    """Share of each label among the documents of the most populated first codes (the paper's Figure 3)."""
    counts = np.asarray(table["counts"], dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure = _figure(1.2 + 0.75 * len(table["labels"]), 1.0 + 0.32 * len(table["codes"]))
    axis = figure.subplots()
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    axis.set_xticks(
        range(len(table["labels"])), [str(label)[:18] for label in table["labels"]], rotation=40, ha="right", fontsize=7
    )
    axis.set_yticks(
        range(len(table["codes"])),
        [f"c1={code} ({int(n)})" for code, n in zip(table["codes"], counts.sum(axis=1))],
        fontsize=7,
    )
    axis.set_xlabel(label_field or "label", fontsize=8)
    figure.colorbar(image, ax=axis, fraction=0.04, label="share of documents")
    figure.tight_layout()
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    # A Figure made without pyplot is not registered with any figure manager: nothing to close, it is freed
    # with its last reference.
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
