"""Generate a synthetic world and write it in the data contract, atomically.

Layout of the output directory::

    users.parquet  music.parquet  items.parquet  events.parquet   (the data contract)
    truth/users.parquet  truth/items.parquet   (planted tastes and topics, for tests)
    world.json     (config, seed, dates: start, audiobook launch, hold-out start, end)
    stats.json     (the paper's facts a-g as measured on the written files)

Everything is written under a temporary sibling directory, validated against the contract,
measured, and only then renamed into place: a failed run never leaves a half-written world.
Cost: O(users + items) memory for the population and catalogue; events are produced and
written one chunk of users at a time, so peak memory grows with the chunk, not the total.
"""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from audiorec.errors import AudiorecError
from audiorec.publish import staged_directory
from training.data.arrow import vector_column
from training.data.contract import CONTRACT, validate_dataset
from training.synth.behaviour import EVENT_TYPE_NAMES, ItemPicker, chunk_events
from training.synth.catalog import AUDIOBOOK, PODCAST, make_catalog
from training.synth.config import WorldConfig
from training.synth.population import make_population, music_projection, music_vectors
from training.synth.vocab import COUNTRIES, LANGUAGES, TOPICS

_WRITE = dict(compression="zstd", use_dictionary=True, write_statistics=True)


def world_dates(cfg: WorldConfig) -> dict[str, datetime]:
    """The world's calendar (UTC midnights): start, audiobook launch, hold-out start, end."""
    end = datetime.combine(cfg.end_date, time(), tzinfo=timezone.utc)
    start = end - timedelta(days=cfg.days)
    return {
        "start": start,
        "audiobook_launch": start + timedelta(days=cfg.audiobook_launch_day),
        "holdout_start": end - timedelta(days=cfg.holdout_days),
        "end": end,
    }


def _ts(start: datetime, day: np.ndarray) -> pa.Array:
    """Days from ``start`` -> timestamp[us, UTC], rounded to the second."""
    base = int(start.timestamp()) * 1_000_000
    us = base + np.round(np.asarray(day, dtype=np.float64) * 86_400).astype(np.int64) * 1_000_000
    return pa.array(us, type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def generate_world(
    cfg: WorldConfig,
    seed: int,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    text_model: str | None = None,
) -> dict:
    """Write a world to ``out`` and return its stats (also in ``out/stats.json``)."""
    from training.synth.stats import compute_stats  # loads the text model lazily

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise AudiorecError(f"{out} exists and is not empty; pass --overwrite to replace it")
    with staged_directory(out) as tmp:
        _write_world(cfg, seed, tmp, progress)
        validate_dataset(tmp)
        stats = compute_stats(tmp, cfg, seed, text_model=text_model, progress=progress)
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, default=str))
    return stats


def _write_world(cfg: WorldConfig, seed: int, root: Path, progress: bool) -> None:
    seeds = np.random.SeedSequence(seed)
    s_pop, s_cat, s_music, s_events = seeds.spawn(4)
    dates = world_dates(cfg)
    start = dates["start"]

    pop = make_population(cfg, np.random.default_rng(s_pop))
    cat = make_catalog(cfg, np.random.default_rng(s_cat))
    user_ids = pa.array(np.char.add("u", np.char.zfill(np.arange(pop.n).astype(str), 7)))
    item_ids = pa.array(cat.item_id)
    _write_users_items(root, pop, cat, start, user_ids, item_ids)
    _write_truth(root / "truth", pop, cat, user_ids, item_ids)
    n_events = _write_events(
        root, cfg, pop, cat, start, user_ids, item_ids, s_music, s_events, progress
    )
    (root / "world.json").write_text(
        json.dumps(
            {
                "seed": seed,
                "config": cfg.model_dump(mode="json"),
                "dates": {k: v.isoformat() for k, v in dates.items()},
                "topics": [name for name, _, _ in TOPICS[: cfg.n_topics]],
                "events": n_events,
            },
            indent=2,
        )
    )


