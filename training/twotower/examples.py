"""Training examples for the two towers, with their features read through Feast.

A positive is a *new start*: the first stream of a (user, item) pair, stamped with its
time (optionally also the first weak signal on an item of the focus type). The user side of every
example is the user-tower feature service read with Feast's point-in-time join at that
timestamp, so an example sees only features computed from events strictly before it.
The item side is the item-tower service read once per item as of the cut.

Cost: one DuckDB aggregation over the events before the cut (O(events)), one Feast
historical retrieval over the examples (O(examples + feature rows)).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from audiorec.errors import AudiorecError
from audiorec.featurestore import ITEM_SERVICE, USER_SERVICE, feature_service
from audiorec.itemtypes import ItemTypes
from audiorec.tower_inputs import InputSpec, tower_inputs
from audiorec.vocabulary import WEAK_SIGNALS
from training.data.dataset import Dataset
from training.data.duck import DatasetLike, connect_dataset, sql_literal
from training.data.ids import positions
from training.features.retrieval import historical_features
from training.twotower.config import TwoTowerConfig


@dataclass
class TowerData:
    """Everything the training loop needs, as arrays.

    Examples (n): ``user`` inputs per spec, ``item`` row into the item table, ``ts``,
    ``validation`` (the later-in-time slice, never trained on), ``scored`` (the validation
    examples that are streams: what early stopping scores). Items (m): ``item_ids``,
    ``item_types`` (names) and ``items`` inputs per spec. ``types``: the dataset's types.
    """

    user_specs: list[InputSpec]
    item_specs: list[InputSpec]
    user: dict[str, np.ndarray]
    user_ids: np.ndarray
    item: np.ndarray
    ts: np.ndarray
    validation: np.ndarray
    scored: np.ndarray
    item_ids: np.ndarray
    item_types: np.ndarray
    items: dict[str, np.ndarray]
    window: dict
    types: ItemTypes
    # (examples, items) 1 where the example's user streamed the item before the validation
    # slice: masked when validation ranks items, as serving and the protocol mask them
    seen: sp.csr_matrix | None = None

    def __len__(self) -> int:
        return len(self.item)


def feature_specs(store, service: str, table: pa.Table) -> list[InputSpec]:
    """The service's features as tower inputs, in the service's order; vector dims are
    read off the data (Feast's types carry no length)."""
    from feast.types import Array, PrimitiveFeastType

    specs = []
    for projection in feature_service(store, service).feature_view_projections:
        for field in projection.features:
            if isinstance(field.dtype, Array):
                lengths = pc.list_value_length(table.column(field.name)).drop_null()
                dim = int(pc.max(lengths).as_py() or 0)
                if dim == 0:
                    raise AudiorecError(f"feature {field.name!r} has no values to size it from")
                specs.append(InputSpec(name=field.name, kind="vector", dim=dim))
            elif field.dtype == PrimitiveFeastType.STRING:
                specs.append(InputSpec(name=field.name, kind="string"))
            else:
                specs.append(InputSpec(name=field.name, kind="number"))
    return specs


def positives(data: Dataset, cut: datetime, cfg: TwoTowerConfig) -> pd.DataFrame:
    """New starts before ``cut`` (user_id, item_id, item_type, event_timestamp), the
    positives of each other type subsampled to at most ``other_positive_share`` per one of
    the focus type."""
    focus = data.item_types.focus
    con = data.connect(("items", "events"))
    weak = ", ".join(sql_literal(w) for w in WEAK_SIGNALS)
    kinds = "e.event_type = 'stream'"
    if cfg.weak_positives:
        kinds = f"({kinds} OR (i.item_type = {sql_literal(focus)} AND e.event_type IN ({weak})))"
    start = (
        cut - timedelta(days=cfg.train_days)
        if cfg.train_days
        else datetime(1970, 1, 1, tzinfo=cut.tzinfo)
    )
    try:
        table = (
            con.sql(
                f"""
            WITH firsts AS (
                SELECT e.user_id, e.item_id, i.item_type, min(e.ts) AS ts,
                       bool_or(e.event_type = 'stream') AS streamed
                FROM events e JOIN items i USING (item_id)
                WHERE {kinds} AND e.ts < $cut
                GROUP BY ALL)
            SELECT user_id, item_id, item_type, streamed, ts AS event_timestamp FROM firsts
            WHERE ts >= $start ORDER BY ts, user_id, item_id""",
                params={"cut": cut, "start": start},
            )
            .arrow()
            .read_all()
        )
    finally:
        con.close()
    df = table.to_pandas()
    rng = np.random.default_rng(cfg.seed)
    kind = df["item_type"].to_numpy(dtype=object)
    n_focus = int((kind == focus).sum())
    if n_focus == 0:
        raise AudiorecError(f"no {focus} streams before {cut:%Y-%m-%d}: nothing to train on")
    keep = kind == focus
    draw = rng.random(len(df))
    for other in data.item_types.names[1:]:
        mine = kind == other
        share = cfg.other_positive_share * n_focus / max(1, mine.sum())
        keep |= mine & (draw < share)
    return df[keep].reset_index(drop=True)


def item_features(store, cut: datetime, catalogue_ids: np.ndarray) -> pa.Table:
    """The item-tower service for every catalogue item as of ``cut``; items without
    content by then (published later) are dropped."""
    entity = pd.DataFrame(
        {
            "item_id": catalogue_ids,
            "event_timestamp": pd.Timestamp(cut) - pd.Timedelta(microseconds=1),
        }
    )
    table = historical_features(store, entity, ITEM_SERVICE)
    table = table.filter(pc.is_valid(table.column("item_type")))
    return table.sort_by("item_id")


def streamed_before(
    data: Dataset, when: datetime, example_users: np.ndarray, rows: np.ndarray, item_ids: np.ndarray
) -> sp.csr_matrix:
    """(examples, items) 1 where example ``rows``' users streamed the item before
    ``when`` (other rows empty); ``item_ids`` sorted."""
    users = np.unique(example_users[rows])
    con = connect_dataset(data, ("events",))
    try:
        con.register("val_users", pa.table({"user_id": pa.array(users, pa.string())}))
        df = con.sql(
            """SELECT DISTINCT e.user_id, e.item_id FROM events e JOIN val_users
                        USING (user_id) WHERE e.event_type = 'stream' AND e.ts < $when""",
            params={"when": when},
        ).fetchnumpy()
    finally:
        con.close()
    cols, ok = positions(item_ids, df["item_id"])
    by_user = sp.csr_matrix(
        (np.ones(ok.sum(), np.float32), (positions(users, df["user_id"])[0][ok], cols[ok])),
        shape=(len(users), len(item_ids)),
    )
    # example row -> its user's row, for the ``rows`` only (the others stay empty)
    pick = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, positions(users, example_users[rows])[0])),
        shape=(len(example_users), len(users)),
    )
    return (pick @ by_user).tocsr()


