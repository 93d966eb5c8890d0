"""Nearest-neighbour indexes of item vectors (hnswlib), self-describing on disk."""
