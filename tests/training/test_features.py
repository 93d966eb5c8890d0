"""Feature jobs and the Feast store: values against brute force, point-in-time
correctness (no leakage, exact visibility), incremental runs, cold start, clear errors."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audiorec.errors import AudiorecError
from audiorec.featurestore import (
    FeatureStoreConfig,
    feature_service,
    features_dir,
    online_features,
    open_store,
)
from training.data.embeddings import read_item_embeddings, write_item_embeddings
from training.features.jobs import run_feature_jobs
from training.features.layout import TABLES
from training.features.refresh import refresh_features
from training.features.retrieval import user_training_features
from training.features.store import apply_repo, load_repo_objects, materialize

UTC = timezone.utc


def make_embeddings(world, root, dim=16, seed=0):
    items = pq.read_table(world / "items.parquet").column("item_id").to_pylist()
    rng = np.random.default_rng(seed)
    write_item_embeddings(root / "hgnn.parquet", items, rng.normal(size=(len(items), dim)), "h1")
    write_item_embeddings(root / "text.parquet", items, rng.normal(size=(len(items), 8)), "t1")
    return root / "hgnn.parquet", root / "text.parquet"


@pytest.fixture(scope="module")
def fstore(tiny_world, tmp_path_factory):
    """The tiny world's features, applied and materialized into SQLite."""
    wd = tmp_path_factory.mktemp("fs")
    hgnn, text = make_embeddings(tiny_world, wd / "emb")
    report = refresh_features(tiny_world, wd, hgnn, text)
    return {
        "workdir": wd,
        "store": open_store(wd),
        "hgnn": hgnn,
        "text": text,
        "report": report,
        "world": tiny_world,
    }


def test_repo_declares_what_the_jobs_write(fstore):
    objs = load_repo_objects(fstore["workdir"])
    sources = {o.batch_source.name for o in objs if hasattr(o, "batch_source") and o.batch_source}
    assert sources == set(TABLES)
    for o in objs:
        if getattr(o, "batch_source", None) is not None:
            assert o.batch_source.path.startswith(str(features_dir(fstore["workdir"])))
    store = fstore["store"]
    user = {
        f.name
        for p in feature_service(store, "user_tower").feature_view_projections
        for f in p.features
    }
    assert {
        "country",
        "age",
        "language",
        "account_age_days",
        "music_vector",
        "audiobook_pref",
        "podcast_pref",
        "audiobook_items_90d",
        "audiobook_follow_count_90d",
        "audiobook_preview_count_90d",
        "audiobook_intent_to_pay_count_90d",
        "weak_audiobook_pref",
        "podcast_follow_count_90d",
    } <= user
    # the weak signals beyond follows are the focus type's (itemtypes.USER_WINDOW_FEATURES)
    assert not {"podcast_preview_count_90d", "weak_podcast_pref"} & user
    item = {
        f.name
        for p in feature_service(store, "item_tower").feature_view_projections
        for f in p.features
    }
    assert {
        "item_type",
        "language",
        "genre",
        "text_embedding",
        "hgnn_embedding",
        "streams_90d",
    } <= item


def _expected(world, hgnn, user_id: str, t: pd.Timestamp) -> dict:
    """Brute force: the 90-day aggregates of ``user_id`` as of time ``t``."""
    day = t.floor("D")
    con = duckdb.connect()
    rows = con.execute(
        f"""
        SELECT e.item_id, i.item_type, e.event_type FROM '{world}/events.parquet' e
        JOIN '{world}/items.parquet' i USING (item_id)
        WHERE e.user_id = ? AND e.ts < ? AND e.ts >= ?""",
        [user_id, day.to_pydatetime(), (day - pd.Timedelta(days=90)).to_pydatetime()],
    ).df()
    emb = read_item_embeddings(hgnn)
    vec = dict(zip(emb.item_id, emb.vectors))

    def mean(ids):
        ids = sorted(set(ids))
        return np.mean([vec[i] for i in ids], axis=0) if ids else np.zeros(emb.dim)

    out = {}
    for t in ("audiobook", "podcast"):
        mine = rows[rows.item_type == t]
        weak = mine[mine.event_type != "stream"]
        out.update(
            {
                f"{t}_pref": mean(mine.item_id),
                f"weak_{t}_pref": mean(weak.item_id),
                f"{t}_items_90d": mine.item_id.nunique(),
                f"{t}_streams_90d": int((mine.event_type == "stream").sum()),
                f"{t}_follow_count_90d": int((mine.event_type == "follow").sum()),
                f"{t}_preview_count_90d": int((mine.event_type == "preview").sum()),
                f"{t}_intent_to_pay_count_90d": int((mine.event_type == "intent_to_pay").sum()),
            }
        )
    # previews, intents and their embedding are declared for the focus type only
    for name in (
        "podcast_preview_count_90d",
        "podcast_intent_to_pay_count_90d",
        "weak_podcast_pref",
    ):
        del out[name]
    return out


