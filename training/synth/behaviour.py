"""Listening behaviour: the events of one chunk of users, fully vectorised.

The story, per user:

* podcasts: ``Poisson(podcast_starts * activity)`` show starts at uniform times in the
  user's active span; each start picks a topic from the user's taste, a language (own,
  else English) and an item of that topic by popularity among items already published;
  it then yields a geometric number of streams a few days apart, and maybe a follow;
* audiobooks (adopters only, from their adoption day): ``exposures``, each an item picked
  the same way, that may draw weak signals (follow, preview, intent_to_pay); an exposure
  turns into a stream start with a probability the weak signals raise (a follow most), and
  a start yields several streams (listening through the book) days apart.

No Python loop runs per event: every step is numpy over arrays of starts and streams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audiorec.vocabulary import EVENT_TYPES
from training.synth.catalog import AUDIOBOOK, PODCAST, Catalog
from training.synth.config import WorldConfig
from training.synth.population import Population

STREAM, FOLLOW, PREVIEW, INTENT = 0, 1, 2, 3
EVENT_TYPE_NAMES = EVENT_TYPES  # the codes above index it
_DAY_SPAN = 10_000.0  # larger than any publish-day range: keys cell*span + day stay ordered
_DAY_SHIFT = 1_000.0  # publish days go back to -730: shift them positive


class CellSampler:
    """Draws items within cells, by weight, among items published by a given time.

    Items are sorted by (cell, publish day) once; a draw for (cell c, time t) takes the
    prefix of cell c published by t and inverts the cumulative weight there, so it costs
    two binary searches per draw whatever the catalogue size.
    """

    def __init__(
        self,
        cell: np.ndarray,
        publish_day: np.ndarray,
        weight: np.ndarray,
        items: np.ndarray,
        n_cells: int,
    ):
        order = np.lexsort((publish_day, cell))
        self.items = items[order]
        self.key = cell[order] * _DAY_SPAN + (publish_day[order] + _DAY_SHIFT)
        self.cw = np.cumsum(weight[order])
        self.start = np.searchsorted(cell[order], np.arange(n_cells), side="left")

    def sample(self, cell: np.ndarray, t: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Item index per draw, or -1 where the cell has no item published by ``t``."""
        if len(self.items) == 0:
            return np.full(len(cell), -1)
        start = self.start[cell]
        end = np.searchsorted(self.key, cell * _DAY_SPAN + (t + _DAY_SHIFT), side="right")
        ok = end > start
        lo = np.where(start > 0, self.cw[np.maximum(start - 1, 0)], 0.0)
        hi = self.cw[np.maximum(end - 1, 0)]
        idx = np.searchsorted(self.cw, lo + u * (hi - lo), side="right")
        idx = np.clip(idx, start, np.maximum(end - 1, start))
        return np.where(ok, self.items[np.minimum(idx, len(self.items) - 1)], -1)


