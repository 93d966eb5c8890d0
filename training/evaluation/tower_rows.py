"""The two-tower rows (2T, 2T-HGNN and its ablations): settings chosen on the towers'
validation slice, then each seed trained, its prior chosen, refit through the cut as the
pipeline publishes it, and scored on the hold-out."""

from __future__ import annotations

from typing import Any

from training.data.ids import aligned
from training.data.protocol import Protocol
from training.evaluation.config import EvaluationConfig, Results
from training.evaluation.models import two_tower_users
from training.evaluation.selection import candidates, choose

# The towers' search space (same trial budget as every peer): the softmax temperature,
# the learning rate, and item-id embeddings (0: the paper's content-only item tower).
TOWER_GRID: dict[str, list[Any]] = {
    "temperature": [0.05, 0.1, 0.2],
    "learning_rate": [1e-3, 3e-3],
    "item_id_embedding_dim": [0, 32],
}


def _select_towers(
    model: str, variant: dict, cfg: EvaluationConfig, overrides: dict, res: Results, progress: bool
) -> tuple[dict, tuple | None]:
    """The towers' settings with the best validation criterion (on the validation window,
    the towers' slice before the cut; HR@10 averaged over the groups with at least 30
    users, each type at its prior's chosen cell, as every row), trained with the first
    seed. Returns (``overrides`` plus the chosen setting, (the examples, {first seed: the
    chosen trial's towers}) for the rows to reuse). One trial: the configured defaults."""
    from training.twotower.examples import build_tower_data
    from training.twotower.train import train_two_tower

    base = cfg.pipeline.two_tower.with_overrides(overrides)
    settings = candidates(TOWER_GRID, base.model_dump(), cfg.selection_trials)
    if len(settings) == 1:
        res.chosen[model] = {"setting": settings[0], "trials": []}
        return {**overrides, **settings[0]}, None
    tower_data = build_tower_data(
        variant["store"], variant["data"], variant["cut"], base, progress=lambda *a: None
    )
    trained: dict[str, object] = {}

    def trial(setting: dict) -> float:
        # scored as the prior would be chosen for it (beta 0 only, with the prior off)
        tcfg = base.with_overrides(
            {
                **setting,
                "seed": cfg.seeds[0],
                "popularity_prior": True,
                **({} if base.popularity_prior else {"prior_betas": (0.0,)}),
            }
        )
        towers = train_two_tower(tower_data, tcfg, progress=False)
        towers.fit_prior(variant["store"], variant["data"], tower_data, variant["cut"], tcfg)
        value = towers.prior["validation"] if towers.prior else float("nan")
        if not base.popularity_prior:
            towers.prior = towers.item_prior = None  # as the rows train it
        trained[repr(setting)] = towers
        if progress:
            print(
                f"    {model} trial {setting}: validation HR@10 {value:.3f}"
                + (f"; prior {towers.prior['chosen']}" if towers.prior else ""),
                flush=True,
            )
        return value

    chosen, trials = choose(settings, trial)
    prior = trained[repr(chosen)].prior  # type: ignore[attr-defined]
    res.chosen[model] = {
        "setting": chosen,
        "trials": trials,
        **({"window": prior["window"]} if prior else {}),
    }
    return {**overrides, **chosen}, (tower_data, {cfg.seeds[0]: trained[repr(chosen)]})


def _two_tower_rows(
    model: str,
    variant: dict,
    cfg: EvaluationConfig,
    overrides: dict,
    seeds,
    proto: Protocol,
    score,
    progress: bool,
    prepared: tuple | None = None,
    vectors: dict | None = None,
    chosen: tuple[dict, dict] | None = None,
) -> None:
    """``prepared``: (examples, {seed: trained towers}) from the selection, reused;
    ``vectors`` gets the first seed's (item ids, item vectors) under the model's name;
    ``chosen``: (the results' selection table, the row's setting): the row's validation
    criterion (its first seed's, at its prior's chosen cell, before the refit: the towers
    never saw the slice) goes there, so a lever row is judged on the validation window as
    the selection judges a setting, never on the hold-out."""
    from training.twotower.examples import build_tower_data
    from training.twotower.train import refit_two_tower, train_two_tower

    base = cfg.pipeline.two_tower.with_overrides(overrides)
    tower_data, done = prepared or (
        build_tower_data(
            variant["store"], variant["data"], variant["cut"], base, progress=lambda *a: None
        ),
        {},
    )
    for seed in seeds:
        tcfg = base.with_overrides({"seed": seed})
        towers = done.get(seed)
        if towers is None:
            towers = train_two_tower(tower_data, tcfg, progress=False)
            if tcfg.popularity_prior:
                towers.fit_prior(
                    variant["store"], variant["data"], tower_data, variant["cut"], tcfg
                )
            if chosen is not None and towers.prior and model not in chosen[0]:
                chosen[0][model] = {
                    "setting": chosen[1],
                    "trials": [],
                    "validation": towers.prior["validation"],
                    "window": towers.prior["window"],
                }
        if tcfg.refit:  # as the pipeline serves them: trained through the cut
            towers = refit_two_tower(tower_data, tcfg, towers, progress=False)
        users = two_tower_users(
            variant["store"], proto.users, variant["cut"], towers, tower_data.user_specs
        )
        items = towers.item_vectors(tower_data)  # what the published index holds
        if vectors is not None:
            vectors.setdefault(model, (tower_data.item_ids, items))
        score(model, users, lambda kind, ids: aligned(ids, tower_data.item_ids, items))
        if progress:
            print(
                f"    {model} seed {seed}: best epoch {towers.best_epoch}, validation "
                f"recall@10 of {proto.types.focus} "
                f"{towers.best[f'val_recall_{proto.types.focus}']:.3f}"
                + (f"; prior {towers.prior['chosen']}" if towers.prior else ""),
                flush=True,
            )
