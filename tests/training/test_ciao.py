"""The Ciao adapter on a small slice of the real files (users with id <= 800).

The tests that read the data skip, with the reason, where ../shared/data/ciao-tang is
absent (the data is never copied into the repository); the bad-source errors always run."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from audiorec.errors import AudiorecError
from training.data.ciao import CiaoConfig, import_ciao, read_categories

SRC = Path(
    os.environ.get("AUDIOREC_CIAO", Path(__file__).resolve().parents[3] / "shared/data/ciao-tang")
)
needs_data = pytest.mark.skipif(
    not (SRC / "ratings.csv.gz").is_file(),
    reason=f"Ciao data not found at {SRC} (set AUDIOREC_CIAO)",
)
SLICE = 800


@pytest.fixture(scope="module")
def ciao(tmp_path_factory):
    out = tmp_path_factory.mktemp("ciao") / "data"
    # with the trust network, to test the follows it derives (off by default)
    report = import_ciao(SRC, out, CiaoConfig(use_trust=True), limit_users=SLICE)
    raw = pd.read_csv(SRC / "ratings.csv.gz")
    raw = raw[(raw.user_id <= SLICE) & raw.category_id.isin([1, 2]) & (raw.rating > 0)]
    tables = {
        n: pd.read_parquet(out / f"{n}.parquet") for n in ("users", "items", "events", "music")
    }
    return out, report, raw, tables


@needs_data
def test_categories_are_read_by_name():
    cats = read_categories(SRC)
    assert cats["DVDs"] == 1 and cats["Books"] == 2 and len(cats) == 28


@needs_data
def test_k_core_holds_and_counts_shrink(ciao):
    _, report, _, t = ciao
    ratings = t["events"][t["events"].event_type != "follow"]
    assert ratings.groupby("item_id").user_id.nunique().min() >= 3
    assert ratings.groupby("user_id").item_id.nunique().min() >= 3
    before, after = report["before"], report["after"]
    assert after["ratings"] == len(ratings) < before["ratings"]
    assert after["users"] == len(t["users"]) < before["users"]
    assert after["sparse_items"] + after["dense_items"] == len(t["items"])
    assert (t["items"].item_type == "audiobook").sum() == after["sparse_items"] > 0


@needs_data
def test_a_rating_becomes_a_stream_or_a_preview(ciao):
    _, _, raw, t = ciao
    ev = t["events"]
    kept = raw[raw.user_id.map(lambda u: f"u{u}").isin(set(t["users"].user_id))]
    kept = kept.assign(
        iid=np.where(kept.category_id == 2, "a", "p") + kept.item_id.astype(str),
        uid="u" + kept.user_id.astype(str),
    )
    kept = kept[kept.iid.isin(set(t["items"].item_id))]
    row = kept[kept.rating == 5].iloc[0]
    day = datetime.fromtimestamp(int(row.timestamp), timezone.utc)
    hit = ev[(ev.user_id == row.uid) & (ev.item_id == row.iid)]
    assert list(hit.event_type) == ["stream"] and hit.ms_played.iloc[0] == 5 * 60_000
    assert hit.ts.iloc[0] == pd.Timestamp(day)
    low = kept[kept.rating <= 2].iloc[0]
    hit = ev[(ev.user_id == low.uid) & (ev.item_id == low.iid)]
    assert list(hit.event_type) == ["preview"] and pd.isna(hit.ms_played.iloc[0])
    # Books play the audiobook role, DVDs the podcast role
    types = t["items"].set_index("item_id").item_type
    assert types[row.iid] == ("audiobook" if row.category_id == 2 else "podcast")


@needs_data
def test_follows_are_earlier_endorsements_by_three_trusted_users(ciao):
    _, _, raw, t = ciao
    trust = pd.read_csv(SRC / "trust.csv.gz")
    all_raw = pd.read_csv(SRC / "ratings.csv.gz")
    all_raw = all_raw[all_raw.category_id.isin([1, 2]) & (all_raw.user_id <= SLICE)]
    follows = t["events"][t["events"].event_type == "follow"]
    assert len(follows) > 0
    for f in follows.sample(20, random_state=0).itertuples():
        user, item = int(f.user_id[1:]), int(f.item_id[1:])
        cat = 2 if f.item_id[0] == "a" else 1
        trusted = set(trust[trust.truster_id == user].trustee_id)
        at = f.ts.timestamp()
        endorsers = all_raw[
            (all_raw.item_id == item)
            & (all_raw.category_id == cat)
            & all_raw.user_id.isin(trusted)
            & (all_raw.rating >= 4)
            & (all_raw.timestamp <= at)
        ]
        assert endorsers.user_id.nunique() >= 3
        own = all_raw[
            (all_raw.user_id == user)
            & (all_raw.item_id == item)
            & (all_raw.category_id == cat)
            & (all_raw.timestamp <= at)
        ]
        assert own.empty


@needs_data
def test_music_vectors_are_point_in_time_shares_of_other_categories(ciao):
    out, _, _, t = ciao
    music, users = t["music"], t["users"]
    assert set(music.user_id) == set(users.user_id)
    vec = np.stack(music.music_vector.to_numpy())
    assert vec.shape[1] == 26 + 2
    share = vec[:, :26].sum(axis=1)
    assert np.all(np.isclose(share, 1, atol=1e-5) | np.isclose(share, 0))
    first = music.sort_values("event_timestamp").groupby("user_id").head(1)
    signup = users.set_index("user_id").signup_ts
    assert (first.event_timestamp.to_numpy() == signup[first.user_id].to_numpy()).all()
    # hand check: the busiest user's last snapshot counts exactly their earlier ratings
    all_raw = pd.read_csv(SRC / "ratings.csv.gz")
    uid = music.user_id.value_counts().index[0]
    snap = music[music.user_id == uid].sort_values("event_timestamp").iloc[-1]
    mine = all_raw[
        (all_raw.user_id == int(uid[1:]))
        & ~all_raw.category_id.isin([1, 2])
        & (all_raw.rating > 0)
        & (all_raw.timestamp < snap.event_timestamp.timestamp())
    ]
    mine = mine.drop_duplicates()
    counts = np.bincount(mine.category_id, minlength=29)[3:]
    np.testing.assert_allclose(np.asarray(snap.music_vector[:26]), counts / counts.sum(), atol=1e-6)


@needs_data
def test_protocol_on_a_share_of_days(ciao):
    from training.data import Dataset
    from training.data.protocol import build_protocol
    from training.evaluation.run import EvaluationConfig, holdout_cut

    out = ciao[0]
    end = Dataset.open(out).default_cut
    cut = holdout_cut(out, end, EvaluationConfig(holdout_share=0.2))
    con = duckdb.connect()
    first = con.execute(f"SELECT min(ts) FROM '{out}/events.parquet'").fetchone()[0]
    span = (end - first.replace(hour=0)).days
    assert abs((end - cut).days - 0.2 * span) <= 1
    proto = build_protocol(out, cut, end)
    assert len(proto.truth["audiobook"].groups["warm"]) > 0
    assert proto.truth["podcast"].targets.nnz > 0


@needs_data
def test_the_k_core_counts_only_ratings_before_the_cut(ciao):
    """Every kept item has 3 raters and every kept user 3 rated items before the cut; the
    kept users' later ratings of kept items stay (they are the hold-out)."""
    _, report, raw, t = ciao
    cut = pd.Timestamp(report["cut"], tz="UTC")
    ratings = t["events"][t["events"].event_type != "follow"]
    before = ratings[ratings.ts < cut]
    assert before.groupby("item_id").user_id.nunique().reindex(t["items"].item_id).min() >= 3
    assert before.groupby("user_id").item_id.nunique().reindex(t["users"].user_id).min() >= 3
    assert (ratings.ts >= cut).sum() > 0  # the hold-out is there
    assert (t["items"].publish_ts < cut).all()


