"""The event vocabulary, declared once: the data contract, the synthetic world, the feature
jobs, the online recorder, the evaluation and the command line all read it from here.

``stream`` is a listen; the weak signals (the paper's "weak signals predict future
streams", docs/paper.md) are a follow, a preview (a 30 s sample) and an intent to pay (a
started purchase). The order is part of the contract: the synthetic world encodes an
event's type as its index in ``EVENT_TYPES``.
"""

from __future__ import annotations

STREAM = "stream"
WEAK_SIGNALS = ("follow", "preview", "intent_to_pay")
EVENT_TYPES = (STREAM, *WEAK_SIGNALS)
# How strong an event is as a reason ("because you streamed / started buying / followed /
# previewed X"): the published window's ``action`` and the server's explanations rank
# a listener's events on one item by it.
EVENT_STRENGTH = {STREAM: 4, "intent_to_pay": 3, "follow": 2, "preview": 1}
