"""Indexer training: LMIndexer's progressive training (Algorithm 1 of the paper) as HF Trainer stages, its resume
and corpus-wide passes, and what every ID method shares (ID layout, k-means, ID diagnostics).

Nothing here imports the downstream package or a bench (`tests/test_layout.py` checks it)."""
