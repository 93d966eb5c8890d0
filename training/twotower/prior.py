"""A popularity / recency prior restored at scoring, carried by the index as one extra
dimension.

The log-Q correction removes popularity from what the towers learn (by design: the paper
wants coverage), but on real data popularity and recency are much of what predicts the
next start. The prior puts a tuned amount back, where serving can use it with plain
maximum-inner-product search:

    score(user, item) = user_vector . item_vector + beta[type] x prior(item)
    prior(item) = log1p(recent listeners) / log1p(max of its type)          in [0, 1]
    recent listeners = sum over the item's listeners of 2 ** (-days since their last
                       stream / half_life[type])

The served vectors carry it as a last coordinate: the exported user tower appends 1.0 to
its output and each item vector appends ``beta[type] x prior``, so the inner product the
HNSW index maximises is the score above, exactly.

``beta`` and ``half_life`` are chosen per item type on the towers' validation slice (the
last ``validation_days`` before the cut, never trained on) with the evaluation's protocol
(:mod:`training.data.protocol`): users as their features stood at the slice's start,
the new starts in the slice as targets, streamed items masked, HR@10 (audiobooks: the mean
of the warm- and cold-start groups). The listeners are counted as of the slice's start,
so a target never lends its own listens to the prior; the served vectors count them as of
the cut. ``beta = 0`` (the first candidate, kept on ties) is the paper's model unchanged.
Like the fallback lists (:mod:`training.release.lists`), the prior is a statistic of the
events at the cut, written into the artifact, not an online feature.

Cost: one DuckDB aggregation of the streams before each instant (O(events)), one Feast
retrieval of the slice's users, then per item type one matrix product per group
(O(users x items x dim)) and per candidate one add and one compare over it
(O(candidates x users x items)).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

from training.data.duck import DatasetLike

if TYPE_CHECKING:
    from training.data.protocol import TypeTruth


def recent_listeners(
    data_dir: DatasetLike, when: datetime, item_ids: np.ndarray, half_lives: tuple[float, ...]
) -> np.ndarray:
    """(len(half_lives), m): each item's listeners before ``when``, each weighted by
    2 ** (-days since their last stream of it / half-life); ``item_ids`` sorted."""
    from training.data.duck import connect_dataset
    from training.data.ids import positions

    sums = ", ".join(
        f"sum(pow(2.0, -age / {float(h)!r})) AS h{i}" for i, h in enumerate(half_lives)
    )
    con = connect_dataset(data_dir, ("events",))
    try:
        df = con.sql(
            f"""
            SELECT item_id, {sums} FROM (
                SELECT item_id, (epoch($when) - epoch(max(ts))) / 86400.0 AS age
                FROM events WHERE event_type = 'stream' AND ts < $when GROUP BY item_id, user_id)
            GROUP BY item_id""",
            params={"when": when},
        ).fetchnumpy()
    finally:
        con.close()
    out = np.zeros((len(half_lives), len(item_ids)), np.float64)
    pos, ok = positions(item_ids, df["item_id"])
    for i in range(len(half_lives)):
        out[i, pos[ok]] = df[f"h{i}"][ok]
    return out


def prior(listeners: np.ndarray, types: np.ndarray) -> np.ndarray:
    """(m,) in [0, 1]: log1p(listeners) over its type's maximum; NaN counts as 0."""
    x = np.log1p(np.nan_to_num(np.maximum(listeners, 0), nan=0.0)).astype(np.float32)
    out = np.zeros_like(x)
    for kind in np.unique(types):
        mine = types == kind
        top = x[mine].max() if mine.any() else 0.0
        out[mine] = x[mine] / top if top > 0 else 0.0
    return out


def with_user_coordinate(user_vecs: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, d + 1): the 1.0 that multiplies the items' prior coordinate."""
    return np.concatenate([user_vecs, np.ones((len(user_vecs), 1), user_vecs.dtype)], axis=1)


