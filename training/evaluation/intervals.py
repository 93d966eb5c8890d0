"""Paired differences between two models with a bootstrap interval over users.

Every row of a report is scored on the same users of a group, so two rows are compared
user by user: ``diff_u = a_u - factor x b_u`` where ``a_u`` is model A's hit@10 for user
``u`` (the mean over its seeds: a share between 0 and 1). The users are resampled with
replacement ``resamples`` times (seeded); the 2.5th and 97.5th percentiles of the
resampled mean differences are the 95% interval. The verdict is read from the interval,
never from the means alone: "leads" (the interval above 0), "trails" (below 0), "level"
(it covers 0).

The interval holds the noise of which users happened to be in the hold-out; the spread
over seeds (the report's ±) is the training noise, and with several seeds it is already
inside ``a_u``'s mean.

Cost: O(resamples x users) time, in chunks that bound memory at ``chunk x users`` ints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Paired:
    """A - factor x B over the same users: the mean difference and its 95% interval."""

    diff: float
    lo: float
    hi: float
    users: int

    @property
    def verdict(self) -> str:
        if self.users == 0 or np.isnan(self.lo):
            return "no users"
        if self.lo > 0:
            return "leads"
        if self.hi < 0:
            return "trails"
        return "level"

    def to_json(self) -> dict:
        return {
            "diff": self.diff,
            "lo": self.lo,
            "hi": self.hi,
            "users": self.users,
            "verdict": self.verdict,
        }

    def text(self) -> str:
        """ "+0.012 [-0.004, +0.029]"."""
        return f"{self.diff:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}]"


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    factor: float = 1.0,
    resamples: int = RESAMPLES,
    seed: int = 0,
    chunk: int = 200,
) -> Paired:
    """``a``, ``b``: (users,) per-user values of two models on the same users, in the same
    order. Returns the mean of ``a - factor * b`` and its percentile interval."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need one shape, got {a.shape} and {b.shape}")
    n = len(a)
    if n == 0:
        nan = float("nan")
        return Paired(nan, nan, nan, 0)
    diff = a - factor * b
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        means[start : start + size] = diff[rng.integers(0, n, (size, n))].mean(axis=1)
    tail = (1 - LEVEL) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return Paired(float(diff.mean()), float(lo), float(hi), n)
