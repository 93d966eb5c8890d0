"""Pipeline settings that fit the data's size: named presets, chosen from the dataset.

A preset is a set of defaults, never a constraint: what the caller set explicitly (a
field present in the config it passed, see pydantic's ``model_fields_set``) always wins.
``standard`` changes nothing (the paper's schedule; the demo and the tests run it);
``large`` bounds every step whose cost would otherwise grow past a nightly window:

- the HGNN trains for a wall-clock budget (the epoch that spends it is the last) on a
  bounded number of balanced steps per epoch, and is retrained only when the last one is
  older than ``hgnn_max_age_days`` (the paper: the HGNN weekly, the towers daily);
- text embeddings are encoded under bfloat16 autocast (2.2x faster, cosine >= 0.9999 to
  fp32; only new or changed items are encoded on later runs, by content hash);
- the feature jobs compute the last ``history_days`` snapshot dates (the windows still
  see the 90 days before each), which are all the towers train on (``train_days``);
- the two towers train on those days with a shorter validation slice and fewer epochs,
  and a later run continues the last run's towers (one epoch on the examples they never
  saw plus a 20% replay sample, :mod:`training.twotower.warm`) until the HGNN is retrained;
- the online store is loaded by two processes at once, and DuckDB's memory in the feature
  jobs is bounded (it spills past 6 GiB).

``auto`` picks ``large`` from ``large_from_events`` events on (PipelineConfig; default
``LARGE_FROM_EVENTS``). :func:`effective` is the one place that decides the settings.
"""

from __future__ import annotations

from typing import Any

from audiorec.config import explicit, merge, validated

LARGE_FROM_EVENTS = 10_000_000

PRESETS: dict[str, dict[str, Any]] = {
    "standard": {},
    "large": {
        "hgnn_max_age_days": 7,
        "text": {"precision": "bf16"},
        "hgnn": {
            "max_epochs": 4,
            "max_steps_per_epoch": 300,
            "patience": 2,
            "time_budget_s": 480.0,
        },
        "features": {"history_days": 14, "materialize_processes": 2, "memory_limit_gib": 6.0},
        "two_tower": {
            "train_days": 14,
            "validation_days": 3,
            "max_epochs": 4,
            "warm_start": True,
            # the backfill's budget: the daily warm start goes on with the slice's days
            "refit": False,
        },
    },
}


def choose_preset(requested: str, events: int, large_from: int = LARGE_FROM_EVENTS) -> str:
    if requested != "auto":
        return requested
    return "large" if events >= large_from else "standard"


def apply_preset(cfg: Any, name: str) -> Any:
    """``cfg`` with preset ``name``'s defaults under what the caller set."""
    over = explicit(cfg)
    over.pop("preset", None)
    return validated(type(cfg), merge(merge(PRESETS[name], over), {"preset": name}))


def effective(cfg: Any, events: int) -> tuple[Any, str]:
    """The one place that decides a pipeline config's effective settings for a dataset of
    ``events`` events: (the config every step receives, the preset's name).

    Call it on the caller's config before anything else is merged into it; anything
    merged later goes through ``with_overrides``, which keeps the record of what was set.
    """
    name = choose_preset(cfg.preset, events, cfg.large_from_events)
    return apply_preset(cfg, name), name


def describe(cfg: Any, name: str) -> str:
    """One line: the preset and the effective value of each setting it names, marked
    "(yours)" where the caller's value won over the preset's."""
    if not PRESETS[name]:
        return f"preset {name}: the default settings"
    dumped, mine = cfg.model_dump(), explicit(cfg)

    def flat(d: dict, prefix: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            path = f"{prefix}{k}"
            if isinstance(v, dict):
                out += flat(v, path + ".")
                continue
            value, set_here = dumped, mine
            for part in path.split("."):
                value = value[part]
                set_here = set_here.get(part, {}) if isinstance(set_here, dict) else {}
            yours = " (yours)" if set_here != {} and set_here != v else ""
            out.append(f"{path}={value}{yours}")
        return out

    return f"preset {name}: " + ", ".join(flat(PRESETS[name]))
