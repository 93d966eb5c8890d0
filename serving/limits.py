"""Bounds on every request field, checked before any work is done.

A request's cost must not grow with what the client sends: ids, ``k`` and the language
list are bounded here (and the whole message by the server's max receive size), so the
most a valid request can ask for is O(k + catalogue of one type). Error messages name the
limit and echo at most a short prefix of the client's input (:func:`echo`).
"""

from __future__ import annotations

from typing import Sequence

from pydantic import Field

from audiorec.config import StrictConfig
from audiorec.errors import InvalidRequest

ECHO_CHARS = 32


class RequestLimits(StrictConfig):
    max_id_chars: int = Field(256, ge=1, le=4096)  # user_id, item_id
    max_k: int = Field(1000, ge=1, le=100_000)
    max_languages: int = Field(16, ge=0, le=1000)  # distinct entries after dedup
    max_language_chars: int = Field(35, ge=1, le=256)  # longest BCP 47 tag in practice
    # The whole message: a Recommend at every limit is under 1 KiB; 16 KiB leaves room
    # for metadata and future fields while an oversized one is refused by gRPC itself.
    max_receive_bytes: int = Field(16 * 1024, ge=1024, le=4 * 1024 * 1024)
    # RecordItems (serving/live.py): titles per call and each text field's length (the
    # whole message is bounded by max_receive_bytes as well: a few long titles per call
    # at the default, more with a larger limit)
    max_items_per_call: int = Field(100, ge=1, le=10_000)
    max_title_chars: int = Field(512, ge=1, le=65_536)
    max_description_chars: int = Field(4096, ge=0, le=1_000_000)


def echo(value: str, n: int = ECHO_CHARS) -> str:
    """A short, printable prefix of client input for an error message."""
    text = value if len(value) <= n else value[:n] + "..."
    shown = repr(text)
    return shown if len(value) <= n else f"{shown} ({len(value):,} chars)"


def check_id(value: str, field_name: str, limits: RequestLimits) -> None:
    if not value or not value.strip():
        raise InvalidRequest(f"{field_name} is empty; expected a non-empty id")
    if len(value) > limits.max_id_chars:
        raise InvalidRequest(
            f"{field_name} has {len(value):,} chars; the limit is "
            f"{limits.max_id_chars} (max_id_chars)"
        )


def check_k(k: int, limits: RequestLimits) -> None:
    if not 1 <= k <= limits.max_k:
        raise InvalidRequest(f"k is {k}; expected 1 <= k <= {limits.max_k} (max_k)")


def clean_languages(languages: Sequence[str], limits: RequestLimits) -> tuple[str, ...]:
    """The language filter, deduplicated in request order; refused past the limits.

    Duplicates are dropped, not refused; the raw list is bounded by the message size
    (``max_receive_bytes``), so deduplicating it costs microseconds.
    """
    out = tuple(dict.fromkeys(languages))
    if len(out) > limits.max_languages:
        raise InvalidRequest(
            f"languages has {len(out):,} distinct entries; the limit is "
            f"{limits.max_languages} (max_languages)"
        )
    for lang in out:
        if not lang or not lang.strip():
            raise InvalidRequest(
                "languages contains an empty entry; expected language codes such as en or de"
            )
        if len(lang) > limits.max_language_chars:
            raise InvalidRequest(
                f"languages entry {echo(lang)} is longer than "
                f"{limits.max_language_chars} chars (max_language_chars)"
            )
    return out
