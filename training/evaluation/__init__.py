"""Offline evaluation with the paper's protocol (docs/paper.md, "Evaluation protocol")."""
