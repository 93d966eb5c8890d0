"""Text embeddings of item titles and descriptions (sentence-transformers)."""