def _assert_matches(row, expected):
    for k, v in expected.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_allclose(
                np.asarray(row[k], dtype=np.float64), v, atol=1e-5, err_msg=k
            )
        else:
            assert row[k] == v, k


def test_window_features_equal_brute_force_at_random_times(fstore):
    world = fstore["world"]
    con = duckdb.connect()
    users = (
        con.execute(f"""SELECT user_id FROM '{world}/events.parquet' e
        JOIN '{world}/items.parquet' i USING (item_id) WHERE i.item_type = 'audiobook'
        GROUP BY 1 ORDER BY count(*) DESC LIMIT 6""")
        .df()
        .user_id.tolist()
    )
    rng = np.random.default_rng(1)
    start = pd.Timestamp("2026-07-01", tz="UTC")
    times = [start + pd.Timedelta(seconds=int(s)) for s in rng.integers(0, 120 * 86400, 12)]
    ex = pd.DataFrame({"user_id": np.repeat(users, 2)[:12], "event_timestamp": times})
    got = user_training_features(fstore["store"], ex)
    assert len(got) == len(ex)
    for _, row in got.iterrows():
        _assert_matches(row, _expected(world, fstore["hgnn"], row.user_id, row.event_timestamp))


def test_profile_and_music_rows_are_as_of_the_time(fstore):
    ex = pd.DataFrame(
        {
            "user_id": ["u0000010", "u0000010"],
            "event_timestamp": pd.to_datetime(["2026-08-01 12:00", "2026-10-30 00:00"], utc=True),
        }
    )
    got = user_training_features(fstore["store"], ex).sort_values("event_timestamp")
    users = pq.read_table(fstore["world"] / "users.parquet").to_pandas().set_index("user_id")
    u = users.loc["u0000010"]
    assert (got.country == u.country).all() and (got.age == u.age).all()
    # weekly snapshots (Mondays): account age as of the last Monday at or before the time
    for _, r in got.iterrows():
        monday = r.event_timestamp.floor("D") - pd.Timedelta(days=r.event_timestamp.weekday())
        assert r.account_age_days == (monday - u.signup_ts).days
    assert all(len(v) == 32 for v in got.music_vector)


def test_cold_start_user_is_zeros_and_unknown_user_is_null(fstore):
    world = fstore["world"]
    cold = (
        duckdb.connect()
        .execute(f"""
        SELECT user_id FROM '{world}/users.parquet' WHERE signup_ts < '2026-06-01' AND user_id
        NOT IN (SELECT user_id FROM '{world}/events.parquet') ORDER BY 1 LIMIT 1""")
        .fetchone()[0]
    )
    ex = pd.DataFrame(
        {
            "user_id": [cold, "nobody"],
            "event_timestamp": pd.to_datetime(["2026-09-15"] * 2, utc=True),
        }
    )
    got = user_training_features(fstore["store"], ex).set_index("user_id")
    assert (
        got.loc[cold, "audiobook_items_90d"] == 0
        and got.loc[cold, "audiobook_follow_count_90d"] == 0
    )
    assert np.allclose(got.loc[cold, "audiobook_pref"], 0)
    assert len(got.loc[cold, "audiobook_pref"]) == 16
    assert pd.isna(got.loc["nobody", "audiobook_items_90d"])
    on = online_features(fstore["store"], [cold, "nobody"])
    assert on["audiobook_items_90d"] == [0, None] and on["country"][1] is None
    assert on["country"][0] is not None and len(on["music_vector"][0]) == 32


def _plant_burst(src, dst, user, at):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("truth", "*.json"))
    ev = pq.read_table(dst / "events.parquet")
    n = 25
    burst = pa.table(
        {
            "user_id": [user] * n,
            "item_id": ["ab000001"] * n,
            "event_type": ["follow"] * 5 + ["stream"] * 20,
            "ts": pa.array(
                [at + timedelta(minutes=i) for i in range(n)], type=pa.timestamp("us", tz="UTC")
            ),
            "ms_played": pa.array([None] * 5 + [60_000] * 20, type=pa.int64()),
        },
        schema=ev.schema,
    )
    pq.write_table(pa.concat_tables([ev, burst]), dst / "events.parquet")


