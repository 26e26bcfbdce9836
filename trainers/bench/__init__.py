"""`lmindexer bench ids|rec|retrieval`: comparisons of ID methods, one module per bench and one (`results`) for what
they share; no bench imports another."""
