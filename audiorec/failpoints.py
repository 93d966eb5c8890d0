"""Named crash points for the chaos tests: ``AUDIOREC_FAILPOINT=<name>`` kills the process
with SIGKILL (no cleanup, no ``finally``) when it reaches :func:`failpoint` ``(name)``.

This is how the tests prove "a crash at any point leaves the served version and the
online store consistent": they run the real pipeline in a subprocess, kill it at each
point, rerun it, and compare. Unset (always, outside tests) it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "AUDIOREC_FAILPOINT"
POINTS = (
    "after-text",
    "after-hgnn",
    "features-swapped",
    "mid-materialize",
    "after-materialize",
    "after-towers",
    "version-renamed",
)


def failpoint(name: str) -> None:
    if name not in POINTS:
        raise ValueError(f"unknown failpoint {name!r}")
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