@dataclass
class ItemPicker:
    """Draws items of one type for (user, time) pairs: P(item) ~ taste[topic] x popularity,
    in the user's language or in English, and published by then.

    A draw first picks a (language, topic) cell with probability proportional to the
    user's taste for the topic times the cell's total popularity, then an item inside the
    cell by popularity; so item popularity acts globally, not just within a cell. A cell
    with nothing published yet falls back to the topic in any language, then to any item.
    """

    levels: tuple[CellSampler, CellSampler, CellSampler]
    mass: np.ndarray  # (n_languages, n_topics): total popularity per cell
    n_topics: int
    n_items: int  # size of the whole catalogue (item indices are global)

    @classmethod
    def build(cls, cat: Catalog, kind: int, n_topics: int, n_languages: int) -> "ItemPicker":
        sel = np.flatnonzero(cat.item_type == kind)
        topic = cat.primary_topic[sel].astype(np.int64)
        lang = cat.language[sel].astype(np.int64)
        args = (cat.publish_day[sel], cat.popularity[sel], sel)
        fine = lang * n_topics + topic
        mass = np.bincount(fine, weights=cat.popularity[sel], minlength=n_languages * n_topics)
        return cls(
            (
                CellSampler(fine, *args, n_cells=n_languages * n_topics),
                CellSampler(topic, *args, n_cells=n_topics),
                CellSampler(np.zeros_like(topic), *args, n_cells=1),
            ),
            mass.reshape(n_languages, n_topics),
            n_topics,
            cat.n,
        )

    def pick(
        self,
        theta: np.ndarray,
        language: np.ndarray,
        english_weight: float,
        t: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Item per draw (-1 if nothing of this type is out by ``t``).

        theta: (m, T) tastes of the drawing users; language: (m,) their language index;
        english_weight: the weight of an English item relative to one in the user's own
        language (so where few titles exist in a language, its speakers turn to English).
        """
        t_ = self.n_topics
        own = theta * self.mass[language]
        eng = theta * self.mass[0] * english_weight
        eng[language == 0] = 0.0  # English speakers' own cell already is English
        cell = _categorical_rows(np.concatenate([own, eng], axis=1), rng)
        lang = np.where(cell < t_, language, 0).astype(np.int64)
        topic = cell % t_
        fine, mid, coarse = self.levels
        u = rng.random(len(t))
        item = fine.sample(lang * t_ + topic, t, u)
        miss = item < 0
        item[miss] = mid.sample(topic[miss], t[miss], u[miss])
        miss = item < 0
        item[miss] = coarse.sample(np.zeros(miss.sum(), dtype=np.int64), t[miss], u[miss])
        return item


@dataclass
class EventChunk:
    user: np.ndarray  # int64 user index
    item: np.ndarray  # int64 item index
    event_type: np.ndarray  # int8 (STREAM, FOLLOW, PREVIEW, INTENT)
    day: np.ndarray  # float64 days from world start
    ms_played: np.ndarray  # int64, -1 where not a stream

    @classmethod
    def concat(cls, parts: list["EventChunk"]) -> "EventChunk":
        return cls(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("user", "item", "event_type", "day", "ms_played")
            )
        )


def _categorical_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One category per row of non-negative weights ``probs`` (rows need not sum to 1)."""
    cum = np.cumsum(probs, axis=1)
    below = cum < rng.random((len(probs), 1)) * cum[:, -1:]
    return below.sum(axis=1).clip(max=probs.shape[1] - 1)


def _expand(
    counts: np.ndarray, start_day: np.ndarray, mean_gap: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Repeat each start ``counts`` times, days apart: (start index per row, day per row).

    The first row of a start is at its start day; the next ones follow exponential gaps.
    """
    owner = np.repeat(np.arange(len(counts)), counts)
    gaps = rng.exponential(mean_gap, len(owner))
    first = np.cumsum(counts) - counts
    gaps[first[counts > 0]] = 0.0
    cs = np.cumsum(gaps)
    offset = np.repeat(cs[first[counts > 0]], counts[counts > 0])
    return owner, start_day[owner] + (cs - offset)


def _choose(
    pop: Population,
    users: np.ndarray,
    cfg: WorldConfig,
    picker: ItemPicker,
    day: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    return picker.pick(
        pop.theta[users], pop.language[users].astype(np.int64), cfg.english_weight, day, rng
    )


def podcast_events(
    cfg: WorldConfig,
    pop: Population,
    users: np.ndarray,
    picker: ItemPicker,
    rng: np.random.Generator,
) -> EventChunk:
    begin = np.maximum(pop.signup_day[users], 0.0)
    span = cfg.days - begin
    lam = cfg.podcast_starts * pop.activity[users] * span / cfg.days
    n = np.where(pop.podcast_listener[users], rng.poisson(lam), 0)
    su = np.repeat(users, n)
    sday = np.repeat(begin, n) + rng.random(len(su)) * np.repeat(span, n)
    sitem = _choose(pop, su, cfg, picker, sday, rng)

    k = rng.geometric(1.0 / cfg.podcast_streams_per_start, len(su))
    owner, day = _expand(k, sday, 3.0, rng)
    ms = rng.lognormal(np.log(25 * 60_000), 0.6, len(owner)).astype(np.int64)
    streams = EventChunk(su[owner], sitem[owner], np.full(len(owner), STREAM, np.int8), day, ms)

    f = rng.random(len(su)) < cfg.podcast_follow_rate
    fday = sday[f] + rng.exponential(2.0, f.sum())
    follows = EventChunk(
        su[f], sitem[f], np.full(f.sum(), FOLLOW, np.int8), fday, np.full(f.sum(), -1, np.int64)
    )
    return EventChunk.concat([streams, follows])


def audiobook_events(
    cfg: WorldConfig,
    pop: Population,
    users: np.ndarray,
    picker: ItemPicker,
    rng: np.random.Generator,
) -> EventChunk:
    begin = np.minimum(pop.adoption_day[users], cfg.days)  # inf (non-adopter) -> no span
    span = np.maximum(cfg.days - begin, 0.0)
    life = cfg.days - cfg.audiobook_launch_day
    # A heavy listener's volume is split between breadth (books discovered) and depth
    # (streams per book): one who discovered every book would flatten popularity.
    breadth = pop.audiobook_activity[users] ** cfg.audiobook_breadth_exponent
    lam = cfg.audiobook_exposures * breadth * span / life
    n = np.where(pop.adopter[users], rng.poisson(lam), 0)
    eu = np.repeat(users, n)
    eday = np.repeat(begin, n) + rng.random(len(eu)) * np.repeat(span, n)
    eitem = _choose(pop, eu, cfg, picker, eday, rng)
    # A user discovers a book once: keep each (user, book) pair's first exposure only.
    pair = eu.astype(np.int64) * (picker.n_items + 1) + eitem
    order = np.lexsort((eday, pair))
    first = np.ones(len(order), dtype=bool)
    first[1:] = pair[order][1:] != pair[order][:-1]
    keep = np.sort(order[first])
    eu, eday, eitem = eu[keep], eday[keep], eitem[keep]

    m = len(eu)
    follow = rng.random(m) < cfg.follow_rate
    preview = rng.random(m) < cfg.preview_rate
    intent = rng.random(m) < cfg.intent_rate
    logit = (
        cfg.start_logit
        + cfg.follow_effect * follow
        + cfg.preview_effect * preview
        + cfg.intent_effect * intent
    )
    start = rng.random(m) < 1 / (1 + np.exp(-logit))
    weak = follow | preview | intent

    parts = []
    for flag, code, lag in ((follow, FOLLOW, 0.0), (preview, PREVIEW, 0.2), (intent, INTENT, 1.0)):
        d = eday[flag] + rng.random(flag.sum()) * lag
        parts.append(
            EventChunk(
                eu[flag],
                eitem[flag],
                np.full(flag.sum(), code, np.int8),
                d,
                np.full(flag.sum(), -1, np.int64),
            )
        )
    # A weak signal precedes the first stream by ~weak_signal_lag_days; else it starts at once.
    lag_after_weak = 0.05 + rng.exponential(cfg.weak_signal_lag_days, start.sum())
    sday = eday[start] + np.where(weak[start], lag_after_weak, 0.0)
    # Heavy listeners get further into a book: streams per start grow with their volume.
    depth = np.clip(pop.audiobook_activity[eu[start]], 0.01, 50.0) ** (
        1 - cfg.audiobook_breadth_exponent
    )
    k = rng.geometric(1.0 / (1.0 + (cfg.audiobook_streams_per_start - 1.0) * depth))
    owner, day = _expand(k, sday, 1.5, rng)
    ms = rng.lognormal(np.log(35 * 60_000), 0.5, len(owner)).astype(np.int64)
    parts.append(
        EventChunk(
            eu[start][owner], eitem[start][owner], np.full(len(owner), STREAM, np.int8), day, ms
        )
    )
    return EventChunk.concat(parts)


def chunk_events(
    cfg: WorldConfig,
    pop: Population,
    users: np.ndarray,
    pickers: dict[int, ItemPicker],
    rng: np.random.Generator,
) -> EventChunk:
    """All events of ``users``, inside the world, sorted by (user, time)."""
    ev = EventChunk.concat(
        [
            podcast_events(cfg, pop, users, pickers[PODCAST], rng),
            audiobook_events(cfg, pop, users, pickers[AUDIOBOOK], rng),
        ]
    )
    keep = (ev.item >= 0) & (ev.day < cfg.days)
    ev = EventChunk(*(a[keep] for a in (ev.user, ev.item, ev.event_type, ev.day, ev.ms_played)))
    order = np.lexsort((ev.day, ev.user))
    return EventChunk(*(a[order] for a in (ev.user, ev.item, ev.event_type, ev.day, ev.ms_played)))
