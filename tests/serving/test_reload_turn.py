"""The turn a group's processes take to load a new version (serving/reload.py): one at a
time across real processes, given up by a process that dies, and never waited on past
its bound."""

from __future__ import annotations

import subprocess
import sys
import time

from serving.reload import turn

HOLD = """
import fcntl, sys, time
f = open(sys.argv[1], "a")
fcntl.flock(f, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _holder(path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_turn_waits_for_the_process_holding_it(tmp_path):
    lock = tmp_path / "reload.lock"
    proc = _holder(lock, 0.6)
    start = time.monotonic()
    with turn(str(lock)):
        waited = time.monotonic() - start
    proc.wait()
    assert 0.3 < waited < 5


def test_a_dead_holder_gives_the_turn_up(tmp_path):
    lock = tmp_path / "reload.lock"
    proc = _holder(lock, 60)
    proc.kill()  # SIGKILL: no chance to unlock; the kernel drops it
    proc.wait()
    start = time.monotonic()
    with turn(str(lock)):
        assert time.monotonic() - start < 1


def test_a_turn_is_waited_on_at_most_its_bound(tmp_path):
    lock = tmp_path / "reload.lock"
    proc = _holder(lock, 60)
    try:
        start = time.monotonic()
        ran = False
        with turn(str(lock), wait_s=0.3):
            ran = True
        assert ran and 0.25 < time.monotonic() - start < 3
    finally:
        proc.kill()
        proc.wait()


def test_no_lock_file_no_wait():
    with turn(None):
        pass
