"""Downstream fine-tuning pieces: the causal ID-stream recommender (its ID-only vocabulary, per-user training
streams and collator, and how it is built from an indexer folder)."""