def _write_users_items(root: Path, pop, cat, start, user_ids: pa.Array, item_ids: pa.Array) -> None:
    """users.parquet and items.parquet, under the data contract's schemas."""
    countries = pa.array([c[0] for c in COUNTRIES])
    langs = pa.array(list(LANGUAGES))
    pq.write_table(
        pa.table(
            {
                "user_id": user_ids,
                "country": countries.take(pa.array(pop.country.astype(np.int32))),
                "age": pa.array(pop.age.astype(np.int32)),
                "language": langs.take(pa.array(pop.language.astype(np.int32))),
                "signup_ts": _ts(start, pop.signup_day),
            },
            schema=CONTRACT["users"].schema,
        ),
        root / "users.parquet",
        **_WRITE,
    )
    pq.write_table(
        pa.table(
            {
                "item_id": item_ids,
                "item_type": pa.array(cat.type_name.astype(str), pa.string()),
                "title": pa.array(cat.title),
                "description": pa.array(cat.description),
                "language": langs.take(pa.array(cat.language.astype(np.int32))),
                "genre": pa.array(cat.genre),
                "publish_ts": _ts(start, cat.publish_day),
            },
            schema=CONTRACT["items"].schema,
        ),
        root / "items.parquet",
        **_WRITE,
    )


def _write_events(
    root: Path,
    cfg: WorldConfig,
    pop,
    cat,
    start,
    user_ids: pa.Array,
    item_ids: pa.Array,
    s_music: np.random.SeedSequence,
    s_events: np.random.SeedSequence,
    progress: bool,
) -> int:
    """music.parquet and events.parquet, one chunk of users at a time; the event count."""
    pickers = {
        k: ItemPicker.build(cat, k, cfg.n_topics, len(LANGUAGES)) for k in (AUDIOBOOK, PODCAST)
    }
    rng_music = np.random.default_rng(s_music)
    proj = music_projection(cfg, rng_music)
    chunks = [
        np.arange(lo, min(lo + cfg.chunk_users, pop.n)) for lo in range(0, pop.n, cfg.chunk_users)
    ]
    chunk_seeds = s_events.spawn(len(chunks))
    etypes = pa.array(list(EVENT_TYPE_NAMES))
    n_events = 0
    with (
        pq.ParquetWriter(root / "music.parquet", CONTRACT["music"].schema, **_WRITE) as mw,
        pq.ParquetWriter(root / "events.parquet", CONTRACT["events"].schema, **_WRITE) as ew,
    ):
        bar = tqdm(chunks, desc="events", unit="chunk", disable=None if progress else True)
        for users, cs in zip(bar, chunk_seeds):
            mu, mday, mvec = music_vectors(cfg, pop, users, proj, rng_music)
            mw.write_table(
                pa.table(
                    {
                        "user_id": user_ids.take(pa.array(mu)),
                        "music_vector": vector_column(mvec),
                        "event_timestamp": _ts(start, mday),
                    },
                    schema=CONTRACT["music"].schema,
                )
            )
            ev = chunk_events(cfg, pop, users, pickers, np.random.default_rng(cs))
            ms = pa.array(ev.ms_played, mask=ev.ms_played < 0, type=pa.int64())
            ew.write_table(
                pa.table(
                    {
                        "user_id": user_ids.take(pa.array(ev.user)),
                        "item_id": item_ids.take(pa.array(ev.item)),
                        "event_type": etypes.take(pa.array(ev.event_type.astype(np.int32))),
                        "ts": _ts(start, ev.day),
                        "ms_played": ms,
                    },
                    schema=CONTRACT["events"].schema,
                )
            )
            n_events += len(ev.user)
            bar.set_postfix(events=f"{n_events:,}")
    return n_events


def _write_truth(root: Path, pop, cat, user_ids: pa.Array, item_ids: pa.Array) -> None:
    """The planted truth: what tests and diagnostics may compare learned models against."""
    root.mkdir()
    t = pop.theta.shape[1]
    pq.write_table(
        pa.table(
            {
                "user_id": user_ids,
                "taste": pa.FixedSizeListArray.from_arrays(pa.array(pop.theta.ravel()), t),
                "adopter": pa.array(pop.adopter),
                "podcast_listener": pa.array(pop.podcast_listener),
                "activity": pa.array(pop.activity),
                "audiobook_activity": pa.array(pop.audiobook_activity),
                "adoption_day": pa.array(
                    np.where(np.isfinite(pop.adoption_day), pop.adoption_day, -1.0)
                ),
            }
        ),
        root / "users.parquet",
        **_WRITE,
    )
    pq.write_table(
        pa.table(
            {
                "item_id": item_ids,
                "primary_topic": pa.array(cat.primary_topic.astype(np.int32)),
                "topics": pa.FixedSizeListArray.from_arrays(pa.array(cat.topics.ravel()), t),
                "popularity": pa.array(cat.popularity),
            }
        ),
        root / "items.parquet",
        **_WRITE,
    )