def with_item_coordinate(
    item_vecs: np.ndarray, item_prior: np.ndarray, types: np.ndarray, betas: dict[str, float]
) -> np.ndarray:
    """(m, d) -> (m, d + 1): each item's ``beta[type] x prior``."""
    beta = np.zeros(len(types), np.float32)
    for kind, b in betas.items():
        beta[types == kind] = b
    return np.concatenate([item_vecs, (beta * item_prior)[:, None].astype(item_vecs.dtype)], axis=1)


def _hits(
    base: np.ndarray,
    pris: np.ndarray,
    betas: tuple[float, ...],
    targets,
    k: int = 10,
    chunk_rows: int | None = None,
) -> np.ndarray:
    """(len(pris), len(betas)): for each candidate (half-life h, beta b), how many rows of
    ``base + betas[b] x pris[h]`` hold a target among their ``k`` best scores.

    ``base``: (n, m) float32 scores with seen items at -inf; ``pris``: (H, m); ``targets``:
    (n, m) sparse (a row without a target never hits). A row hits iff fewer than ``k``
    items score strictly above its best target (ties count for the target): one pass of
    adds and compares per candidate instead of a partial sort, in row chunks of ~64 MB so
    the scratch stays small at any catalogue size.
    """
    n, m = base.shape
    k = min(k, m)
    out = np.zeros((len(pris), len(betas)), np.int64)
    if n == 0:
        return out
    tg = targets.tocsr(copy=True)
    tg.eliminate_zeros()
    chunk = chunk_rows or max(1, (1 << 24) // max(m, 1))
    buf = np.empty((min(chunk, n), m), np.float32)
    above = np.empty((min(chunk, n), m), bool)
    shift = np.empty(m, np.float32)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        sub = tg[lo:hi]
        has = np.diff(sub.indptr) > 0
        rows = np.repeat(np.arange(hi - lo), np.diff(sub.indptr))
        starts = sub.indptr[:-1][has]
        b_, a_ = buf[: hi - lo], above[: hi - lo]
        best = np.full(hi - lo, np.inf, np.float32)
        for h, pri in enumerate(pris):
            for j, beta in enumerate(betas):
                np.multiply(pri, np.float32(beta), out=shift)
                np.add(base[lo:hi], shift, out=b_)
                if len(starts):
                    best[has] = np.maximum.reduceat(b_[rows, sub.indices], starts)
                np.greater(b_, best[:, None], out=a_)
                out[h, j] += int(((np.count_nonzero(a_, axis=1) < k) & has).sum())
    return out


def best_cell(grid: np.ndarray, betas, half_lives) -> dict[str, float]:
    """The (beta, half-life) of ``grid`` (half-lives x betas, HR@10) that scores best: the
    first best wins, the smallest beta first (0: the model alone), then the half-life."""
    b, h = next(
        (b, h)
        for b in range(len(betas))
        for h in range(len(half_lives))
        if grid[h, b] >= grid.max() - 1e-12
    )
    return {"beta": float(betas[b]), "half_life_days": float(half_lives[h])}


def choose_cells(
    proto,
    base_of: Callable[[str, TypeTruth], Callable[[np.ndarray], np.ndarray]],
    pris_of: Callable[[str, TypeTruth], np.ndarray],
    betas: tuple[float, ...],
    half_lives: tuple[float, ...],
    max_users: int = 2000,
) -> dict:
    """Beta and half-life per item type of ``proto`` (a validation slice's protocol).

    ``base_of(kind, truth)(rows) -> (n, items) float32``: the model's scores of those user
    rows over the type's catalogue; ``pris_of(kind, truth) -> (len(half_lives), items)``:
    the prior as of the slice's start. Per type, the (half-life, beta) cell with the best
    mean HR@10 over the type's criterion groups (``criterion_groups``: at least
    ``MIN_GROUP_USERS`` users) wins, beta 0 first on ties; "validation" is the selection
    criterion over every group at its type's chosen cell, the number every row is chosen
    by. At most ``max_users`` seeded users per group: HR@10 over 2,000 users is within
    about a point, and the cost stays bounded.
    """
    from training.data.protocol import criterion_groups, group_mean

    rng = np.random.default_rng(0)
    chosen, curves = {}, {}
    sizes: list[int] = []
    values: list[float] = []
    for kind, truth in proto.truth.items():
        groups = [rows for rows in truth.groups.values() if len(rows)]
        if not groups:
            chosen[kind] = {"beta": 0.0, "half_life_days": float(half_lives[0])}
            continue
        score_rows, pris = base_of(kind, truth), pris_of(kind, truth).astype(np.float32)
        grids = []
        for rows in groups:
            if len(rows) > max_users:
                rows = np.sort(rng.choice(rows, max_users, replace=False))
            base = score_rows(rows)
            seen = truth.consumed[rows].tocoo()
            base[seen.row, seen.col] = -np.inf
            grids.append(_hits(base, pris, betas, truth.targets[rows]) / len(rows))
        keep = criterion_groups([len(g) for g in groups])
        grid = np.mean([g for g, k in zip(grids, keep) if k], axis=0)
        curves[kind] = grid.tolist()
        chosen[kind] = best_cell(grid, betas, half_lives)
        h = half_lives.index(chosen[kind]["half_life_days"])
        b = list(betas).index(chosen[kind]["beta"])
        sizes += [len(g) for g in groups]
        values += [float(g[h, b]) for g in grids]
    return {
        "chosen": chosen,
        "validation_hr10": curves,
        "validation": group_mean(sizes, values),
        "window": [str(proto.cut), str(proto.end)],
    }


def fit_prior(
    store,
    data_dir,
    tower_data,
    embed_users: Callable[[dict], np.ndarray],
    items: np.ndarray,
    cut: datetime,
    days: int,
    betas: tuple[float, ...],
    half_lives: tuple[float, ...],
    max_users: int = 2000,
) -> tuple[dict, np.ndarray] | None:
    """Choose beta and the half-life per item type on the ``days`` before ``cut`` (see
    the module docstring), scoring with the towers' vectors: ``embed_users(user tower
    inputs) -> (n, dim)`` and ``items`` (tower_data's item rows, (n_items, dim)).
    Returns (the choice, for the manifest; each item's prior as of the cut, aligned with
    ``tower_data.item_ids``), or None when that slice has no new starts to choose on."""
    from audiorec.errors import AudiorecError
    from audiorec.tower_inputs import tower_inputs
    from training.data.ids import aligned
    from training.data.protocol import build_protocol
    from training.features.retrieval import user_training_features

    start = cut - timedelta(days=days)
    try:
        proto = build_protocol(data_dir, start, cut)
    except AudiorecError:
        return None
    entity = pd.DataFrame(
        {
            "user_id": proto.users,
            "event_timestamp": pd.Timestamp(start),
            "row": np.arange(len(proto.users)),
        }
    )
    feats = user_training_features(store, entity).sort_values("row")
    users = embed_users(
        tower_inputs({c: feats[c].tolist() for c in feats.columns}, tower_data.user_specs)
    )
    ids, types = tower_data.item_ids, tower_data.item_types
    then = np.stack([prior(x, types) for x in recent_listeners(data_dir, start, ids, half_lives)])

    def base_of(kind, truth):
        vecs = aligned(truth.item_ids, ids, items)
        return lambda rows: (users[rows] @ vecs.T).astype(np.float32)

    choice = choose_cells(
        proto,
        base_of,
        lambda kind, truth: aligned(truth.item_ids, ids, then.T).T,
        betas,
        half_lives,
        max_users,
    )
    now = recent_listeners(data_dir, cut, ids, half_lives)
    served = np.zeros(len(ids), np.float32)
    for kind, c in choice["chosen"].items():
        mine = types == kind
        served[mine] = prior(now[half_lives.index(c["half_life_days"])], types)[mine]
    choice["betas"] = {k: c["beta"] for k, c in choice["chosen"].items()}
    return (
        {**choice, "betas_tried": list(betas), "half_lives_tried": list(half_lives)},
        served,
    )
