"""Ingestion: parsers, chunking, de-identification and the pipelines that fill the knowledge base."""
