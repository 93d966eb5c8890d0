"""Offline evaluation with the paper's protocol (PAPER.md, "Evaluation protocol")."""
