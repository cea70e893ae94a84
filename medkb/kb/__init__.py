"""Storage: the schema, the KnowledgeStore interface and its SQLite and TiDB backends."""