def build_tower_data(
    store, data: DatasetLike, cut: datetime, cfg: TwoTowerConfig, progress=print
) -> TowerData:
    """Positives, their point-in-time user features, and the item table."""
    data = Dataset.of(data)
    pos = positives(data, cut, cfg)
    per_type = pos["item_type"].value_counts()
    progress(
        f"  {len(pos):,} positives ("
        + ", ".join(f"{int(per_type.get(t, 0)):,} {t}" for t in data.item_types)
        + f") before {cut:%Y-%m-%d}"
    )
    con = connect_dataset(data, ("items",))
    try:
        catalogue = con.sql("SELECT item_id FROM items ORDER BY item_id").fetchnumpy()["item_id"]
    finally:
        con.close()
    items = item_features(store, cut, np.asarray(catalogue, dtype=object))
    item_ids = items.column("item_id").to_numpy(zero_copy_only=False)
    row = pd.Series(np.arange(len(item_ids)), index=item_ids)
    unknown = ~pos["item_id"].isin(row.index)
    if unknown.any():
        raise AudiorecError(
            f"{unknown.sum()} positives name items without item features as of "
            f"the cut, e.g. {pos.loc[unknown, 'item_id'].iloc[0]!r}"
        )
    entity = pos[["user_id", "event_timestamp"]].assign(example=np.arange(len(pos)))
    users = historical_features(store, entity, USER_SERVICE)
    users = users.sort_by("example")  # Feast does not keep the entity order
    user_specs = feature_specs(store, USER_SERVICE, users)
    item_specs = feature_specs(store, ITEM_SERVICE, items)
    ts = pos["event_timestamp"].to_numpy()
    val_start = pd.Timestamp(cut) - pd.Timedelta(days=cfg.validation_days)
    validation = (pos["event_timestamp"] >= val_start).to_numpy()
    # Validation scores streams only, so that the weak-positives switch is comparable.
    scored = validation & pos["streamed"].to_numpy()
    item_types = items.column("item_type").to_numpy(zero_copy_only=False)
    seen = streamed_before(
        data,
        val_start.to_pydatetime(),
        pos["user_id"].to_numpy(object),
        np.flatnonzero(validation),
        item_ids,
    )
    return TowerData(
        user_specs=user_specs,
        item_specs=item_specs,
        user=tower_inputs({n: users.column(n) for n in users.column_names}, user_specs),
        user_ids=pos["user_id"].to_numpy(dtype=object),
        item=row.loc[pos["item_id"]].to_numpy(),
        ts=ts,
        validation=validation,
        scored=scored,
        item_ids=item_ids,
        item_types=item_types,
        items=tower_inputs({n: items.column(n) for n in items.column_names}, item_specs),
        seen=seen,
        types=data.item_types,
        window={
            "first_example": str(pos["event_timestamp"].min()),
            "validation_start": str(val_start),
            "cut": str(pd.Timestamp(cut)),
            "examples": int(len(pos)),
            "validation_examples": int(scored.sum()),
        },
    )
