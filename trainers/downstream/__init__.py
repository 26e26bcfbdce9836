"""Downstream: a generative retriever or recommender fine-tuned on an indexer's IDs (`finetuning`), its data
(`data`, `collators`), training and evaluation by constrained beam search (`retrieval_trainer`, `evaluation`,
`ranking_metrics`), and the causal ID-stream recommender (its ID-only vocabulary, per-user training streams and
collator, and how it is built from an indexer folder: `causal_recommender`, `id_streams`)."""
