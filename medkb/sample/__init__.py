"""The sample knowledge base for `make run`: a committed MIT slice of PubMedQA and Synthea plus PyPI ontologies."""
