"""``audiorec evaluate``: every model trained before the cut, scored on the hold-out.

Main rows: Popularity, LLM-KNN, HGNN alone, HGNN-w-users (users as graph nodes), 2T (no
HGNN inputs) and 2T-HGNN, the two towers over ``seeds`` (with ``hgnn_seeds`` > 1 the
HGNN is reseeded too); ablations of 2T-HGNN (balanced sampler off, no weak-signal
features, graph without PP / without AA / AA only / PP only), each a fresh HGNN and
feature store in its own sub-directory. Everything is trained on events before the cut
only: the HGNN graph, the feature tables (snapshots through the cut), the two towers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator

from audiorec.config import StrictConfig
from audiorec.itemtypes import ItemTypes
from audiorec.vocabulary import EVENT_TYPES, STREAM
from training.data import Dataset
from training.data.ids import aligned
from training.data.protocol import Protocol, build_protocol
from training.engine import Engine
from training.evaluation.models import (
    interaction_matrix,
    mean_item_users,
    popularity,
    two_tower_users,
    unit,
)
from training.evaluation.peers import (
    DEFAULTS,
    DETERMINISTIC,
    GRIDS,
    PEERS,
    PeerConfig,
    PeerName,
    ease_bytes,
    event_weights_valid,
    fit_peer,
    training_matrix,
)
from training.evaluation.selection import candidates, choose, criterion, score_protocol
from training.pipeline import PipelineConfig
from training.presets import effective

ABLATIONS = {
    "no balanced sampler": {"hgnn": {"balanced": False}},
    "no weak signals": {"two_tower": {"use_weak_signals": False}},
    # graph ablations name relations by type codes (itemtypes.py); on a dataset without
    # those types they are skipped
    "no PP edges": {"drop_relations": ("PP",)},
    "no AA edges": {"drop_relations": ("AA",)},
    "AA-only graph": {"only_relations": ("AA",)},
    "PP-only graph": {"only_relations": ("PP",)},
    # the levers beyond the paper, each switched off alone, then both
    "no popularity prior": {"two_tower": {"popularity_prior": False}},
    "no item-id embeddings": {"two_tower": {"item_id_embedding_dim": 0}},
    "as in the paper (neither)": {
        "two_tower": {"popularity_prior": False, "item_id_embedding_dim": 0}
    },
}


class EvaluationConfig(StrictConfig):
    holdout_days: int = Field(14, ge=1)
    # instead of holdout_days: this share of the data's whole time span (e.g. 0.2 = the last
    # 20% of days), for datasets spanning years
    holdout_share: float | None = Field(None, gt=0, lt=1)
    # instead of both: the hold-out starts at this date's midnight (UTC), e.g. the cut an
    # import filtered its catalogue at (audiorec ciao)
    holdout_from: date | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    ablation_seeds: int = Field(1, ge=1)  # the first N of ``seeds`` for each ablation
    # the first N of ``seeds`` also reseed the HGNN (and its feature store) under the main
    # HGNN and 2T-HGNN rows, so their spread holds the HGNN's noise too; 1: one HGNN
    hgnn_seeds: int = Field(1, ge=1)
    ablations: bool | tuple[str, ...] = True  # True: all of ABLATIONS; or a few by name
    popularity_days: int = Field(28, ge=1)
    history_days: int = Field(90, ge=1)  # the items LLM-KNN / HGNN average per user
    # The validation window (model selection) just before the cut: this many days, or
    # None for as long as the hold-out. Never overlaps the hold-out.
    validation_days: int | None = Field(None, ge=1)
    selection_trials: int = Field(4, ge=1)  # settings tried per model on validation
    peers: tuple[PeerName, ...] = PEERS
    # each peer also as a row with the towers' popularity prior, chosen the same way on
    # the same slice (training/evaluation/prior_rows.py)
    prior_rows: bool = True
    # EASE's dense items x items model is fitted up to this many items (about 6 GiB of
    # float32 at 20,000); above it the row is skipped and the report says why
    ease_max_items: int = Field(20_000, ge=1)
    # what one event of each type weighs in the peers' matrix (summed per user and item)
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {t: 1.0 if t == STREAM else 0.5 for t in EVENT_TYPES}
    )
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)

    @field_validator("ablations")
    @classmethod
    def _known_ablations(cls, v):
        unknown = [a for a in v if a not in ABLATIONS] if isinstance(v, tuple) else []
        if unknown:
            raise ValueError(f"unknown ablations {unknown}; expected some of {list(ABLATIONS)}")
        return v

    @field_validator("event_weights")
    @classmethod
    def _known_events(cls, v):
        return event_weights_valid(v)

    def chosen_ablations(self) -> dict[str, dict]:
        if isinstance(self.ablations, bool):
            return ABLATIONS if self.ablations else {}
        return {a: ABLATIONS[a] for a in self.ablations}


@dataclass
class Results:
    protocol: Protocol
    # model -> item type -> group -> one metrics dict per seed
    rows: dict[str, dict[str, dict[str, list[dict]]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    seeding: str = ""  # what the seeds of the rows vary, for the report
    # model -> {"setting": chosen, "trials": [...with "validation"], "window": str}
    chosen: dict[str, dict] = field(default_factory=dict)
    validation: str = ""  # the validation window's summary
    pipeline: dict = field(default_factory=dict)  # the PipelineConfig the rows trained with
    skipped: dict[str, str] = field(default_factory=dict)  # model -> why it has no row
    # model -> (item ids, the item vectors the row scored with: its first seed's); for
    # the check that the 2T-HGNN row's vectors are the published ones
    vectors: dict[str, tuple] = field(default_factory=dict)

    def add(self, model: str, kind: str, group: str, m: dict) -> None:
        self.rows.setdefault(model, {}).setdefault(kind, {}).setdefault(group, []).append(m)


def run_evaluation(
    data: Dataset | str | Path,
    workdir: str | Path,
    cfg: EvaluationConfig = EvaluationConfig(),
    progress: bool = True,
    text_cache: str | Path | None = None,
) -> Results:
    """``text_cache``: an embedding cache to share (the pipeline's), else one in workdir.
    Every model's heavy steps run on the engine ``cfg.pipeline.engine`` names."""
    from training.engine import open_engine

    with open_engine(cfg.pipeline.engine, progress=progress) as engine:
        return _evaluate(engine, data, workdir, cfg, progress, text_cache)


def _evaluate(
    engine: Engine,
    data: Dataset | str | Path,
    workdir: str | Path,
    cfg: EvaluationConfig,
    progress: bool,
    text_cache: str | Path | None,
) -> Results:
    from training.data.embeddings import read_item_embeddings
    from training.text.embed import embed_items

    say = print if progress else (lambda *a, **k: None)
    data, wd = Dataset.of(data, cfg.pipeline.focus_type), Path(workdir).resolve()
    # the settings the pipeline runs with on this data (its preset, under what the caller
    # set), decided where the pipeline decides them: what is evaluated is what is served
    pipeline, _ = effective(cfg.pipeline, data.info.rows.get("events", 0))
    cfg = cfg.model_copy(update={"pipeline": pipeline})
    end = data.default_cut
    cut = holdout_cut(data, end, cfg)
    proto = build_protocol(data, cut, end)
    say(f"  {proto.summary()}")
    n_hgnn = min(cfg.hgnn_seeds, len(cfg.seeds))
    res = Results(
        proto,
        seeding=(
            f"2T and 2T-HGNN over {len(cfg.seeds)} tower seeds, "
            + (f"the HGNN reseeded with {n_hgnn} of them" if n_hgnn > 1 else "on one HGNN")
            + (
                f"; each ablation over {min(cfg.ablation_seeds, len(cfg.seeds))} tower seeds on "
                "one HGNN"
                if cfg.chosen_ablations()
                else ""
            )
        ),
    )

    res.pipeline = cfg.pipeline.model_dump(mode="json")

    def score(model: str, user_vecs, item_vecs_of, item_scores_of=None, score_rows_of=None) -> None:
        for kind, group, m in score_protocol(
            proto, user_vecs, item_vecs_of, item_scores_of, score_rows_of
        ):
            res.add(model, kind, group, m)

    def timed(name: str, fn) -> None:
        t0 = time.perf_counter()
        say(f"  {name} ...", flush=True)
        fn()
        res.seconds[name] = round(time.perf_counter() - t0, 1)

    text = wd / "text" / "embeddings.parquet"
    embed_items(  # with the pipeline's text settings: what is evaluated is what is served
        data / "items.parquet",
        text,
        model_name=cfg.pipeline.text.model,
        cache=text_cache or wd / "text" / "cache.parquet",
        batch_size=cfg.pipeline.text.batch_size,
        precision=cfg.pipeline.text.precision,
        progress=progress,
        engine=engine,
    )
    val_proto = validation_protocol(data, cut, end, cfg)
    res.validation = val_proto.summary() if val_proto else ""
    say(f"  validation window (model selection): {res.validation or 'none'}")
    timed("Popularity", lambda: _popularity_rows(data, cut, cfg, res, score))

    def mean_of_items(model: str, table_path: Path) -> None:
        table = read_item_embeddings(table_path)
        ids = np.asarray(table.item_id, dtype=object)
        order = np.argsort(ids)
        ids, vecs = ids[order], table.vectors[order]
        users = mean_item_users(
            interaction_matrix(data, cut, proto.users, ids, cfg.history_days), vecs
        )
        score(model, users, lambda kind, item_ids: unit(aligned(item_ids, ids, vecs)))

    timed("LLM-KNN", lambda: mean_of_items("LLM-KNN", text))
    if cfg.peers:
        for peer in cfg.peers:
            timed(
                peer,
                lambda peer=peer: _peer_rows(peer, data, cut, proto, val_proto, cfg, res, score),
            )

    def variant(name: str, overrides: dict) -> dict:
        """HGNN + feature store of one graph/sampler setting, in its own directory."""
        pcfg = cfg.pipeline.with_overrides(overrides)
        return _hgnn_and_features(data, wd / "variants" / name, text, cut, pcfg, progress, engine)

    main = variant("full", {})
    base_seed = cfg.pipeline.hgnn.seed
    stores = [main] + [
        variant(f"full_hgnn_seed{seed}", {"hgnn": {"seed": seed}})
        for seed in range(base_seed + 1, base_seed + n_hgnn)
    ]
    timed("HGNN", lambda: [mean_of_items("HGNN", st["hgnn"]) for st in stores])

    def with_users() -> None:
        from training.evaluation.hgnn_users import hgnn_with_users

        users, ids, vecs = hgnn_with_users(
            data, text, cut, cfg.pipeline, proto.users, engine=engine
        )
        score("HGNN-w-users", users, lambda kind, item_ids: aligned(item_ids, ids, vecs))

    timed("HGNN-w-users", with_users)

    def two_tower() -> None:
        chosen, prepared = _select_towers("2T", main, cfg, {"use_hgnn": False}, res, progress)
        _two_tower_rows(
            "2T", main, cfg, chosen, cfg.seeds, proto, score, progress, prepared, res.vectors
        )

    timed("2T", two_tower)
    tower_choice: dict = {}

    def two_tower_hgnn() -> None:
        chosen, prepared = _select_towers("2T-HGNN", main, cfg, {}, res, progress)
        tower_choice.update(chosen)
        # tower seed i on HGNN seed i; the seeds past hgnn_seeds share the first HGNN
        for i, store in enumerate(stores):
            own = cfg.seeds[i : i + 1] if i else (cfg.seeds[:1] + cfg.seeds[len(stores) :])
            _two_tower_rows(
                "2T-HGNN",
                store,
                cfg,
                tower_choice,
                own,
                proto,
                score,
                progress,
                None if i else prepared,
                res.vectors,
            )

    timed("2T-HGNN", two_tower_hgnn)
    for label, symbolic in cfg.chosen_ablations().items():
        overrides = resolved(symbolic, proto.types)
        if overrides is None:
            say(f"  ablation {label!r} skipped: this dataset has no such relation")
            continue
        graph_or_hgnn = {k: v for k, v in overrides.items() if k != "two_tower"}
        store = variant(label.replace(" ", "_"), graph_or_hgnn) if graph_or_hgnn else main
        timed(
            f"2T-HGNN, {label}",
            lambda label=label, store=store, o=overrides: _two_tower_rows(
                f"2T-HGNN, {label}",
                store,
                cfg,
                {**tower_choice, **o.get("two_tower", {})},
                cfg.seeds[: cfg.ablation_seeds],
                proto,
                score,
                progress,
            ),
        )
    return res


def resolved(ablation: dict, types: ItemTypes) -> dict | None:
    """An ablation as config overrides for ``types``: ``drop_relations`` keeps every other
    relation, ``only_relations`` just those; None when it names a relation ``types`` lack."""
    drop, only = ablation.get("drop_relations", ()), ablation.get("only_relations", ())
    if any(r not in types.relations for r in (*drop, *only)):
        return None
    out = {k: v for k, v in ablation.items() if k not in ("drop_relations", "only_relations")}
    if drop:
        out["graph"] = {"relations": tuple(r for r in types.relations if r not in drop)}
    if only:
        out["graph"] = {"relations": tuple(only)}
    return out


def holdout_cut(data: Dataset | Path, end, cfg: EvaluationConfig):
    """The start of the hold-out: ``holdout_from``, else ``holdout_days`` before ``end``,
    or, with ``holdout_share``, that share of the days from the first event to ``end``."""
    if cfg.holdout_from is not None:
        from training.features.windows import midnight

        return midnight(cfg.holdout_from)
    if cfg.holdout_share is None:
        return end - timedelta(days=cfg.holdout_days)
    first = Dataset.of(data).first_midnight
    return end - timedelta(days=round((end - first).days * cfg.holdout_share))


def validation_protocol(data: Path, cut, end, cfg: EvaluationConfig) -> Protocol | None:
    """The protocol of the validation window before ``cut``, as long as the hold-out
    (``cut`` .. ``end``) unless ``validation_days`` is set; None if it has no new starts
    (then every model keeps its default settings)."""
    from audiorec.errors import AudiorecError

    days = cfg.validation_days or max(1, (end - cut).days)
    try:
        return build_protocol(data, cut - timedelta(days=days), cut)
    except AudiorecError:
        return None


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
        _peer_prior_rows(peer, data, cut, proto, cfg, res, score, chosen, scorer, fits)


def _peer_prior_rows(peer, data, cut, proto, cfg, res, score, chosen, scorer, fits) -> None:
    """ "{peer} + prior": the towers' prior on the peer's standardised scores, chosen on
    the towers' slice with the peer fitted before it (prior_rows.py)."""
    from training.evaluation.prior_rows import choose_prior, with_prior

    con_users, con_items = _all_ids(data)
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
    for fitted in fits:
        rows = with_prior(scorer(fitted, proto), choice["chosen"], data, cut, con_items, types)
        score(name, None, None, score_rows_of=rows)


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


def _hgnn_and_features(
    data: Path, wd: Path, text: Path, cut, cfg: PipelineConfig, progress: bool, engine: Engine
) -> dict:
    from audiorec.featurestore import FeatureStoreConfig
    from training.features.jobs import run_feature_jobs
    from training.features.store import apply_repo
    from training.hgnn.run import run_hgnn

    hgnn = wd / "hgnn"
    run_hgnn(data, text, hgnn, cut, cfg.graph, cfg.hgnn, progress=progress, engine=engine)
    run_feature_jobs(
        data,
        wd,
        hgnn / "embeddings.parquet",
        text,
        through=cut.date(),
        cfg=cfg.features,
        progress=progress,
        engine=engine,
    )
    # examples come from Feast's historical retrieval on the same engine
    store = apply_repo(wd, FeatureStoreConfig(**engine.feast_options()))
    return {"hgnn": hgnn / "embeddings.parquet", "store": store, "data": data, "cut": cut}


# The towers' search space (same trial budget as every peer): the softmax temperature,
# the learning rate, and item-id embeddings (0: the paper's content-only item tower).
TOWER_GRID = {
    "temperature": [0.05, 0.1, 0.2],
    "learning_rate": [1e-3, 3e-3],
    "item_id_embedding_dim": [0, 32],
}


def _select_towers(
    model: str, variant: dict, cfg: EvaluationConfig, overrides: dict, res: Results, progress: bool
) -> tuple[dict, tuple | None]:
    """The towers' settings with the best validation HR@10 (the prior's validation slice,
    before the cut; the mean of the item types' best-beta values), trained with the first
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
        curves = towers.prior["validation_hr10"].values() if towers.prior else []
        value = float(np.nanmean([np.nanmax(c) for c in curves])) if curves else float("nan")
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
    res.chosen[model] = {"setting": chosen, "trials": trials}
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
) -> None:
    """``prepared``: (examples, {seed: trained towers}) from the selection, reused;
    ``vectors`` gets the first seed's (item ids, item vectors) under the model's name."""
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
