"""Processes serving one work directory load a new version one after another."""

from __future__ import annotations

import multiprocessing as mp
import time

from serving.reload import one_load_at_a_time


def _hold(workdir: str, ready, seconds: float) -> None:
    with one_load_at_a_time(workdir):
        ready.set()
        time.sleep(seconds)


def test_a_second_process_loads_only_after_the_first(tmp_path):
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    other = ctx.Process(target=_hold, args=(str(tmp_path), ready, 1.0))
    other.start()
    try:
        assert ready.wait(60)
        started = time.monotonic()
        with one_load_at_a_time(tmp_path):
            waited = time.monotonic() - started
        assert waited > 0.5  # the other process's load came first
    finally:
        other.join(10)
    with one_load_at_a_time(tmp_path):  # free again: no wait
        pass


def test_a_stuck_holder_delays_a_load_by_the_wait_only(tmp_path):
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    stuck = ctx.Process(target=_hold, args=(str(tmp_path), ready, 30.0))
    stuck.start()
    try:
        assert ready.wait(60)
        started = time.monotonic()
        with one_load_at_a_time(tmp_path, wait_s=0.3):
            waited = time.monotonic() - started
        assert 0.25 < waited < 5
    finally:
        stuck.kill()
        stuck.join(10)
    started = time.monotonic()
    with one_load_at_a_time(tmp_path, wait_s=5):  # a dead holder's lock is freed
        assert time.monotonic() - started < 1


def test_an_unwritable_work_directory_takes_no_turns(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with one_load_at_a_time(blocked):  # locks/ cannot be made under a file
        pass
