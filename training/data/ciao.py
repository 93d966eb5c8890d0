"""Ciao (Tang, Gao, Liu; WSDM 2012 / KDD 2012) as a dataset of the data contract.

The real, public Ciao ratings (day timestamps 2000-2011, 28 product categories) and its
user -> user trust network, read from the source folder at run time (research use only:
never copied into the repository). The mapping onto the 2T-HGNN setting:

===============  =========================================================================
contract         Ciao
===============  =========================================================================
audiobooks       items of ``sparse_category`` (Books: 1.7 ratings per item)
podcasts         items of ``dense_category`` (DVDs: 3.5 ratings per item)
stream           a rating >= ``stream_min_rating`` of such an item, on the rating day;
                 ``ms_played`` = rating x 60,000 (the rating, for duration-weighted features)
preview (weak)   a rating below ``stream_min_rating``: the user tried the item and did not
                 like it. Their own action, so no leakage; about 8% of ratings.
follow (weak)    only with ``use_trust``: an item rated >= 4 by ``trust_endorsements`` users
                 the user trusts, on the day the last of them rated it ("friends endorsed
                 it"). The trust network has no timestamps (it was crawled at the end), so
                 it is off by default: nothing undated enters a temporal evaluation.
music vector     the user's taste elsewhere on Ciao: share of their ratings so far in each
                 other category (with ``use_trust`` also log1p trust out/in degree / 10);
                 a snapshot every ``music_every_days`` with activity, one at signup.
users            signup = first rating in any category; no country, age or language exists
                 (constants GB / 0 / en).
items            no title or description exists: the text is "<category> #<id>", so text
                 features (LLM-KNN, text embeddings) carry almost nothing here.
===============  =========================================================================

Filtering: an iterated k-core on the two categories' ratings (every kept item has at least
``min_item_ratings`` ratings from kept users, every kept user ``min_user_ratings`` ratings
of kept items), counted on the ratings before the evaluation's cut only (the last
``holdout_share`` of days is held out): who is in is decided by what was known at the
cut, never by the hold-out (counted over the whole period, 19% of the Books pass only
because of raters after the cut, and they carry 43% of the Books targets). The kept users'
ratings of kept items after the cut stay: they are the hold-out. The cut goes to
``import_report.json`` with the counts before and after; ``audiorec ciao`` evaluates at
that cut. Rating 0 (undefined, 34 rows) and exact duplicates are dropped.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from audiorec.config import StrictConfig
from audiorec.errors import AudiorecError
from audiorec.publish import staged_directory
from training.data.contract import CONTRACT, validate_dataset
from training.data.duck import sql_literal

FILES = ("ratings.csv.gz", "trust.csv.gz", "catalog_ciao.txt")
WHERE_FROM = (
    "Ciao is public research data (Tang, Gao, Liu: mTrust, WSDM 2012; eTrust, KDD 2012), "
    "distributed as rating_with_timestamp.mat, trustnetwork.mat and catalog_ciao.txt (for "
    "example in the GitHub repository yushundong/Graph-Mining-Fairness-Data); the folder "
    "needs catalog_ciao.txt and the two matrices as CSV: ratings.csv.gz (user_id, item_id, "
    "category_id, rating, helpfulness, timestamp) and trust.csv.gz (truster_id, trustee_id)"
)

# EvaluationConfig overrides for Ciao's time scale (11 years, a few ratings per user per
# year) where the defaults assume a 150-day streaming world: the last 20% of days held out,
# the whole history in the graph and in the item averages, two-year feature windows,
# one-year popularity, a half-year validation slice.
EVALUATION_PRESET = {
    "holdout_share": 0.2,
    "ablation_seeds": 3,  # ablations train in seconds here,
    "hgnn_seeds": 3,  # and one HGNN draw moves the small hold-out's HR@10 a lot
    "history_days": 4000,
    "popularity_days": 365,
    "selection_trials": 6,  # every model (peers, towers) tries 6 settings on validation
    "pipeline": {
        "graph": {"window_days": 4000},
        "hgnn": {"max_epochs": 20, "patience": 3, "max_steps_per_epoch": 60},
        "features": {"window_days": 730, "profile_every_days": 90},
        # a year of validation: the prior's beta and the towers' settings are chosen on
        # it, and half a year held too few users (67 warm) to choose beta stably
        "two_tower": {"validation_days": 365},
    },
}


class CiaoConfig(StrictConfig):
    sparse_category: str = "Books"  # the audiobook role
    dense_category: str = "DVDs"  # the podcast role
    min_item_ratings: int = Field(3, ge=1)
    min_user_ratings: int = Field(3, ge=1)
    stream_min_rating: int = Field(3, ge=1, le=5)
    # the share of days (of the two categories' span) the evaluation holds out; the k-core
    # counts only the ratings before it. None: over the whole period (not for an evaluation)
    holdout_share: float | None = Field(0.2, gt=0, lt=1)
    cut: date | None = None  # the cut itself, instead of holdout_share
    # the undated trust network: follow events and trust degrees (off: see the docstring)
    use_trust: bool = False
    trust_endorsements: int = Field(3, ge=1)  # trusted raters that make a follow
    music_every_days: int = Field(90, ge=1)


def read_categories(src: Path) -> dict[str, int]:
    """Category name -> id from ``catalog_ciao.txt`` ("<id> <name>" per line, CRLF)."""
    names = {}
    for line in (src / "catalog_ciao.txt").read_text(encoding="latin-1").splitlines():
        if line.strip():
            cid, name = line.strip().split(" ", 1)
            names[name.strip()] = int(cid)
    return names


def import_ciao(
    src: str | Path, out: str | Path, cfg: CiaoConfig = CiaoConfig(), limit_users: int | None = None
) -> dict:
    """Write the contract tables for Ciao into ``out`` (atomically) and return the import
    report. ``limit_users``: keep only users with id <= it (a small real slice, for tests)."""
    src = Path(src)
    missing = [f for f in FILES if not (src / f).is_file()]
    if missing:
        raise AudiorecError(
            f"{src}: not a Ciao folder (missing {', '.join(missing)}). {WHERE_FROM}"
        )
    cats = read_categories(src)
    for role in (cfg.sparse_category, cfg.dense_category):
        if role not in cats:
            raise AudiorecError(
                f"unknown Ciao category {role!r}; expected one of {', '.join(sorted(cats))}"
            )
    if cfg.sparse_category == cfg.dense_category:
        raise AudiorecError("sparse_category and dense_category must differ")
    sparse, dense = cats[cfg.sparse_category], cats[cfg.dense_category]
    con = duckdb.connect()
    try:
        user_cap = f"AND user_id <= {int(limit_users)}" if limit_users else ""
        con.execute(f"""CREATE TABLE ratings AS SELECT DISTINCT user_id, item_id, category_id,
                        rating, make_timestamp(timestamp * 1000000)::TIMESTAMPTZ AS ts
                        FROM read_csv({sql_literal(str(src / "ratings.csv.gz"))})
                        WHERE rating > 0 {user_cap}""")
        con.execute(f"""CREATE TABLE trust AS SELECT truster_id, trustee_id
                        FROM read_csv({sql_literal(str(src / "trust.csv.gz"))})""")
        con.execute(f"""CREATE TABLE pair AS SELECT user_id, category_id || ':' || item_id AS key,
                        item_id, category_id, rating, ts FROM ratings
                        WHERE category_id IN ({sparse}, {dense})""")
        report: dict[str, Any] = {
            "source": src.name,  # the folder's name only: a record, never a path to follow
            "config": cfg.model_dump(),
            "before": _counts(con, "pair", sparse, dense),
        }
        cut = cfg.cut or _cut(con, cfg.holdout_share)
        report["cut"] = None if cut is None else cut.isoformat()
        report["k_core_rounds"] = _k_core(con, cfg.min_item_ratings, cfg.min_user_ratings, cut)
        report["after"] = _counts(con, "pair", sparse, dense)
        if report["after"]["ratings"] == 0:
            raise AudiorecError(
                f"the {cfg.min_user_ratings}/{cfg.min_item_ratings}-core of "
                f"{cfg.sparse_category} + {cfg.dense_category} is empty"
            )
        tables = _contract_tables(con, cfg, cats, sparse, dense)
    finally:
        con.close()
    report["rows"] = {name: t.num_rows for name, t in tables.items()}
    report["events"] = dict(
        zip(
            *np.unique(
                tables["events"]["event_type"].to_numpy(zero_copy_only=False), return_counts=True
            )
        )
    )
    report["events"] = {k: int(v) for k, v in report["events"].items()}
    with staged_directory(out) as tmp:
        for name, table in tables.items():
            pq.write_table(table.cast(CONTRACT[name].schema), tmp / CONTRACT[name].file)
        (tmp / "import_report.json").write_text(json.dumps(report, indent=2, default=str))
        validate_dataset(tmp)
    return report


def _counts(con, table: str, sparse: int, dense: int) -> dict:
    row = con.execute(f"""SELECT count(*), count(DISTINCT user_id),
        count(DISTINCT key) FILTER (WHERE category_id = {sparse}),
        count(DISTINCT key) FILTER (WHERE category_id = {dense}),
        count(*) FILTER (WHERE category_id = {sparse}) FROM {table}""").fetchone()
    return {
        "ratings": row[0],
        "users": row[1],
        "sparse_items": row[2],
        "dense_items": row[3],
        "sparse_ratings": row[4],
    }


def _cut(con, share: float | None) -> date | None:
    """The evaluation's cut: the last ``share`` of the days from the day after the first
    rating to the day after the last (as the evaluation's ``holdout_cut`` counts them)."""
    if share is None:
        return None
    first, end = con.execute("SELECT min(ts)::DATE + 1, max(ts)::DATE + 1 FROM pair").fetchone()
    return end - timedelta(days=round((end - first).days * share))


def _k_core(con, min_item: int, min_user: int, before: date | None) -> int:
    """Drop items and users below their minimum until none is left (iterated k-core),
    counting only the ratings before ``before`` (all when None); then keep every rating
    of a kept user on a kept item, after the cut too."""
    cond = "" if before is None else f"WHERE ts < DATE '{before.isoformat()}'"
    con.execute(f"CREATE TEMP TABLE core AS SELECT DISTINCT user_id, key FROM pair {cond}")
    for rounds in range(1, 100):
        before_n = con.execute("SELECT count(*) FROM core").fetchone()[0]
        con.execute(f"""DELETE FROM core WHERE key IN (SELECT key FROM core GROUP BY key
                        HAVING count(DISTINCT user_id) < {min_item})""")
        con.execute(f"""DELETE FROM core WHERE user_id IN (SELECT user_id FROM core
                        GROUP BY user_id HAVING count(DISTINCT key) < {min_user})""")
        if con.execute("SELECT count(*) FROM core").fetchone()[0] == before_n:
            con.execute("""DELETE FROM pair WHERE key NOT IN (SELECT key FROM core)
                           OR user_id NOT IN (SELECT user_id FROM core)""")
            return rounds
    raise AudiorecError("k-core filtering did not converge in 100 rounds")


def _contract_tables(
    con, cfg: CiaoConfig, cats: dict[str, int], sparse: int, dense: int
) -> dict[str, pa.Table]:
    names = {v: k for k, v in cats.items()}
    con.execute("""CREATE TABLE kept_users AS SELECT DISTINCT user_id FROM pair""")
    users = con.sql("""
        SELECT 'u' || r.user_id AS user_id, 'GB' AS country, 0 AS age, 'en' AS language,
               min(r.ts) AS signup_ts
        FROM ratings r JOIN kept_users USING (user_id) GROUP BY r.user_id
        ORDER BY r.user_id""").to_arrow_table()
    items = con.sql(f"""
        SELECT CASE category_id WHEN {sparse} THEN 'a' ELSE 'p' END || item_id AS item_id,
               CASE category_id WHEN {sparse} THEN 'audiobook' ELSE 'podcast' END AS item_type,
               CASE category_id WHEN {sparse} THEN {sql_literal(names[sparse])}
                    ELSE {sql_literal(names[dense])} END || ' #' || item_id AS title,
               'A Ciao product of this category; the dataset holds no text about it.'
                   AS description,
               'en' AS language,
               CASE category_id WHEN {sparse} THEN {sql_literal(names[sparse])}
                    ELSE {sql_literal(names[dense])} END AS genre,
               min(ts) AS publish_ts
        FROM pair GROUP BY category_id, item_id ORDER BY 1""").to_arrow_table()
    item_id = f"CASE p.category_id WHEN {sparse} THEN 'a' ELSE 'p' END || p.item_id"
    endorsed = ""
    if cfg.use_trust:
        # the day the n-th trusted user rated a kept item >= 4 (any rated user counts, kept
        # or not: their ratings were visible), unless the user had rated it by then
        endorsed = f"""UNION ALL
        SELECT 'u' || x.truster_id, x.item, 'follow', x.ts, NULL FROM (
            SELECT t.truster_id, e.key, {item_id.replace("p.", "e.")} AS item, e.ts,
                   row_number() OVER (PARTITION BY t.truster_id, e.key
                                      ORDER BY e.ts, e.user_id) AS n
            FROM (SELECT user_id, category_id || ':' || item_id AS key, category_id, item_id,
                         min(ts) AS ts FROM ratings
                  WHERE rating >= 4 AND category_id IN ({sparse}, {dense}) GROUP BY ALL) e
            JOIN (SELECT DISTINCT key FROM pair) kept_items USING (key)
            JOIN trust t ON t.trustee_id = e.user_id
            JOIN kept_users k ON k.user_id = t.truster_id) x
        WHERE x.n = {cfg.trust_endorsements} AND NOT EXISTS (
            SELECT 1 FROM pair o WHERE o.user_id = x.truster_id AND o.key = x.key
              AND o.ts <= x.ts)"""
    events = con.sql(f"""
        SELECT 'u' || p.user_id AS user_id, {item_id} AS item_id,
               CASE WHEN p.rating >= {cfg.stream_min_rating} THEN 'stream' ELSE 'preview' END
                   AS event_type, p.ts,
               CASE WHEN p.rating >= {cfg.stream_min_rating} THEN p.rating * 60000 END::BIGINT
                   AS ms_played
        FROM pair p {endorsed}
        ORDER BY ts, user_id, item_id""").to_arrow_table()
    return {
        "users": users,
        "items": items,
        "events": events,
        "music": _music(con, cfg, sparse, dense, len(cats)),
    }


def _music(con, cfg: CiaoConfig, sparse: int, dense: int, n_cats: int) -> pa.Table:
    """Other-category taste snapshots (see the module docstring), vectorised: one row per
    (user, period with activity elsewhere) plus one at signup, cumulative shares."""
    other = [c for c in range(1, n_cats + 1) if c not in (sparse, dense)]
    col = np.full(n_cats + 1, -1)
    col[other] = np.arange(len(other))
    every = int(cfg.music_every_days)
    rows = con.execute(f"""
        WITH first AS (SELECT r.user_id, min(r.ts) AS signup FROM ratings r
                       JOIN kept_users USING (user_id) GROUP BY r.user_id),
        snaps AS (SELECT f.user_id, f.signup, r.category_id,
                  -- a rating on day d is in every snapshot from the end of its period on
                  f.signup + to_days({every} * (1 + date_diff('day', f.signup, r.ts) // {every}))
                      AS snap
                  FROM ratings r JOIN first f USING (user_id)
                  WHERE r.category_id NOT IN ({sparse}, {dense}))
        SELECT user_id, signup AS snap, NULL AS category_id, 0 AS n FROM first
        UNION ALL SELECT user_id, snap, category_id, count(*) FROM snaps GROUP BY ALL
        ORDER BY user_id, snap""").fetchnumpy()
    trust = con.execute("""
        SELECT k.user_id, coalesce(o.n, 0), coalesce(i.n, 0) FROM kept_users k
        LEFT JOIN (SELECT truster_id AS user_id, count(*) n FROM trust GROUP BY 1) o USING (user_id)
        LEFT JOIN (SELECT trustee_id AS user_id, count(*) n FROM trust GROUP BY 1) i USING (user_id)
        ORDER BY k.user_id""").fetchnumpy()
    user, snap = rows["user_id"], rows["snap"]
    # one output row per distinct (user, snapshot); counts accumulate within a user
    key_change = np.r_[True, (user[1:] != user[:-1]) | (snap[1:] != snap[:-1])]
    out_row = np.cumsum(key_change) - 1
    counts = np.zeros((out_row[-1] + 1, len(other)), np.float64)
    cat = rows["category_id"]
    has_cat = ~np.ma.getmaskarray(cat) if np.ma.isMaskedArray(cat) else ~np.isnan(cat.astype(float))
    cats = np.asarray(cat, dtype=float)[has_cat].astype(int)
    np.add.at(counts, (out_row[has_cat], col[cats]), rows["n"][has_cat])
    out_user, out_snap = user[key_change], snap[key_change]
    starts = np.r_[True, out_user[1:] != out_user[:-1]]
    total = np.cumsum(counts, axis=0)
    group_base = np.maximum.accumulate(np.where(starts, np.arange(len(starts)), 0))
    cum = total - np.vstack([np.zeros((1, len(other))), total])[group_base]
    share = cum / np.maximum(cum.sum(axis=1, keepdims=True), 1)
    vec = share.astype(np.float32)
    if cfg.use_trust:
        degree_row = np.searchsorted(trust["user_id"], out_user)
        deg = np.stack([trust[k][degree_row] for k in list(trust)[1:]], axis=1)
        vec = np.hstack([share, np.log1p(deg) / 10]).astype(np.float32)
    return pa.table(
        {
            "user_id": pa.array(np.char.add("u", out_user.astype(str))),
            "music_vector": pa.array(list(vec), pa.list_(pa.float32())),
            "event_timestamp": pa.array(out_snap),
        }
    )
