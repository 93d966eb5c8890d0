"""The A/B readout: what each arm's answers led to, with intervals a sceptic accepts.

Inputs are the server's log (audiorec/eventlog.py): every Recommend answer as an
exposure (user, arm, its configured share, salt, items, time) and every event accepted
through RecordEvents. For one experiment (a salt; default: the newest one logged):

- **users**: those with an exposure; a user seen in two arms (the shares changed under
  them) is left out and counted, as are answers a caller forced to an arm (``arm`` in
  the request: the inspector's switch), which are no part of the random split;
- **stream-through**: the share of exposures followed, within ``window_hours``, by a
  stream of one of the items shown (a ratio over all of an arm's exposures);
- **new starts**: per user, the focus-type items the user streamed for the first time
  (not before the served model's cut, nor earlier in the experiment) from the first
  exposure until ``window_hours`` after the last;
- each with a 95% interval from a seeded bootstrap over the arm's users, and every arm's
  difference to the first arm (the control) from independent bootstraps of both arms;
- **sample-ratio mismatch**: a chi-square test of the users per arm against the
  configured shares; p < 0.001 is flagged (the split or the logging is broken, and the
  differences cannot be trusted).

Cost: O(exposures x k + events) in pandas joins; the bootstrap O(resamples x users).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audiorec.artifact import current_dir, read_manifest
from audiorec.errors import AudiorecError
from audiorec.eventlog import EVENTS, EXPOSURES, log_dir, read_records
from training.evaluation.intervals import LEVEL, RESAMPLES

SRM_P = 0.001


@dataclass(frozen=True)
class Estimate:
    value: float
    lo: float
    hi: float

    def text(self, unit: str = "") -> str:
        """``unit``: "%" (a share), "pts" (a difference of shares), "" (a number)."""
        if unit == "%":
            return f"{self.value:.2%} [{self.lo:.2%}, {self.hi:.2%}]"
        if unit == "pts":
            return f"{self.value * 100:+.2f} [{self.lo * 100:+.2f}, {self.hi * 100:+.2f}] pts"
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"

    @property
    def verdict(self) -> str:
        return "higher" if self.lo > 0 else "lower" if self.hi < 0 else "level"


@dataclass
class ArmReadout:
    name: str
    share: float
    users: int
    exposures: int
    versions: list[str]
    stream_through: Estimate
    new_starts: Estimate
    # difference to the first arm (None for the first arm itself)
    stream_through_diff: Estimate | None = None
    new_starts_diff: Estimate | None = None


@dataclass
class Readout:
    salt: str
    since: str
    window_hours: float
    focus: str
    arms: list[ArmReadout]
    srm_p: float
    left_out: dict[str, int] = field(default_factory=dict)

    @property
    def srm(self) -> bool:
        return self.srm_p < SRM_P

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "srm": self.srm}

    def text(self) -> str:
        lines = [
            f"experiment {self.salt!r} since {self.since}: stream-through within "
            f"{self.window_hours:g} h, new {self.focus} starts per user; 95% intervals "
            "(bootstrap over users), differences to the first arm",
            f"  {'arm':<12} {'share':>6} {'users':>7} {'exposures':>9}  "
            f"{'stream-through':<28} {'new starts / user':<26} difference to the first arm",
        ]
        for a in self.arms:
            diff = (
                f"stream-through {a.stream_through_diff.text('pts')} "
                f"{a.stream_through_diff.verdict}; new starts "
                f"{a.new_starts_diff.text()} {a.new_starts_diff.verdict}"
                if a.stream_through_diff and a.new_starts_diff
                else "(the control)"
            )
            lines.append(
                f"  {a.name:<12} {a.share:>6.2f} {a.users:>7,} {a.exposures:>9,}  "
                f"{a.stream_through.text('%'):<28} {a.new_starts.text():<26} {diff}"
            )
        check = (
            f"SAMPLE RATIO MISMATCH (p = {self.srm_p:.2g} < {SRM_P}): the users per arm do "
            "not match the shares; do not trust the differences"
            if self.srm
            else f"users per arm match the shares (chi-square p = {self.srm_p:.2g})"
        )
        lines.append(f"  {check}")
        if any(self.left_out.values()):
            lines.append(
                "  left out: " + ", ".join(f"{v:,} {k}" for k, v in self.left_out.items() if v)
            )
        return "\n".join(lines)


def read_experiment(
    workdir: str | Path,
    salt: str | None = None,
    since: datetime | None = None,
    window_hours: float = 24.0,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Readout:
    """The readout of one experiment from the work directory's log."""
    exposures = _exposures(workdir, salt, since)
    salt = str(exposures["salt"].iloc[0])
    manifest = read_manifest(current_dir(workdir), verify_files=False)
    focus = manifest.item_types[0]
    left_out = {"forced answers": int(exposures["forced"].sum())}
    exposures = exposures[~exposures["forced"]]
    arms_of = exposures.groupby("user_id")["arm"].nunique()
    switched = arms_of.index[arms_of > 1]
    left_out["users seen in two arms"] = len(switched)
    exposures = exposures[~exposures["user_id"].isin(switched)].reset_index(drop=True)
    streams = _streams(workdir, exposures)
    converted = _converted(exposures, streams, window_hours)
    starts = _new_starts(workdir, exposures, streams, window_hours, focus)
    per_user = (
        exposures.assign(converted=converted)
        .groupby(["arm", "user_id"])
        .agg(exposures=("converted", "size"), converted=("converted", "sum"))
        .reset_index()
    )
    per_user["starts"] = per_user["user_id"].map(starts).fillna(0)
    shares = exposures.groupby("arm")["share"].first()
    names = list(shares.sort_index().index)
    rng = np.random.default_rng(seed)
    draws, arms = {}, []
    for name in names:
        mine = per_user[per_user["arm"] == name]
        exp, conv, st = (mine[c].to_numpy(np.float64) for c in ("exposures", "converted", "starts"))
        idx = rng.integers(0, len(mine), (resamples, len(mine)))
        draws[name] = (conv[idx].sum(1) / exp[idx].sum(1), st[idx].mean(1))
        arms.append(
            ArmReadout(
                name=name,
                share=float(shares[name]),
                users=len(mine),
                exposures=int(exp.sum()),
                versions=sorted(exposures.loc[exposures["arm"] == name, "version"].unique()),
                stream_through=_estimate(conv.sum() / exp.sum(), draws[name][0]),
                new_starts=_estimate(st.mean(), draws[name][1]),
            )
        )
    control = names[0]
    for arm in arms[1:]:
        arm.stream_through_diff = _estimate(
            arm.stream_through.value - arms[0].stream_through.value,
            draws[arm.name][0] - draws[control][0],
        )
        arm.new_starts_diff = _estimate(
            arm.new_starts.value - arms[0].new_starts.value,
            draws[arm.name][1] - draws[control][1],
        )
    return Readout(
        salt=salt,
        since=datetime.fromtimestamp(exposures["ts_ms"].min() / 1e3, timezone.utc).isoformat(),
        window_hours=window_hours,
        focus=focus,
        arms=arms,
        srm_p=_srm_p([a.users for a in arms], [a.share for a in arms]),
        left_out=left_out,
    )


