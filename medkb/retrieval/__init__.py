"""The hybrid retriever: BM25, dense, graph and patient generators fused into one traced ranking."""