def test_no_training_row_at_or_before_t_sees_a_later_burst(fstore, tmp_path):
    world, hgnn, text = fstore["world"], fstore["hgnn"], fstore["text"]
    user = "u0000003"
    t = datetime(2026, 9, 10, 15, 0, tzinfo=UTC)
    _plant_burst(world, tmp_path / "burst", user, t + timedelta(microseconds=1))
    wd = tmp_path / "wd"
    refresh_features(tmp_path / "burst", wd, hgnn, text)
    before = pd.to_datetime(
        [t - timedelta(days=30), t - timedelta(hours=15), t, t + timedelta(hours=8, minutes=59)],
        utc=True,
    )
    ex = pd.DataFrame({"user_id": [user] * len(before), "event_timestamp": before})
    base = user_training_features(fstore["store"], ex).sort_values("event_timestamp")
    planted = user_training_features(open_store(wd), ex).sort_values("event_timestamp")
    cols = ["audiobook_items_90d", "audiobook_streams_90d", "audiobook_follow_count_90d"]
    pd.testing.assert_frame_equal(
        base[cols].reset_index(drop=True), planted[cols].reset_index(drop=True)
    )
    # ... and the first snapshot after the burst (next midnight) does see it
    after = pd.DataFrame(
        {
            "user_id": [user],
            "event_timestamp": pd.to_datetime([datetime(2026, 9, 11, tzinfo=UTC)], utc=True),
        }
    )
    a0 = user_training_features(fstore["store"], after).iloc[0]
    a1 = user_training_features(open_store(wd), after).iloc[0]
    assert a1.audiobook_follow_count_90d == a0.audiobook_follow_count_90d + 5
    assert a1.audiobook_streams_90d == a0.audiobook_streams_90d + 20