def readout_dir(workdir: str | Path, salt: str) -> Path:
    """Where an experiment's readout is written: ``<workdir>/experiments/<salt>``."""
    return Path(workdir) / "experiments" / (re.sub(r"[^A-Za-z0-9._-]", "_", salt)[:64] or "_")


def write_readout(readout: Readout, out: str | Path) -> Path:
    """``out``/readout.json and readout.png (the two metrics per arm, with intervals)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "readout.json").write_text(json.dumps(readout.to_json(), indent=1))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric, label in zip(
        axes,
        ("stream_through", "new_starts"),
        ("stream-through (share of exposures)", f"new {readout.focus} starts per user"),
    ):
        est = [getattr(a, metric) for a in readout.arms]
        x = np.arange(len(est))
        ax.bar(x, [e.value for e in est], color="#4c78a8")
        ax.errorbar(
            x,
            [e.value for e in est],
            yerr=[[e.value - e.lo for e in est], [e.hi - e.value for e in est]],
            fmt="none",
            ecolor="black",
            capsize=6,
        )
        ax.set_xticks(x, [f"{a.name}\n{a.users:,} users" for a in readout.arms])
        ax.set_title(label, fontsize=10)
    fig.suptitle(
        f"experiment {readout.salt}" + (" - SAMPLE RATIO MISMATCH" if readout.srm else ""),
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(out / "readout.png", dpi=110)
    plt.close(fig)
    return out / "readout.png"


def _exposures(workdir: str | Path, salt: str | None, since: datetime | None) -> pd.DataFrame:
    rows = [r for _, _, r in read_records(log_dir(workdir), EXPOSURES)]
    df = pd.DataFrame(rows)
    if df.empty or "salt" not in df:
        raise AudiorecError(f"no exposures logged under {log_dir(workdir)}")
    df = df[df["salt"] != ""]  # answers without an experiment
    if since is not None:
        df = df[df["ts_ms"] >= since.timestamp() * 1e3]
    if df.empty:
        raise AudiorecError("no exposures of an experiment (serve with --arm) in the log")
    if salt is None:  # the newest experiment
        salt = str(df.loc[df["ts_ms"].idxmax(), "salt"])
    df = df[df["salt"] == salt]
    if df.empty:
        raise AudiorecError(f"no exposures of the experiment {salt[:64]!r} in the log")
    return df.reset_index(drop=True)


def _streams(workdir: str | Path, exposures: pd.DataFrame) -> pd.DataFrame:
    users = set(exposures["user_id"])
    rows = [
        (r["user_id"], r["item_id"], int(r["ts_us"]))
        for _, _, r in read_records(log_dir(workdir), EVENTS)
        if r.get("event_type") == "stream" and r.get("user_id") in users
    ]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "ts_us"])
    return df.drop_duplicates(["user_id", "item_id", "ts_us"])


def _converted(exposures: pd.DataFrame, streams: pd.DataFrame, window_hours: float) -> np.ndarray:
    """Per exposure: whether a shown item was streamed within the window after it."""
    shown = exposures[["user_id", "ts_ms", "items"]].explode("items").dropna()
    shown = shown.rename(columns={"items": "item_id"}).reset_index()
    hits = shown.merge(streams, on=["user_id", "item_id"])
    start = hits["ts_ms"] * 1000
    inside = (hits["ts_us"] >= start) & (hits["ts_us"] <= start + window_hours * 3.6e9)
    out = np.zeros(len(exposures), bool)
    out[hits.loc[inside, "index"].unique()] = True
    return out


def _new_starts(
    workdir: str | Path,
    exposures: pd.DataFrame,
    streams: pd.DataFrame,
    window_hours: float,
    focus: str,
) -> pd.Series:
    """Per user: focus-type items first streamed during the experiment."""
    directory = current_dir(workdir)
    items = pd.read_parquet(directory / "items.parquet", columns=["item_id", "item_type"])
    consumed = pd.read_parquet(directory / "consumed.parquet", columns=["user_id", "item_id"])
    span = exposures.groupby("user_id")["ts_ms"].agg(["min", "max"]).reset_index()
    s = streams.merge(items[items["item_type"] == focus], on="item_id").merge(span, on="user_id")
    s = s.sort_values("ts_us").drop_duplicates(["user_id", "item_id"])  # the first stream
    end = (s["max"] + window_hours * 3.6e6) * 1000
    s = s[(s["ts_us"] >= s["min"] * 1000) & (s["ts_us"] <= end)]
    s = s.merge(consumed, on=["user_id", "item_id"], how="left", indicator=True)
    s = s[s["_merge"] == "left_only"]
    return s.groupby("user_id").size()


def _estimate(value: float, draws: np.ndarray) -> Estimate:
    tail = (1 - LEVEL) / 2 * 100
    lo, hi = np.nanpercentile(draws, [tail, 100 - tail])
    return Estimate(float(value), float(lo), float(hi))


def _srm_p(users: list[int], shares: list[float]) -> float:
    from scipy.stats import chisquare

    if sum(shares) < 1 - 1e-6:  # an arm with no user at all: the rest of the shares
        users, shares = [*users, 0], [*shares, 1 - sum(shares)]
    if len(users) < 2:
        return 1.0
    expected = np.asarray(shares) / np.sum(shares) * np.sum(users)
    return float(chisquare(users, expected).pvalue)
