"""The paper's facts (docs/paper.md, "The problem"), measured on a written dataset.

Every fact is computed by DuckDB SQL over the contract files, so it measures what was
written, not what the generator meant to write, and works on any dataset in the contract
(a real-data import too). Fact e also embeds a sample of texts with the text model.
"""

from __future__ import annotations

import math
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np

from training.data.duck import connect_dataset
from training.synth.config import WorldConfig

# fact -> (description, threshold, direction)
FACTS: dict[str, tuple[str, float, str]] = {
    "a": ("share of audiobook streams made by the top 25% of audiobook listeners", 0.70, ">="),
    "b": ("share of audiobook streams going to the top 20% of the audiobook catalogue", 0.75, ">="),
    "c": ("share of audiobook listeners who also streamed podcasts", 0.70, ">="),
    "d": ("share of users with no audiobook interaction at all", 0.60, ">="),
    "e": ("text cosine of co-streamed audiobook pairs minus that of random pairs", 0.0, ">"),
    "f": ("odds ratio of a later stream after a follow (vs no follow) on an audiobook", 2.0, ">="),
    "g": ("audiobooks with no stream before the last 14 days (new titles)", 1, ">="),
}


def _top_share(con, counts_sql: str, top: float) -> float:
    return con.execute(f"""
        WITH c AS ({counts_sql}), r AS (
          SELECT n, row_number() OVER (ORDER BY n DESC) AS rk, count(*) OVER () AS total FROM c)
        SELECT sum(n) FILTER (WHERE rk <= ceil({top} * total)) / sum(n) FROM r""").fetchall()[0][0]


def compute_stats(
    root: str | Path,
    cfg: WorldConfig | None,
    seed: int,
    *,
    holdout_days: int = 14,
    text_model: str | None = None,
    progress: bool = True,
) -> dict:
    root = Path(root)
    con = connect_dataset(root, ("users", "items", "events"))
    con.execute("""CREATE TEMP TABLE ev AS
        SELECT e.user_id, e.item_id, e.event_type, CAST(e.ts AS TIMESTAMPTZ) AS ts, i.item_type
        FROM events e JOIN items i USING (item_id)""")
    abs_ = "FROM ev WHERE item_type = 'audiobook' AND event_type = 'stream'"
    values: dict[str, float] = {}
    values["a"] = _top_share(con, f"SELECT user_id, count(*) AS n {abs_} GROUP BY 1", 0.25)
    # Over the whole audiobook catalogue: titles nobody streamed count as zeros.
    values["b"] = _top_share(
        con,
        f"""
        SELECT i.item_id, count(s.item_id) AS n FROM items i
        LEFT JOIN (SELECT item_id {abs_}) s USING (item_id)
        WHERE i.item_type = 'audiobook' GROUP BY 1""",
        0.20,
    )
    values["c"] = con.execute(f"""
        WITH l AS (SELECT DISTINCT user_id {abs_}),
             p AS (SELECT DISTINCT user_id FROM ev WHERE item_type = 'podcast'
                   AND event_type = 'stream')
        SELECT avg(CASE WHEN p.user_id IS NULL THEN 0 ELSE 1 END)
        FROM l LEFT JOIN p USING (user_id)""").fetchall()[0][0]
    values["d"] = con.execute("""
        SELECT 1 - (SELECT count(DISTINCT user_id) FROM ev WHERE item_type = 'audiobook')
                 / (SELECT count(*) FROM users)""").fetchall()[0][0]
    values["f"], f_detail = _follow_odds_ratio(con)
    end = con.execute("SELECT max(ts) FROM ev").fetchall()[0][0]
    cut = end - timedelta(days=holdout_days)
    values["g"] = con.execute(
        """
        SELECT count(*) FROM items i WHERE item_type = 'audiobook' AND NOT EXISTS (
          SELECT 1 FROM ev WHERE ev.item_id = i.item_id AND event_type = 'stream'
          AND ev.item_type = 'audiobook' AND ts < ?)""",
        [cut],
    ).fetchall()[0][0]
    pairs = cfg.stats_pairs if cfg is not None else 600
    values["e"], e_detail = _text_cosine_gap(con, pairs, seed, text_model, progress)

    facts = _facts(values)
    facts["e"].update(e_detail)
    facts["f"].update(f_detail)
    summary = _summary(con, end, cut)
    con.close()
    return {"summary": summary, "facts": facts, "all_hold": all(f["holds"] for f in facts.values())}


