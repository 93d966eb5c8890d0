"""Typed configuration: a strict pydantic base that rejects unknown keys.

Configs are passed explicitly (no globals). Overrides, from a JSON file
(``load_overrides``), a preset or a command-line flag, are combined one way only,
:func:`merge` (section by section), and validated once (:func:`validated`), so that a typo
in a key is an error, not a silently ignored setting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from audiorec.errors import AudiorecError
from audiorec.secrets import redact

T = TypeVar("T", bound="StrictConfig")


class StrictConfig(BaseModel):
    """Frozen, validated, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def with_overrides(self: T, overrides: dict[str, Any] | None) -> T:
        """A copy with ``overrides`` applied and validated again.

        What the caller set survives the copy: the copy's set fields (pydantic's
        ``model_fields_set``, recursively) are this config's plus the overrides', so a
        preset applied later still fills in every field nobody set. (Rebuilding from a
        full ``model_dump()`` would mark every field as set, and each preset value would
        then lose to the default it was meant to replace.)
        """
        if not overrides:
            return self
        return validated(type(self), merge(explicit(self), overrides))


def explicit(cfg: BaseModel) -> dict[str, Any]:
    """The fields of a pydantic config (recursively) that its caller set: the one record
    of "set" that presets read (:mod:`training.presets`)."""
    return cfg.model_dump(exclude_unset=True)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, section by section: nested dicts merge, anything else
    (values, lists, a dict over a non-dict) replaces."""
    merged = dict(base)
    for k, v in over.items():
        merged[k] = (
            merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        )
    return merged


def validated(cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from ``data``; a bad key or value is one readable AudiorecError."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            + (
                f" (got {redact(repr(err['input']))[:80]})"
                if err["type"] != "extra_forbidden"
                else " (unknown key)"
            )
            for err in exc.errors()
        )
        raise AudiorecError(f"invalid {cls.__name__}: {problems}") from None


def load_overrides(path: str | Path | None) -> dict[str, Any]:
    """Read a JSON object of config overrides; None gives no overrides."""
    if path is None:
        return {}
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise AudiorecError(f"config file {p} does not exist") from None
    except json.JSONDecodeError as exc:
        raise AudiorecError(f"config file {p} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise AudiorecError(f"config file {p} must hold a JSON object, got {type(data).__name__}")
    return data
