"""A/B arms: two or more published versions served side by side, users split by a
stable hash.

An arm is ``NAME=VERSION:SHARE`` (``VERSION`` a published version name, or ``current``
to follow the ``current`` pointer with hot reload); the shares sum to 1. A user's arm is
the first whose cumulative share exceeds ``u = hash(salt, user_id)`` in [0, 1): the same
user gets the same arm in every process and after every restart, a new salt
re-randomises the split for the next experiment, and a share change moves only the
users between the old and the new boundary.
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

from pydantic import Field, model_validator

from audiorec.config import StrictConfig
from audiorec.errors import AudiorecError

CURRENT = "current"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


class Arm(StrictConfig):
    name: str
    version: str = CURRENT  # a published version, or "current" (follows the pointer)
    share: float = Field(gt=0, le=1)


class Experiment(StrictConfig):
    arms: list[Arm] = Field(default_factory=list)  # empty: one unnamed arm on current
    salt: str = "audiorec-ab"  # change per experiment: a new, independent split

    @model_validator(mode="after")
    def _check(self) -> "Experiment":
        if not self.arms:
            return self
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names repeat: {names}")
        bad = [n for n in names if not _NAME.match(n)]
        if bad:
            raise ValueError(f"arm names must be 1-32 of [A-Za-z0-9_-]: {bad}")
        total = sum(a.share for a in self.arms)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"arm shares sum to {total:g}; they must sum to 1")
        return self

    def assign(self, user_id: str) -> int:
        """The index of the user's arm (0 without arms)."""
        if len(self.arms) < 2:
            return 0
        u = unit_hash(self.salt, user_id)
        edge = 0.0
        for i, arm in enumerate(self.arms):
            edge += arm.share
            if u < edge:
                return i
        return len(self.arms) - 1  # rounding at the top end


def unit_hash(salt: str, key: str) -> float:
    """A uniform number in [0, 1) from ``salt`` and ``key`` (stable across processes and
    Python versions, unlike ``hash``)."""
    digest = hashlib.blake2b(f"{salt}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def parse_arms(specs: Sequence[str]) -> list[Arm]:
    """``NAME=VERSION:SHARE`` strings (the CLI's ``--arm``) into arms; one readable error."""
    arms = []
    for spec in specs:
        m = re.match(r"^([^=]+)=([^:]+):([0-9.]+)$", spec)
        if not m:
            raise AudiorecError(
                f"--arm {spec[:64]!r}: expected NAME=VERSION:SHARE, e.g. control=current:0.5"
            )
        try:
            arms.append(Arm(name=m[1], version=m[2], share=float(m[3])))
        except ValueError as exc:
            raise AudiorecError(f"--arm {spec[:64]!r}: {exc}") from None
    return arms
