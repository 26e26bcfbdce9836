"""Data in: corpora (jsonl, csv, parquet or Hub datasets), sentence embeddings for two-stage methods, and the
generated demo catalogue."""
