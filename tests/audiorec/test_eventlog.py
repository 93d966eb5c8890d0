"""The durable log: round trip, rotation, torn and corrupt lines, the size bound, and a
writer killed mid-stream (SIGKILL) losing at most the call in flight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from audiorec.eventlog import (
    EVENTS,
    LogConfig,
    LogFull,
    LogWriter,
    read_records,
    segments,
    write_ledger,
)


def records(directory, kind=EVENTS):
    return [r for _, _, r in read_records(directory, kind)]


def test_round_trip_rotation_and_offsets(tmp_path):
    w = LogWriter(tmp_path, EVENTS, LogConfig(segment_bytes=4096))
    for i in range(200):
        w.append([{"i": i, "text": "é" * 10}, {"i": i, "second": True}])
    w.close()
    got = records(tmp_path)
    assert [r["i"] for r in got] == [i for i in range(200) for _ in range(2)]
    assert len(segments(tmp_path, EVENTS)) >= 4  # rotated at 4 KiB
    # reading from a ledger's offsets returns only what came after
    ledger: dict[str, int] = {}
    for segment, end, _ in list(read_records(tmp_path, EVENTS))[:150]:
        ledger[segment] = end
    rest = [r for _, _, r in read_records(tmp_path, EVENTS, ledger)]
    assert len(rest) == 250 and rest[0] == got[150]


def test_torn_and_corrupt_lines_are_skipped(tmp_path):
    w = LogWriter(tmp_path, EVENTS)
    w.append([{"i": 0}, {"i": 1}, {"i": 2}])
    w.close()
    path = segments(tmp_path, EVENTS)[0]
    data = path.read_bytes()
    lines = data.split(b"\n")
    lines[1] = lines[1].replace(b'"i":1', b'"i":7')  # the CRC no longer matches
    path.write_bytes(b"\n".join(lines) + b'0badc0de {"i": 3')  # and a torn tail
    assert records(tmp_path) == [{"i": 0}, {"i": 2}]
    w = LogWriter(tmp_path, EVENTS)  # a new writer starts a new segment: nothing joins the tear
    w.append([{"i": 4}])
    w.close()
    assert records(tmp_path) == [{"i": 0}, {"i": 2}, {"i": 4}]


def test_a_full_log_refuses_then_drops_what_was_merged(tmp_path):
    cfg = LogConfig(segment_bytes=4096, max_bytes=8192)
    w = LogWriter(tmp_path, EVENTS, cfg)
    with pytest.raises(LogFull, match="run the daily pipeline"):
        for i in range(10_000):
            w.append([{"i": i, "pad": "x" * 100}])
    full = len(records(tmp_path))
    # the pipeline merged everything that is there: the writer may drop those segments
    write_ledger(tmp_path, EVENTS, {p.name: p.stat().st_size for p in segments(tmp_path, EVENTS)})
    w.append([{"i": "after", "pad": "y" * 3000}])  # needs the oldest segment's room
    w.close()
    kept = records(tmp_path)
    assert kept[-1]["i"] == "after" and len(kept) < full + 1
    assert sum(p.stat().st_size for p in segments(tmp_path, EVENTS)) <= 8192


WRITER = """
import sys
from audiorec.eventlog import EVENTS, LogConfig, LogWriter
w = LogWriter(sys.argv[1], EVENTS, LogConfig(segment_bytes=1 << 16))
call = 0
print("ready", flush=True)
while True:
    w.append([{"call": call, "part": p, "pad": "x" * 200} for p in range(7)])
    call += 1
"""


def test_a_writer_killed_mid_stream_loses_at_most_the_call_in_flight(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    got = records(tmp_path)
    calls = [r["call"] for r in got]
    assert calls, "the writer wrote nothing"
    n = calls[-1] + 1
    # every call before the last one whole, in order; the last one whole or absent
    assert [(r["call"], r["part"]) for r in got] == [(c, p) for c in range(n) for p in range(7)]
    assert len(segments(tmp_path, EVENTS)) > 1  # rotation happened while it ran
