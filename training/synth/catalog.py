"""Items of the synthetic world: audiobooks and podcasts with topics, text and popularity.

Audiobooks are the late, sparse type: they launch during the window and new titles keep
arriving until its last day. Podcasts are mostly older. Each item has a primary topic (the
planted truth its listeners are drawn by) and a topic mixture that shapes its text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.synth.config import WorldConfig
from training.synth.population import dirichlet_rows
from training.synth.vocab import GENERIC_WORDS, LANGUAGES, TOPICS

AUDIOBOOK, PODCAST = 0, 1
ITEM_TYPE_NAMES = ("audiobook", "podcast")
# Audiobooks lean English more than podcasts do (translations arrive later).
LANGUAGE_SHARES = {
    AUDIOBOOK: np.array([0.60, 0.10, 0.08, 0.10, 0.06, 0.06]),
    PODCAST: np.array([0.48, 0.12, 0.10, 0.14, 0.08, 0.08]),
}


@dataclass
class Catalog:
    """Per-item arrays; audiobooks come first (0..n_audiobooks-1), then podcasts."""

    item_id: np.ndarray  # str
    item_type: np.ndarray  # int8: AUDIOBOOK or PODCAST (how it is listened to)
    type_name: np.ndarray  # str: the item_type written (a third type's name, if any)
    primary_topic: np.ndarray  # int16
    topics: np.ndarray  # float32 (n_items, T): topic mixture
    language: np.ndarray  # int8 index into LANGUAGES
    genre: np.ndarray  # str
    popularity: np.ndarray  # float64, heavy-tailed
    publish_day: np.ndarray  # float64, days from world start
    title: np.ndarray  # str
    description: np.ndarray  # str

    @property
    def n(self) -> int:
        return len(self.item_type)


def make_catalog(cfg: WorldConfig, rng: np.random.Generator) -> Catalog:
    na, npod, t = cfg.n_audiobooks, cfg.n_podcasts, cfg.n_topics
    n = na + npod
    item_type = np.repeat(np.array([AUDIOBOOK, PODCAST], dtype=np.int8), [na, npod])
    ids = np.concatenate(
        [
            np.char.add("ab", np.char.zfill(np.arange(na).astype(str), 6)),
            np.char.add("pc", np.char.zfill(np.arange(npod).astype(str), 6)),
        ]
    )

    topic_size = rng.dirichlet(np.full(t, 4.0))
    primary = rng.choice(t, size=n, p=topic_size).astype(np.int16)
    mix = 0.7 * np.eye(t, dtype=np.float32)[primary]
    mix += 0.3 * dirichlet_rows(rng, np.full((n, t), 0.3)).astype(np.float32)

    language = np.empty(n, dtype=np.int8)
    for kind, count, lo in ((AUDIOBOOK, na, 0), (PODCAST, npod, na)):
        p = LANGUAGE_SHARES[kind]
        language[lo : lo + count] = rng.choice(len(LANGUAGES), size=count, p=p / p.sum())

    genres = np.array(sorted({g for _, g, _ in TOPICS[:t]}))
    topic_genre = np.searchsorted(genres, np.array([g for _, g, _ in TOPICS[:t]]))
    genre_idx = np.where(
        rng.random(n) < cfg.genre_noise, rng.integers(0, len(genres), n), topic_genre[primary]
    )

    sigma = np.where(
        item_type == AUDIOBOOK, cfg.audiobook_popularity_sigma, cfg.podcast_popularity_sigma
    )
    popularity = np.exp(rng.normal(0, 1, n) * sigma)

    launch = float(cfg.audiobook_launch_day)
    on_launch = rng.random(na) < cfg.launch_catalogue_share
    ab_day = np.where(on_launch, launch, rng.uniform(launch, cfg.days, na))
    new_pod = rng.random(npod) < cfg.new_podcast_share
    pod_day = np.where(new_pod, rng.uniform(0, cfg.days, npod), rng.uniform(-730, 0, npod))
    publish_day = np.concatenate([ab_day, pod_day])

    title, description = _write_texts(cfg, rng, primary, mix)
    type_name = np.array(ITEM_TYPE_NAMES, dtype=object)[item_type]
    if cfg.third_type is not None:
        # drawn last, so a two-type world of the same seed is unchanged
        third = (item_type == PODCAST) & (rng.random(n) < cfg.third_type_share)
        type_name[third] = cfg.third_type
        ids = ids.astype(object)
        prefix = cfg.third_type[:2] if cfg.third_type[:2] != "ab" else "t3"
        ids[third] = [prefix + i[2:] for i in ids[third]]
        ids = ids.astype(str)
    return Catalog(
        ids,
        item_type,
        type_name,
        primary,
        mix,
        language,
        genres[genre_idx],
        popularity,
        publish_day,
        title,
        description,
    )


def _write_texts(
    cfg: WorldConfig, rng: np.random.Generator, primary: np.ndarray, mix: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Titles and descriptions from topic vocabularies, generic words and cross-topic noise.

    Word choice is vectorised; only the final join is a loop over items (not events).
    """
    t = cfg.n_topics
    width = min(len(w) for _, _, w in TOPICS[:t])
    vocab = np.array([list(w[:width]) for _, _, w in TOPICS[:t]])  # (T, width)
    generic = np.array(GENERIC_WORDS)
    n, length = len(primary), cfg.description_words

    # Description: each word from a topic drawn from the item's mixture (55%), a random
    # topic (10%: noise shared across topics), or the generic list (35%).
    cum = np.cumsum(mix, axis=1)
    draw = rng.random((n, length, 1))
    word_topic = (cum[:, None, :] < draw).sum(axis=2).clip(max=t - 1)
    source = rng.random((n, length))
    word_topic = np.where(source < 0.10, rng.integers(0, t, (n, length)), word_topic)
    words = vocab[word_topic, rng.integers(0, width, (n, length))]
    words = np.where(source > 0.65, generic[rng.integers(0, len(generic), (n, length))], words)

    # Title: a generic word and two words of the primary topic (one maybe of another topic).
    second = np.where(rng.random(n) < 0.3, rng.integers(0, t, n), primary)
    head = np.char.capitalize(generic[rng.integers(0, len(generic), n)])
    w1 = np.char.capitalize(vocab[primary, rng.integers(0, width, n)])
    w2 = np.char.capitalize(vocab[second, rng.integers(0, width, n)])
    title = np.char.add(np.char.add(np.char.add(np.char.add(head, " "), w1), " of "), w2)
    description = np.array([" ".join(row).capitalize() + "." for row in words])
    return title, description
