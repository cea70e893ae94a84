"""Storage: the schema, the KnowledgeStore interface and its SQLite, MySQL/MariaDB and TiDB backends."""
