"""Training side of lmindexer: indexer training, ID methods, downstream fine-tuning, corpus loading and the CLI."""