@needs_data
def test_the_import_is_blind_to_the_future(tmp_path):
    """Removing, changing and adding ratings after the cut changes no user, no item, no
    event and no music snapshot before it: only what the hold-out scores."""
    import shutil

    cut = pd.Timestamp("2009-06-01", tz="UTC")
    raw = pd.read_csv(SRC / "ratings.csv.gz")
    raw = raw[raw.user_id <= 300]
    after = raw.timestamp >= cut.timestamp()
    later = raw[after].sample(frac=0.5, random_state=0)
    changed = later.assign(rating=6 - later.rating)  # the other half removed, this changed
    extra = (
        raw[~after]
        .sample(200, random_state=1)
        .assign(  # new ratings after the cut
            timestamp=int(cut.timestamp()) + 86_400 * 30, user_id=lambda d: d.user_id % 300 + 1
        )
    )
    src = tmp_path / "future"
    src.mkdir()
    pd.concat([raw[~after], changed, extra]).to_csv(src / "ratings.csv.gz", index=False)
    for name in ("trust.csv.gz", "catalog_ciao.txt"):
        shutil.copy(SRC / name, src / name)
    cfg = CiaoConfig(cut=cut.date())
    import_ciao(SRC, tmp_path / "a", cfg, limit_users=300)
    import_ciao(src, tmp_path / "b", cfg, limit_users=300)

    def read(which: str, name: str) -> pd.DataFrame:
        return pd.read_parquet(tmp_path / which / f"{name}.parquet")

    for name in ("users", "items"):
        pd.testing.assert_frame_equal(read("a", name), read("b", name))
    for name, ts in (("events", "ts"), ("music", "event_timestamp")):
        a, b = read("a", name), read("b", name)
        a, b = (x[x[ts] < cut].reset_index(drop=True) for x in (a, b))
        pd.testing.assert_frame_equal(a, b)
    assert len(read("a", "events")) != len(read("b", "events"))  # the hold-out differs


def test_a_folder_that_is_not_ciao_is_one_clear_error(tmp_path, capsys):
    from app.cli import main

    with pytest.raises(AudiorecError, match="not a Ciao folder"):
        import_ciao(tmp_path, tmp_path / "out")
    rc = main(["import", "ciao", "--src", str(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "not a Ciao folder" in err
    assert "mTrust" in err and "ratings.csv.gz (user_id" in err  # where the data comes from
    assert not (tmp_path / "out").exists()


@needs_data
def test_an_unknown_category_is_one_clear_error(tmp_path):
    with pytest.raises(AudiorecError, match="unknown Ciao category 'Audiobooks'"):
        import_ciao(SRC, tmp_path / "out", CiaoConfig(sparse_category="Audiobooks"))
    assert not (tmp_path / "out").exists()


@needs_data
def test_cli_import_prints_counts(tmp_path, capsys):
    from app.cli import main

    rc = main(
        [
            "import",
            "ciao",
            "--src",
            str(SRC),
            "--out",
            str(tmp_path / "d"),
            "--sparse",
            "Music",
            "--min-item-ratings",
            "5",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0 and "Music (audiobook role) + DVDs (podcast role)" in printed
    assert (tmp_path / "d" / "import_report.json").is_file()
    rc = main(
        ["import", "ciao", "--src", str(SRC), "--out", str(tmp_path / "e"), "--dense", "Nope"]
    )
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "unknown Ciao category 'Nope'" in err
