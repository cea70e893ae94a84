"""medkb: a medical RAG knowledge service (relational + graph + vector in one database)."""

__version__ = "0.1.0"
