"""Everything that trains, evaluates and compares, room by room, in the order a run goes through them:

- `indexer/`: training an LMIndexer indexer (Algorithm 1 as HF Trainer stages), and what every ID method shares
  (ID layout, k-means, ID diagnostics);
- `id_methods/`: the ways to make semantic IDs (`lmindexer index --method`), and the API of `index` / `assign`;
- `downstream/`: fine-tuning and evaluating a generative retriever or recommender on an indexer's IDs;
- `bench/`: the comparisons of `lmindexer bench ids|rec|retrieval`;
- `data/`: what goes in (corpora, embeddings, the demo catalogue); `folders/`: what comes out, written safely;
- `cli.py`, `presets.py`: the `lmindexer` command line and its named defaults.
"""
