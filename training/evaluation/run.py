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
from datetime import timedelta
from pathlib import Path

import numpy as np

from audiorec.itemtypes import ItemTypes
from training.data import Dataset
from training.data.duck import DatasetLike
from training.data.ids import aligned
from training.data.protocol import Protocol, build_protocol
from training.engine import Engine
from training.evaluation.config import EvaluationConfig, Results
from training.evaluation.models import (
    interaction_matrix,
    mean_item_users,
    unit,
)
from training.evaluation.peer_rows import _peer_rows, _popularity_rows
from training.evaluation.selection import score_protocol
from training.evaluation.tower_rows import _select_towers, _two_tower_rows
from training.pipeline import PipelineConfig
from training.presets import effective


def run_evaluation(
    data: DatasetLike,
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
    data: DatasetLike,
    workdir: str | Path,
    cfg: EvaluationConfig,
    progress: bool,
    text_cache: str | Path | None,
) -> Results:
    """Every family of rows in turn, on one protocol: the baselines (Popularity, LLM-KNN,
    the peers), the graph rows (HGNN, HGNN-w-users), the towers (2T, 2T-HGNN), the
    ablations."""
    ev = _Evaluation(engine, data, workdir, cfg, progress, text_cache)
    ev.baseline_rows()
    ev.graph_rows()
    ev.tower_rows()
    ev.ablation_rows()
    return ev.res


class _Evaluation:
    """One evaluation's shared state: the data, the hold-out protocol and its validation
    window, the results, and how a row is scored and timed."""

    def __init__(
        self,
        engine: Engine,
        data: DatasetLike,
        workdir: str | Path,
        cfg: EvaluationConfig,
        progress: bool,
        text_cache: str | Path | None,
    ):
        from training.text.embed import embed_items

        self.engine, self.progress = engine, progress
        self.say = print if progress else (lambda *a, **k: None)
        self.data = Dataset.of(data, cfg.pipeline.focus_type)
        self.wd = Path(workdir).resolve()
        # the settings the pipeline runs with on this data (its preset, under what the
        # caller set), decided where the pipeline decides them: what is evaluated is what
        # is served
        pipeline, _ = effective(cfg.pipeline, self.data.info.rows.get("events", 0))
        self.cfg = cfg = cfg.model_copy(update={"pipeline": pipeline})
        end = self.data.default_cut
        self.cut = holdout_cut(self.data, end, cfg)
        self.proto = build_protocol(self.data, self.cut, end)
        self.say(f"  {self.proto.summary()}")
        self.n_hgnn = min(cfg.hgnn_seeds, len(cfg.seeds))
        self.res = Results(self.proto, seeding=_seeding(cfg, self.n_hgnn))
        self.res.pipeline = cfg.pipeline.model_dump(mode="json")
        self.text = self.wd / "text" / "embeddings.parquet"
        embed_items(  # with the pipeline's text settings: what is evaluated is what is served
            self.data / "items.parquet",
            self.text,
            model_name=cfg.pipeline.text.model,
            cache=text_cache or self.wd / "text" / "cache.parquet",
            batch_size=cfg.pipeline.text.batch_size,
            precision=cfg.pipeline.text.precision,
            progress=progress,
            engine=engine,
        )
        self.val_proto = validation_protocol(self.data, self.cut, cfg)
        self.res.validation = self.val_proto.summary("window") if self.val_proto else ""
        self.say(f"  validation window (model selection): {self.res.validation or 'none'}")
        self.stores: list[dict] = []  # the HGNN + feature store per HGNN seed (graph_rows)
        self.tower_choice: dict = {}  # 2T-HGNN's chosen setting (tower_rows)

    def score(self, model: str, user_vecs, item_vecs_of, item_scores_of=None, score_rows_of=None):
        for kind, group, m in score_protocol(
            self.proto, user_vecs, item_vecs_of, item_scores_of, score_rows_of
        ):
            self.res.add(model, kind, group, m)

    def timed(self, name: str, fn) -> None:
        t0 = time.perf_counter()
        self.say(f"  {name} ...", flush=True)
        fn()
        self.res.seconds[name] = round(time.perf_counter() - t0, 1)

    def mean_of_items(self, model: str, table_path: Path) -> None:
        """A user as the mean of the item vectors of their recent items."""
        from training.data.embeddings import read_item_embeddings

        table = read_item_embeddings(table_path)
        ids = np.asarray(table.item_id, dtype=object)
        order = np.argsort(ids)
        ids, vecs = ids[order], table.vectors[order]
        users = mean_item_users(
            interaction_matrix(self.data, self.cut, self.proto.users, ids, self.cfg.history_days),
            vecs,
        )
        self.score(model, users, lambda kind, item_ids: unit(aligned(item_ids, ids, vecs)))

    def variant(self, name: str, overrides: dict) -> dict:
        """HGNN + feature store of one graph/sampler setting, in its own directory."""
        pcfg = self.cfg.pipeline.with_overrides(overrides)
        return _hgnn_and_features(
            self.data, self.wd / "variants" / name, self.text, self.cut, pcfg, self.progress,
            self.engine,
        )  # fmt: skip

    def baseline_rows(self) -> None:
        """Popularity, LLM-KNN and the peers (each also with the prior)."""
        data, cut, cfg, res = self.data, self.cut, self.cfg, self.res
        self.timed(
            "Popularity", lambda: _popularity_rows(data, cut, self.val_proto, cfg, res, self.score)
        )
        self.timed("LLM-KNN", lambda: self.mean_of_items("LLM-KNN", self.text))
        for peer in cfg.peers:
            self.timed(
                peer,
                lambda peer=peer: _peer_rows(
                    peer, data, cut, self.proto, self.val_proto, cfg, res, self.score
                ),
            )

    def graph_rows(self) -> None:
        """The HGNN (one store per HGNN seed) as a mean of items, and HGNN-w-users."""
        cfg = self.cfg
        base_seed = cfg.pipeline.hgnn.seed
        self.stores = [self.variant("full", {})] + [
            self.variant(f"full_hgnn_seed{seed}", {"hgnn": {"seed": seed}})
            for seed in range(base_seed + 1, base_seed + self.n_hgnn)
        ]

        def hgnn_rows() -> None:
            for st in self.stores:
                self.mean_of_items("HGNN", st["hgnn"])

        self.timed("HGNN", hgnn_rows)

        def with_users() -> None:
            from training.evaluation.hgnn_users import hgnn_with_users

            users, ids, vecs = hgnn_with_users(
                self.data, self.text, self.cut, cfg.pipeline, self.proto.users, engine=self.engine
            )
            self.score("HGNN-w-users", users, lambda kind, item_ids: aligned(item_ids, ids, vecs))

        self.timed("HGNN-w-users", with_users)

    def tower_rows(self) -> None:
        """2T and 2T-HGNN: settings chosen on the validation window, every seed scored."""
        cfg, proto, progress, res, main = (
            self.cfg,
            self.proto,
            self.progress,
            self.res,
            self.stores[0],
        )

        def two_tower() -> None:
            chosen, prepared = _select_towers("2T", main, cfg, {"use_hgnn": False}, res, progress)
            _two_tower_rows(
                "2T", main, cfg, chosen, cfg.seeds, proto, self.score, progress, prepared,
                res.vectors,
            )  # fmt: skip

        self.timed("2T", two_tower)

        def two_tower_hgnn() -> None:
            chosen, prepared = _select_towers("2T-HGNN", main, cfg, {}, res, progress)
            self.tower_choice.update(chosen)
            # tower seed i on HGNN seed i; the seeds past hgnn_seeds share the first HGNN
            stores = self.stores
            for i, store in enumerate(stores):
                own = cfg.seeds[i : i + 1] if i else (cfg.seeds[:1] + cfg.seeds[len(stores) :])
                _two_tower_rows(
                    "2T-HGNN", store, cfg, self.tower_choice, own, proto, self.score, progress,
                    None if i else prepared, res.vectors,
                )  # fmt: skip

        self.timed("2T-HGNN", two_tower_hgnn)

    def ablation_rows(self) -> None:
        """2T-HGNN with one part changed per row (a relation, the sampler, a feature)."""
        cfg = self.cfg
        for label, symbolic in cfg.chosen_ablations().items():
            overrides = resolved(symbolic, self.proto.types)
            if overrides is None:
                self.say(f"  ablation {label!r} skipped: this dataset has no such relation")
                continue
            graph_or_hgnn = {k: v for k, v in overrides.items() if k != "two_tower"}
            store = (
                self.variant(label.replace(" ", "_"), graph_or_hgnn)
                if graph_or_hgnn
                else self.stores[0]
            )
            self.timed(
                f"2T-HGNN, {label}",
                lambda label=label, store=store, o=overrides: _two_tower_rows(
                    f"2T-HGNN, {label}",
                    store,
                    cfg,
                    {**self.tower_choice, **o.get("two_tower", {})},
                    cfg.seeds[: cfg.ablation_seeds],
                    self.proto,
                    self.score,
                    self.progress,
                    chosen=(self.res.chosen, _flat(symbolic)),
                ),
            )


