"""Users of the synthetic world: demographics, planted tastes, activity, music vectors.

The planted truth is ``theta`` (n_users x n_topics), each user's topic preference. It is
correlated with demographics (a prior per country and age band) and shows through in the
music vector (a fixed linear projection of theta plus noise), so demographic and music
features carry real but partial signal about what a user will stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.synth.config import WorldConfig
from training.synth.vocab import COUNTRIES, LANGUAGES, TOPICS

AGE_BANDS = np.array([25, 40, 55])  # band edges: <25, 25-39, 40-54, 55+


@dataclass
class Population:
    """Per-user arrays, all of length n_users (index = user number)."""

    country: np.ndarray  # int8 index into COUNTRIES
    language: np.ndarray  # int8 index into LANGUAGES
    age: np.ndarray  # int16
    signup_day: np.ndarray  # float64, days from world start (negative: before it)
    theta: np.ndarray  # float32 (n, T), rows sum to 1: planted topic taste
    activity: np.ndarray  # float64, mean 1, heavy-tailed: overall listening volume
    audiobook_activity: np.ndarray  # float64, heavy-tailed: audiobook volume of adopters
    podcast_listener: np.ndarray  # bool
    adopter: np.ndarray  # bool: ever touches an audiobook
    adoption_day: np.ndarray  # float64, inf for non-adopters

    @property
    def n(self) -> int:
        return len(self.age)


def dirichlet_rows(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """One Dirichlet draw per row of ``alpha`` (vectorised through gamma variates)."""
    g = rng.gamma(np.maximum(alpha, 1e-3))
    return g / g.sum(axis=1, keepdims=True)


def make_population(cfg: WorldConfig, rng: np.random.Generator) -> Population:
    n, t = cfg.n_users, cfg.n_topics
    shares = np.array([c[2] for c in COUNTRIES])
    country = rng.choice(len(COUNTRIES), size=n, p=shares / shares.sum()).astype(np.int8)
    country_lang = np.array([LANGUAGES.index(c[1]) for c in COUNTRIES], dtype=np.int8)
    # Most users speak their country's language; the rest use English.
    language = np.where(rng.random(n) < 0.9, country_lang[country], 0).astype(np.int8)
    age = np.clip(rng.gamma(6.0, 6.0, size=n) + 14, 16, 80).astype(np.int16)
    band = np.searchsorted(AGE_BANDS, age, side="right")

    # Tastes: a global topic popularity, a prior per (country, age band), an individual draw.
    global_taste = rng.dirichlet(np.full(t, 3.0))
    prior = rng.dirichlet(np.full(t, 0.7), size=(len(COUNTRIES), len(AGE_BANDS) + 1))
    w = cfg.demographic_taste_weight
    mean_taste = w * prior[country, band] + (1 - w) * global_taste
    theta = dirichlet_rows(rng, cfg.taste_concentration * mean_taste).astype(np.float32)

    start = -730.0  # accounts go back two years before the world starts
    new = rng.random(n) < cfg.new_user_share
    signup_day = np.where(new, rng.uniform(0, cfg.days - 1, n), rng.uniform(start, 0, n))

    s = cfg.activity_sigma
    activity = rng.lognormal(-s * s / 2, s, n)
    # Adopters: users whose taste leans to book-friendly topics, picked to an exact share.
    book_affinity = rng.uniform(0, 1, t)
    score = (theta @ book_affinity) * 6 + rng.gumbel(size=n)
    n_adopt = int(round(cfg.adopter_share * n))
    adopter = np.zeros(n, dtype=bool)
    adopter[np.argsort(-score, kind="stable")[:n_adopt]] = True
    rest = (cfg.podcast_listener_share - cfg.adopter_share * cfg.adopter_podcast_share) / max(
        1e-9, 1 - cfg.adopter_share
    )
    p_listen = np.where(adopter, cfg.adopter_podcast_share, np.clip(rest, 0, 1))
    podcast_listener = rng.random(n) < p_listen

    sa = cfg.audiobook_activity_sigma
    audiobook_activity = rng.lognormal(-sa * sa / 2, sa, n) * np.sqrt(activity)
    # A burst of adoption at launch, then a steady trickle until the end of the world.
    launch = float(cfg.audiobook_launch_day)
    early = rng.random(n) < 0.4
    when = np.where(early, launch + rng.uniform(0, 7, n), rng.uniform(launch, cfg.days, n))
    adoption_day = np.where(adopter, np.maximum(when, signup_day), np.inf)
    return Population(
        country,
        language,
        age,
        signup_day,
        theta,
        activity,
        audiobook_activity,
        podcast_listener,
        adopter,
        adoption_day,
    )


def music_vectors(
    cfg: WorldConfig,
    pop: Population,
    users: np.ndarray,
    projection: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Music-taste snapshots for ``users``: every ``music_snapshot_every_days`` from the
    later of day 0 and signup, as an in-house music model would recompute them.

    Returns (user index per row, snapshot day per row, vectors float32 (rows, music_dim)),
    each vector L2-normalised.
    """
    every = cfg.music_snapshot_every_days
    grid = np.arange(0, cfg.days, every, dtype=np.float64)
    first = np.maximum(pop.signup_day[users], 0.0)
    # Snapshot k of a user is at max(first, grid[k]) for the grid points after `first`,
    # plus one at `first` itself; count per user = 1 + grid points strictly after first.
    later = len(grid) - np.searchsorted(grid, first, side="right")
    counts = 1 + later
    row_user = np.repeat(users, counts)
    pos = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    base = np.repeat(len(grid) - later, counts)  # index of the first grid point after `first`
    day = np.where(
        pos == 0, np.repeat(first, counts), grid[np.minimum(base + pos - 1, len(grid) - 1)]
    )

    age_dir = projection[-1]  # one extra row of the projection encodes age
    core = pop.theta[users] @ projection[:-1] + np.outer((pop.age[users] - 40) / 20, age_dir) * 0.3
    core += rng.normal(0, cfg.music_noise, core.shape)  # music taste unrelated to topics
    vec = np.repeat(core, counts, axis=0) + rng.normal(0, 0.05, (len(row_user), core.shape[1]))
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    return row_user, day, vec.astype(np.float32)


def music_projection(cfg: WorldConfig, rng: np.random.Generator) -> np.ndarray:
    """The fixed map from (topics + age) to music space: (n_topics + 1, music_dim)."""
    return rng.normal(0, 1, (cfg.n_topics + 1, cfg.music_dim)) / np.sqrt(cfg.music_dim) * 3


__all__ = ["Population", "make_population", "music_vectors", "music_projection", "TOPICS"]
