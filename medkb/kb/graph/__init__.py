"""The knowledge graph: relation vocabulary, entity linking, traversal and safety facts over the edge tables."""