def _facts(values: dict) -> dict:
    """Each paper fact's value against its threshold."""
    facts = {}
    for key, (text, threshold, op) in FACTS.items():
        v = values[key]
        holds = (
            v is not None
            and not (isinstance(v, float) and math.isnan(v))
            and (v >= threshold if op == ">=" else v > threshold)
        )
        facts[key] = {
            "fact": text,
            "value": _num(v),
            "threshold": f"{op} {threshold}",
            "holds": bool(holds),
        }
    return facts


def _summary(con, end, cut) -> dict:
    """The world's size: users, items and events by type, first and last event."""

    def one(sql: str):
        return con.execute(sql).fetchall()[0][0]

    counts = dict(
        con.execute(
            "SELECT item_type || ':' || event_type, count(*) FROM ev GROUP BY 1 ORDER BY 1"
        ).fetchall()
    )
    return {
        "users": one("SELECT count(*) FROM users"),
        "audiobooks": one("SELECT count(*) FROM items WHERE item_type='audiobook'"),
        "podcasts": one("SELECT count(*) FROM items WHERE item_type='podcast'"),
        "events": sum(counts.values()),
        "events_by_type": counts,
        "first_event": str(one("SELECT min(ts) FROM ev")),
        "last_event": str(end),
        "holdout_start": str(cut),
    }


def _num(v):
    if isinstance(v, (int, np.integer)):
        return int(v)
    return None if v is None else round(float(v), 4)


def _follow_odds_ratio(con) -> tuple[float, dict]:
    """Among (user, audiobook) pairs with a weak signal: odds of a stream after the signal,
    with a follow versus without one (the reference time is the follow, else the first
    weak signal)."""
    row = con.execute("""
        WITH w AS (
          SELECT user_id, item_id,
                 min(ts) FILTER (WHERE event_type = 'follow') AS f_ts,
                 min(ts) FILTER (WHERE event_type <> 'stream') AS w_ts
          FROM ev WHERE item_type = 'audiobook' GROUP BY 1, 2
          HAVING count(*) FILTER (WHERE event_type <> 'stream') > 0),
        s AS (SELECT user_id, item_id, max(ts) AS last_stream FROM ev
              WHERE item_type = 'audiobook' AND event_type = 'stream' GROUP BY 1, 2),
        p AS (SELECT f_ts IS NOT NULL AS followed,
                     coalesce(s.last_stream > coalesce(f_ts, w_ts), false) AS later
              FROM w LEFT JOIN s USING (user_id, item_id))
        SELECT count(*) FILTER (WHERE followed AND later), count(*) FILTER (WHERE followed),
               count(*) FILTER (WHERE NOT followed AND later), count(*) FILTER (WHERE NOT followed)
        FROM p""").fetchall()[0]
    a, n1, c, n0 = (int(x or 0) for x in row)
    detail = {
        "followed_pairs": n1,
        "followed_then_streamed": a,
        "unfollowed_pairs": n0,
        "unfollowed_then_streamed": c,
    }
    if min(a, n1 - a, c, n0 - c) == 0:
        return float("nan"), detail
    return (a / (n1 - a)) / (c / (n0 - c)), detail


