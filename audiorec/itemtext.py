"""The text of an item that the sentence encoder reads: one rule for the daily text step
(training/text/embed.py) and for titles published to a running server (RecordItems), so a
title embedded live and the same title embedded by the next daily run read the same text.
"""

from __future__ import annotations


def item_text(title: object, description: object) -> str:
    """``"<title>. <description>"`` (as the catalogue's embeddings have always read it)."""
    return f"{title}. {description}"
