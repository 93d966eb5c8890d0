"""Stage timings leave the request path (serving/metrics.py): with the flusher started, an
observation waits in a deque until the flusher, a scrape or close writes it; without it,
it is written at once. Either way every observation reaches the histogram exactly once."""

from __future__ import annotations

import threading
import time

from prometheus_client import generate_latest

from serving.metrics import FLUSH_S, Metrics


def _stage(metrics: Metrics, stage: str) -> tuple[float, float]:
    """(count, sum) of one stage's series as written so far (the histogram alone: a
    collection of the whole registry would flush first)."""
    count = total = 0.0
    for family in metrics.stages.collect():
        for sample in family.samples:
            if sample.labels.get("stage") != stage:
                continue
            if sample.name == "audiorec_stage_seconds_count":
                count += sample.value
            elif sample.name == "audiorec_stage_seconds_sum":
                total += sample.value
    return count, total


def _delta(metrics: Metrics, stage: str, before: tuple[float, float]) -> tuple[float, float]:
    count, total = _stage(metrics, stage)
    return count - before[0], round(total - before[1], 9)


def test_without_the_flusher_a_timing_is_written_at_once():
    m = Metrics()
    before = _stage(m, "t_direct")
    m.observe_stage("t_direct", 0.25)
    assert _delta(m, "t_direct", before) == (1, 0.25)


def test_the_flusher_writes_every_timing_once_and_a_scrape_flushes_first():
    m = Metrics()
    before = _stage(m, "t_flushed")
    m.start()
    try:
        m.observe_stage("t_flushed", 0.5)
        m.observe_stage("t_flushed", 0.25)
        text = generate_latest(m.registry).decode()  # what the --metrics-port endpoint serves
        assert 'audiorec_stage_seconds_count{stage="t_flushed"}' in text
        assert _delta(m, "t_flushed", before) == (2, 0.75)  # the scrape wrote them first
        m.observe_stage("t_flushed", 0.125)
        deadline = time.monotonic() + 20 * FLUSH_S + 5
        while _delta(m, "t_flushed", before)[0] < 3 and time.monotonic() < deadline:
            time.sleep(FLUSH_S / 2)
        assert _delta(m, "t_flushed", before) == (3, 0.875)  # the thread, unasked
    finally:
        m.close()


def test_concurrent_calls_scrapes_and_close_lose_and_repeat_nothing():
    m = Metrics()
    before = _stage(m, "t_race")
    m.start()
    per_thread, threads = 2_000, 4

    def calls() -> None:
        for _ in range(per_thread):
            m.observe_stage("t_race", 0.001)

    def scrapes() -> None:
        for _ in range(50):
            m.flush()

    workers = [threading.Thread(target=calls) for _ in range(threads)]
    workers += [threading.Thread(target=scrapes) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    m.close()  # writes what the thread had not yet taken
    count, total = _delta(m, "t_race", before)
    assert count == per_thread * threads
    assert abs(total - per_thread * threads * 0.001) < 1e-6
    m.observe_stage("t_race", 0.5)  # after close: written at once again
    assert _delta(m, "t_race", before)[0] == per_thread * threads + 1
