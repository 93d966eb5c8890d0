"""The rows of the models a user would try instead: Popularity (the prior alone) and the
peers (ALS, BPR, ItemKNN, EASE, RP3-beta), each also with the towers' prior ("+ prior").

Each peer's settings are chosen on the validation window, then the peer is refitted on
everything before the cut and scored on the hold-out (over the seeds, where it has
randomness); the prior rows are chosen on the towers' slice (prior_rows.py).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np

from training.data.protocol import Protocol, build_protocol
from training.evaluation.config import EvaluationConfig, Results
from training.evaluation.models import popularity
from training.evaluation.peers import (
    DEFAULTS,
    DETERMINISTIC,
    GRIDS,
    PeerConfig,
    ease_bytes,
    fit_peer,
    training_matrix,
)
from training.evaluation.selection import candidates, choose, criterion, score_protocol


def _popularity_rows(data: Path, cut, cfg: EvaluationConfig, res: Results, score) -> None:
    """Popularity is the prior alone: the plain count over ``popularity_days`` or
    recency-weighted listeners, the half-life chosen per item type from the prior's own
    grid on the prior's own slice (the towers' validation slice before the cut)."""
    from audiorec.errors import AudiorecError
    from training.twotower.prior import recent_listeners

    def scores_at(h: float | None, at):
        if h is None:
            return lambda kind, ids: popularity(data, at, ids, cfg.popularity_days)
        return lambda kind, ids: (
            recent_listeners(data, at, ids, (h,))[0] + 1e-6 * -np.arange(len(ids)) / len(ids)
        )  # ties: a fixed order

    tw = cfg.pipeline.two_tower
    grid: list[float | None] = [None, *tw.prior_half_lives]
    start = cut - timedelta(days=tw.validation_days)
    try:
        sliced = build_protocol(data, start, cut)
    except AudiorecError:
        sliced = None
    chosen: dict[str, float | None] = {}
    entry: dict = {"trials": []}
    if sliced is not None:
        scored = [score_protocol(sliced, item_scores_of=scores_at(h, start)) for h in grid]
        for kind in sliced.truth:
            values = [criterion([x for x in sc if x[0] == kind]) for sc in scored]
            chosen[kind] = grid[int(np.argmax(np.nan_to_num(values, nan=-np.inf)))]
        final = score_protocol(
            sliced, item_scores_of=lambda kind, ids: scores_at(chosen[kind], start)(kind, ids)
        )
        entry = {
            "trials": [
                {"half_life_days": h, "validation": criterion(sc)} for h, sc in zip(grid, scored)
            ],
            "validation": criterion(final),
            "window": [str(start), str(cut)],
        }
    entry["setting"] = {f"half_life_days {k}": v for k, v in chosen.items()}
    res.chosen["Popularity"] = entry
    score("Popularity", None, None, lambda kind, ids: scores_at(chosen.get(kind), cut)(kind, ids))


def _peer_rows(
    peer: str,
    data: Path,
    cut,
    proto: Protocol,
    val_proto: Protocol | None,
    cfg: EvaluationConfig,
    res: Results,
    score,
) -> None:
    """Choose the peer's settings on the validation window, refit on everything before the
    cut, score the hold-out (over the seeds, where the peer has randomness)."""
    con_users, con_items = _all_ids(data)
    if peer == "EASE" and len(con_items) > cfg.ease_max_items:
        res.skipped[peer] = (
            f"{len(con_items):,} items is above ease_max_items {cfg.ease_max_items:,}: its "
            f"dense items x items model would need about {ease_bytes(len(con_items)) / 2**30:.1f}"
            " GiB"
        )
        return

    def scorer(fitted, p: Protocol):
        """score_rows_of for ``p``: its users and catalogues are subsets of all ids."""
        users = np.searchsorted(con_users, p.users)

        def of_type(kind: str, ids: np.ndarray):
            columns = np.searchsorted(con_items, ids)
            return lambda rows: fitted.scores(users[rows], columns)

        return of_type

    settings = candidates(GRIDS[peer], DEFAULTS[peer], cfg.selection_trials)
    if val_proto is not None:
        train = training_matrix(data, val_proto.cut, con_users, con_items, cfg.event_weights)
        chosen, trials = choose(
            settings,
            lambda s: criterion(
                score_protocol(
                    val_proto,
                    score_rows_of=scorer(fit_peer(train, PeerConfig(model=peer, **s)), val_proto),
                )
            ),
        )
    else:
        chosen, trials = settings[0], []
    res.chosen[peer] = {"setting": chosen, "trials": trials}
    matrix = training_matrix(data, cut, con_users, con_items, cfg.event_weights)
    seeds = cfg.seeds[:1] if peer in DETERMINISTIC else cfg.seeds
    fits = [fit_peer(matrix, PeerConfig(model=peer, seed=seed, **chosen)) for seed in seeds]
    for fitted in fits:
        score(peer, None, None, score_rows_of=scorer(fitted, proto))
    if cfg.prior_rows:
        ids = (con_users, con_items)
        _peer_prior_rows(peer, data, cut, proto, cfg, res, score, chosen, scorer, fits, ids)


def _peer_prior_rows(peer, data, cut, proto, cfg, res, score, chosen, scorer, fits, ids) -> None:
    """ "{peer} + prior": the towers' prior on the peer's standardised scores, chosen on
    the towers' slice with the peer fitted before it (prior_rows.py); ``ids``: every
    user and item id, sorted (_all_ids)."""
    from training.evaluation.prior_rows import choose_prior, prior_adder

    con_users, con_items = ids
    types = _item_types(data, con_items)
    tw = cfg.pipeline.two_tower

    def scorer_at(p: Protocol):
        before = training_matrix(data, p.cut, con_users, con_items, cfg.event_weights)
        return scorer(fit_peer(before, PeerConfig(model=peer, seed=cfg.seeds[0], **chosen)), p)

    name = f"{peer} + prior"
    choice = choose_prior(
        data, cut, tw.validation_days, con_items, types, scorer_at,
        tw.prior_betas, tw.prior_half_lives, tw.prior_max_users,
    )  # fmt: skip
    if choice is None:
        res.skipped[name] = "no new starts in the towers' validation slice to choose it on"
        return
    res.chosen[name] = {
        "setting": {**chosen, "prior": choice["chosen"]},
        "trials": [],
        "validation": choice["validation"],
        "window": choice["window"],
    }
    add_prior = prior_adder(choice["chosen"], data, cut, con_items, types)
    for fitted in fits:
        score(name, None, None, score_rows_of=add_prior(scorer(fitted, proto)))


def _item_types(data: Path, items: np.ndarray) -> np.ndarray:
    """The item type of each of ``items`` (sorted ids of every item)."""
    from training.data.duck import connect_dataset

    con = connect_dataset(data, ("items",))
    try:
        df = con.sql("SELECT item_id, item_type FROM items ORDER BY 1").fetchnumpy()
    finally:
        con.close()
    assert np.array_equal(np.asarray(df["item_id"], dtype=object), items)
    return np.asarray(df["item_type"], dtype=object)


def _all_ids(data: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every user and item id of the dataset, sorted."""
    from training.data.duck import connect_dataset

    con = connect_dataset(data, ("users", "items"))
    try:
        users = con.sql("SELECT user_id FROM users ORDER BY 1").fetchnumpy()["user_id"]
        items = con.sql("SELECT item_id FROM items ORDER BY 1").fetchnumpy()["item_id"]
    finally:
        con.close()
    return np.asarray(users, dtype=object), np.asarray(items, dtype=object)
