"""Offline evaluation harness: BEIR retrieval, MIRAGE/PubMedQA QA, reports, comparisons, pinned baselines."""
