"""The rows of the models a user would try instead: Popularity (the prior alone) and the
peers (ALS, BPR, ItemKNN, EASE, RP3-beta), each also with the towers' prior ("+ prior").

Each peer's settings are chosen on the validation window (the towers' validation slice,
one window for every row), then the peer is refitted on everything before the cut and
scored on the hold-out (over the seeds, where it has randomness); its "+ prior" row
chooses the setting and the prior together on the same window (prior_rows.py).
"""

from __future__ import annotations

import numpy as np

from training.data.duck import DatasetLike
from training.data.protocol import Protocol
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
from training.evaluation.selection import candidates, criterion, pick, score_protocol


def _popularity_rows(
    data: DatasetLike, cut, val_proto: Protocol | None, cfg: EvaluationConfig, res: Results, score
) -> None:
    """Popularity is the prior alone: the plain count over ``popularity_days`` or
    recency-weighted listeners, the half-life chosen per item type from the prior's own
    grid on the validation window, with the criterion every row is chosen by."""
    from training.twotower.prior import recent_listeners

    def scores_at(h: float | None, at):
        if h is None:
            return lambda kind, ids: popularity(data, at, ids, cfg.popularity_days)
        return lambda kind, ids: (
            recent_listeners(data, at, ids, (h,))[0] + 1e-6 * -np.arange(len(ids)) / len(ids)
        )  # ties: a fixed order

    grid: list[float | None] = [None, *cfg.pipeline.two_tower.prior_half_lives]
    chosen: dict[str, float | None] = {}
    entry: dict = {"trials": []}
    if val_proto is not None:
        start = val_proto.cut
        scored = [score_protocol(val_proto, item_scores_of=scores_at(h, start)) for h in grid]
        for kind in val_proto.truth:
            values = [criterion([x for x in sc if x[0] == kind]) for sc in scored]
            chosen[kind] = grid[int(np.argmax(np.nan_to_num(values, nan=-np.inf)))]
        final = score_protocol(
            val_proto, item_scores_of=lambda kind, ids: scores_at(chosen[kind], start)(kind, ids)
        )
        entry = {
            "trials": [
                {"half_life_days": h, "validation": criterion(sc)} for h, sc in zip(grid, scored)
            ],
            "validation": criterion(final),
            "window": [str(val_proto.cut), str(val_proto.end)],
        }
    entry["setting"] = {f"half_life_days {k}": v for k, v in chosen.items()}
    res.chosen["Popularity"] = entry
    score("Popularity", None, None, lambda kind, ids: scores_at(chosen.get(kind), cut)(kind, ids))


def _peer_rows(
    peer: str,
    data: DatasetLike,
    cut,
    proto: Protocol,
    val_proto: Protocol | None,
    cfg: EvaluationConfig,
    res: Results,
    score,
) -> None:
    """Choose the peer's settings on the validation window (with the prior too, for its
    "+ prior" row: each setting's prior chosen there, as the towers' are), refit on
    everything before the cut, score the hold-out (over the seeds, where the peer has
    randomness)."""
    from training.evaluation.prior_rows import prior_adder

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

    types = _item_types(data, con_items)
    settings = candidates(GRIDS[peer], DEFAULTS[peer], cfg.selection_trials)
    plain, priors = (
        _validate(peer, settings, data, val_proto, con_users, con_items, types, cfg, scorer)
        if val_proto is not None
        else ([], [])
    )
    chosen, trials = pick(settings, plain) if plain else (settings[0], [])
    res.chosen[peer] = {"setting": chosen, "trials": trials, **_window(val_proto)}
    matrix = training_matrix(data, cut, con_users, con_items, cfg.event_weights)
    seeds = cfg.seeds[:1] if peer in DETERMINISTIC else cfg.seeds
    fits = {seed: fit_peer(matrix, _peer_cfg(peer, chosen, seed)) for seed in seeds}
    for fitted in fits.values():
        score(peer, None, None, score_rows_of=scorer(fitted, proto))
    if not cfg.prior_rows:
        return
    name = f"{peer} + prior"
    if not priors:
        res.skipped[name] = "no new starts in the validation window to choose it on"
        return
    best, trials = pick(settings, [c["validation"] for c in priors])
    choice = priors[settings.index(best)]
    res.chosen[name] = {
        "setting": {**best, "prior": choice["chosen"]},
        "trials": trials,
        "validation": choice["validation"],
        "window": choice["window"],
    }
    add_prior = prior_adder(choice["chosen"], data, cut, con_items, types)
    for seed in seeds:
        fitted = fits[seed] if best == chosen else fit_peer(matrix, _peer_cfg(peer, best, seed))
        score(name, None, None, score_rows_of=add_prior(scorer(fitted, proto)))


def _validate(
    peer: str,
    settings: list[dict],
    data: DatasetLike,
    val_proto: Protocol,
    con_users: np.ndarray,
    con_items: np.ndarray,
    types,
    cfg: EvaluationConfig,
    scorer,
) -> tuple[list[float], list[dict]]:
    """Each setting fitted before the validation window: its criterion there, and (with
    prior rows) the prior chosen for it there."""
    from training.evaluation.prior_rows import choose_prior

    tw = cfg.pipeline.two_tower
    plain: list[float] = []
    priors: list[dict] = []
    train = training_matrix(data, val_proto.cut, con_users, con_items, cfg.event_weights)
    for s in settings:
        rows_of = scorer(fit_peer(train, _peer_cfg(peer, s, cfg.seeds[0])), val_proto)
        plain.append(criterion(score_protocol(val_proto, score_rows_of=rows_of)))
        if cfg.prior_rows:
            priors.append(
                choose_prior(
                    data,
                    val_proto,
                    con_items,
                    types,
                    rows_of,
                    tw.prior_betas,
                    tw.prior_half_lives,
                    tw.prior_max_users,
                )  # fmt: skip
            )
    return plain, priors


def _peer_cfg(peer: str, setting: dict, seed: int) -> PeerConfig:
    return PeerConfig(model=peer, seed=seed, **setting)


def _window(p: Protocol | None) -> dict:
    """The validation window a selection entry was chosen on, for the report."""
    return {"window": [str(p.cut), str(p.end)]} if p is not None else {}


def _item_types(data: DatasetLike, items: np.ndarray) -> np.ndarray:
    """The item type of each of ``items`` (sorted ids of every item)."""
    from training.data.duck import connect_dataset

    con = connect_dataset(data, ("items",))
    try:
        df = con.sql("SELECT item_id, item_type FROM items ORDER BY 1").fetchnumpy()
    finally:
        con.close()
    assert np.array_equal(np.asarray(df["item_id"], dtype=object), items)
    return np.asarray(df["item_type"], dtype=object)


def _all_ids(data: DatasetLike) -> tuple[np.ndarray, np.ndarray]:
    """Every user and item id of the dataset, sorted."""
    from training.data.duck import connect_dataset

    con = connect_dataset(data, ("users", "items"))
    try:
        users = con.sql("SELECT user_id FROM users ORDER BY 1").fetchnumpy()["user_id"]
        items = con.sql("SELECT item_id FROM items ORDER BY 1").fetchnumpy()["item_id"]
    finally:
        con.close()
    return np.asarray(users, dtype=object), np.asarray(items, dtype=object)