def test_a_feature_row_becomes_visible_exactly_at_its_timestamp(fstore):
    rows = pq.read_table(features_dir(fstore["workdir"]) / "user_windows").to_pandas()
    rows = rows.sort_values(["user_id", "event_timestamp"])
    changed = rows[
        rows.user_id.eq(rows.user_id.shift())
        & rows.audiobook_items_90d.ne(rows.audiobook_items_90d.shift())
    ]
    row = changed.iloc[len(changed) // 2]
    ts = row.event_timestamp
    ex = pd.DataFrame(
        {"user_id": [row.user_id] * 2, "event_timestamp": [ts - pd.Timedelta(microseconds=1), ts]}
    )
    got = user_training_features(fstore["store"], ex).sort_values("event_timestamp")
    prev = rows[(rows.user_id == row.user_id) & (rows.event_timestamp < ts)].iloc[-1]
    assert got.iloc[0].audiobook_items_90d == prev.audiobook_items_90d
    assert got.iloc[1].audiobook_items_90d == row.audiobook_items_90d


def test_incremental_days_equal_a_full_rebuild_and_touch_only_new_dates(fstore, tmp_path):
    world, hgnn, text = fstore["world"], fstore["hgnn"], fstore["text"]
    last = fstore["report"].jobs.through
    wd = tmp_path / "inc"
    first_run = run_feature_jobs(world, wd, hgnn, text, through=last - timedelta(days=10))
    assert first_run.full_rebuild
    daily = run_feature_jobs(world, wd, hgnn, text, through=last - timedelta(days=9))
    assert not daily.full_rebuild and daily.first == daily.through == last - timedelta(days=9)
    new_file = features_dir(wd) / "user_windows" / f"{daily.first}_{daily.through}.parquet"
    stamps = pq.read_table(new_file).column("event_timestamp").to_pandas()
    # window rows at the new date, plus zero baselines of the day's new signups
    lo = pd.Timestamp(daily.first, tz="UTC") - pd.Timedelta(days=1)
    assert ((stamps >= lo) & (stamps <= pd.Timestamp(daily.first, tz="UTC"))).all()
    assert (stamps == pd.Timestamp(daily.first, tz="UTC")).sum() > 0
    rest = run_feature_jobs(world, wd, hgnn, text, through=last)
    assert rest.first == last - timedelta(days=8)
    assert run_feature_jobs(world, wd, hgnn, text, through=last).first is None  # up to date

    def load(root, table):
        df = pq.read_table(features_dir(root) / table).to_pandas()
        df = df.map(lambda v: tuple(np.round(v, 5)) if isinstance(v, np.ndarray) else v)
        return df.sort_values(list(df.columns[:2])).reset_index(drop=True)

    for table in ("user_windows", "item_popularity", "user_profile", "user_music", "item_content"):
        pd.testing.assert_frame_equal(
            load(wd, table), load(fstore["workdir"], table), check_dtype=False
        )


def test_new_embedding_version_rebuilds_history(fstore, tmp_path):
    world = fstore["world"]
    wd = tmp_path / "v"
    h1, text = make_embeddings(world, tmp_path / "e1")
    run_feature_jobs(world, wd, h1, text)
    h2, _ = make_embeddings(world, tmp_path / "e2", seed=5)
    items = pq.read_table(h2).column("item_id").to_pylist()
    write_item_embeddings(h2, items, read_item_embeddings(h2).vectors, "h2")
    again = run_feature_jobs(world, wd, h2, text)
    assert again.full_rebuild
    assert [p.name for p in (features_dir(wd) / "item_hgnn").iterdir()] == ["h2.parquet"]


def test_clear_errors(fstore, tmp_path):
    with pytest.raises(
        AudiorecError,
        match="unknown feature service 'user_towr'; known: item_tower, user_online, user_tower",
    ):
        user_training_features(
            fstore["store"],
            pd.DataFrame(
                {"user_id": ["u1"], "event_timestamp": pd.to_datetime(["2026-09-01"], utc=True)}
            ),
            service="user_towr",
        )
    with pytest.raises(AudiorecError, match="must be timezone-aware"):
        user_training_features(
            fstore["store"],
            pd.DataFrame({"user_id": ["u1"], "event_timestamp": pd.to_datetime(["2026-09-01"])}),
        )
    wd = tmp_path / "broken"
    shutil.copytree(fstore["workdir"] / "features", wd / "features")
    for f in (wd / "features" / "user_music").glob("*.parquet"):
        f.unlink()
    with pytest.raises(AudiorecError, match=r"feature source files missing under .*: user_music"):
        apply_repo(wd)
    with pytest.raises(AudiorecError, match="item-embedding table .* does not exist"):
        run_feature_jobs(fstore["world"], wd, tmp_path / "nope.parquet", fstore["text"])


def test_unreachable_redis_is_one_clear_error(fstore, free_port):
    cfg = FeatureStoreConfig(online="redis", redis=f"127.0.0.1:{free_port}")
    store = open_store(fstore["workdir"], cfg)
    message = rf"Redis online store at 127.0.0.1:{free_port} is unreachable"
    with pytest.raises(AudiorecError, match=message):
        materialize(
            store, datetime(2026, 11, 2, tzinfo=UTC), start=datetime(2026, 10, 1, tzinfo=UTC)
        )
    with pytest.raises(AudiorecError, match=message):
        online_features(store, ["u0000001"])


def test_truncated_history_is_still_complete_inside_it(fstore, tmp_path):
    """A full rebuild of only the last 20 snapshot dates anchors every user's window at
    its first date: values inside that history equal brute force."""
    from training.features.config import FeatureJobConfig

    world, hgnn, text = fstore["world"], fstore["hgnn"], fstore["text"]
    wd = tmp_path / "short"
    report = refresh_features(world, wd, hgnn, text, jobs=FeatureJobConfig(history_days=20))
    assert report.jobs.first == report.jobs.through - timedelta(days=19)
    start = pd.Timestamp(report.jobs.first, tz="UTC")
    users = ["u0000001", "u0000007", "u0000013", "u0000021"]
    times = [
        start + pd.Timedelta(hours=5),
        start + pd.Timedelta(days=3, hours=1),
        start + pd.Timedelta(days=11),
        start + pd.Timedelta(days=18, hours=7),
    ]
    got = user_training_features(
        open_store(wd), pd.DataFrame({"user_id": users, "event_timestamp": times})
    )
    for _, row in got.iterrows():
        _assert_matches(row, _expected(world, hgnn, row.user_id, row.event_timestamp))


def test_daily_refresh_materializes_only_new_dates_and_matches_a_full_one(fstore, tmp_path):
    from training.features.windows import midnight

    world, hgnn, text = fstore["world"], fstore["hgnn"], fstore["text"]
    last = fstore["report"].jobs.through
    wd = tmp_path / "daily"
    refresh_features(world, wd, hgnn, text, through=last - timedelta(days=5))
    daily = refresh_features(world, wd, hgnn, text)
    assert daily.materialized_from == midnight(last - timedelta(days=5))
    assert refresh_features(world, wd, hgnn, text).materialized_from is None  # up to date
    users = [f"u{i:07d}" for i in range(0, 1000, 37)]
    assert_same_features(
        online_features(open_store(wd), users), online_features(fstore["store"], users)
    )


def assert_same_features(a: dict, b: dict) -> None:
    """Two online reads ({feature: [values]}) agree, vectors to float precision."""
    assert set(a) == set(b)
    for k in a:
        for x, y in zip(a[k], b[k]):
            if isinstance(x, list):
                np.testing.assert_allclose(x, y, rtol=1e-6, err_msg=k)
            else:
                assert x == y, k