def _text_cosine_gap(
    con, pairs: int, seed: int, text_model: str | None, progress: bool
) -> tuple[float, dict]:
    """Mean cosine of sampled co-streamed audiobook pairs minus that of random pairs."""
    con.execute("SELECT setseed(?)", [((seed % 1000) / 1000.0)])
    co = con.execute(f"""
        WITH ub AS (SELECT DISTINCT user_id, item_id FROM ev
                    WHERE item_type = 'audiobook' AND event_type = 'stream'),
             pr AS (SELECT a.item_id AS x, b.item_id AS y FROM ub a JOIN ub b
                    ON a.user_id = b.user_id AND a.item_id < b.item_id)
        SELECT x, y FROM pr ORDER BY hash(x || y || '{seed}') LIMIT {pairs}""").fetchall()
    ab = [
        r[0]
        for r in con.execute(
            "SELECT item_id FROM items WHERE item_type='audiobook' ORDER BY item_id"
        ).fetchall()
    ]
    if len(co) < 10 or len(ab) < 2:
        return float("nan"), {"pairs": len(co)}
    rng = np.random.default_rng(seed)
    rx, ry = rng.integers(0, len(ab), (2, pairs))
    keep = rx != ry
    rnd = [(ab[i], ab[j]) for i, j in zip(rx[keep], ry[keep])]
    needed = sorted({i for p in co + rnd for i in p})
    texts = dict(
        con.execute(
            "SELECT item_id, title || '. ' || description FROM items WHERE item_id IN "
            "(SELECT unnest(?))",
            [needed],
        ).fetchall()
    )
    from training.text.model import load_text_model

    model = load_text_model(text_model)
    emb = model.encode(
        [texts[i] for i in needed],
        batch_size=64,
        normalize_embeddings=True,
        show_progress_bar=progress and sys.stderr.isatty(),  # quiet in logs
        convert_to_numpy=True,
    )
    pos = {item: k for k, item in enumerate(needed)}

    def mean_cos(ps):
        a = emb[[pos[x] for x, _ in ps]]
        b = emb[[pos[y] for _, y in ps]]
        return float((a * b).sum(axis=1).mean())

    c_co, c_rnd = mean_cos(co), mean_cos(rnd)
    return c_co - c_rnd, {
        "co_streamed_cosine": round(c_co, 4),
        "random_cosine": round(c_rnd, 4),
        "pairs": len(co),
    }


def format_stats(stats: dict, where: Path) -> str:
    """A readable summary of a world's stats.json."""
    s = stats["summary"]
    lines = [
        f"world: {s['users']:,} users, {s['audiobooks']:,} audiobooks, {s['podcasts']:,} podcasts, "
        f"{s['events']:,} events ({s['first_event'][:10]} .. {s['last_event'][:10]}, "
        f"hold-out from {s['holdout_start'][:10]})",
        "events by type: " + ", ".join(f"{k} {v:,}" for k, v in s["events_by_type"].items()),
        "the paper's facts (docs/paper.md, 'The problem'):",
    ]
    for key, f in stats["facts"].items():
        mark = "holds" if f["holds"] else "FAILS"
        lines.append(f"  {key}. {f['fact']}: {f['value']} (need {f['threshold']}) {mark}")
    lines.append(f"written to {where} (stats.json, world.json, truth/)")
    return "\n".join(lines)


def pick_users(world: Path) -> tuple[str, str]:
    """The most active audiobook listener of the last 30 days, and a recent podcast-only
    listener (no audiobook interaction ever)."""
    con = connect_dataset(world, ("items", "events"))
    warm = con.sql("""
        SELECT e.user_id FROM events e JOIN items i USING (item_id)
        WHERE i.item_type = 'audiobook' AND e.ts >= (SELECT max(ts) FROM events) - INTERVAL 30 DAY
        GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1""").fetchall()[0][0]
    cold = con.sql("""
        SELECT user_id FROM events WHERE ts >= (SELECT max(ts) FROM events) - INTERVAL 30 DAY
        GROUP BY 1 HAVING user_id NOT IN (SELECT e.user_id FROM events e JOIN items i
                                          USING (item_id) WHERE i.item_type = 'audiobook')
        ORDER BY count(*) DESC, 1 LIMIT 1""").fetchall()[0][0]
    con.close()
    return warm, cold
