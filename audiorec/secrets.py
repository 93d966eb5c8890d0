"""Keep secrets out of anything a person or a client reads: errors, logs, responses.

:func:`redact` masks ``password=...``-style pairs (as in a Feast Redis connection string,
``host:port,password=...``), credentials in URLs (``scheme://user:pass@host``) and bearer
tokens. Whatever prints text that might hold configuration runs it through here.
"""

from __future__ import annotations

import re

MASK = "***"
_PAIRS = re.compile(
    r"(?i)\b(password|passwd|pwd|token|secret|api_key|apikey|auth)"
    r"(\s*[=:]\s*)(['\"]?)[^,\s;&'\"]+"
)
_URL = re.compile(r"(://[^:/@\s]*:)[^@\s/]+@")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")


def redact(text: str) -> str:
    text = _PAIRS.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{MASK}", text)
    text = _URL.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    return _BEARER.sub(lambda m: f"{m.group(1)}{MASK}", text)


def redis_address(connection_string: str) -> str:
    """Only ``host:port`` of a Feast Redis connection string (options may hold secrets)."""
    return redact(connection_string.split(",", 1)[0].strip())