def _seeding(cfg: EvaluationConfig, n_hgnn: int) -> str:
    return (
        f"2T and 2T-HGNN over {len(cfg.seeds)} tower seeds, "
        + (f"the HGNN reseeded with {n_hgnn} of them" if n_hgnn > 1 else "on one HGNN")
        + (
            f"; each ablation over {min(cfg.ablation_seeds, len(cfg.seeds))} tower seeds on "
            "one HGNN"
            if cfg.chosen_ablations()
            else ""
        )
    )


def _flat(ablation: dict) -> dict:
    """An ablation's overrides as one level of names ("hgnn.max_epochs": 40)."""
    out: dict = {}
    for k, v in ablation.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}" if k == "hgnn" else kk: vv for kk, vv in _flat(v).items()})
        else:
            out[k] = v
    return out


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


def validation_protocol(data: DatasetLike, cut, cfg: EvaluationConfig) -> Protocol | None:
    """The protocol of the validation window: the towers' validation slice, the last
    ``pipeline.two_tower.validation_days`` before ``cut``, the one window every row is
    chosen on; None if it has no new starts (then every model keeps its defaults)."""
    from audiorec.errors import AudiorecError

    days = cfg.pipeline.two_tower.validation_days
    try:
        return build_protocol(data, cut - timedelta(days=days), cut)
    except AudiorecError:
        return None


def _hgnn_and_features(
    data: DatasetLike,
    wd: Path,
    text: Path,
    cut,
    cfg: PipelineConfig,
    progress: bool,
    engine: Engine,
) -> dict:
    """The pipeline's own HGNN and feature steps into ``wd`` (the offline store only:
    the rows read historical features), with its store config on this engine."""
    from audiorec.featurestore import open_store
    from training.steps import RunContext, features_step, hgnn_step

    cfg = cfg.with_overrides({"store": engine.feast_options()})
    ctx = RunContext(Dataset.of(data), wd.resolve(), cut, cfg, engine, progress, text_file=text)
    hgnn_step(ctx, reuse_recent=False)
    features = features_step(ctx, online=False)
    store = open_store(ctx.workdir, cfg.store, features.project)
    return {"hgnn": ctx.hgnn, "store": store, "data": data, "cut": cut}
