"""Item types are data: which types a dataset has, and what follows from them.

A dataset names its item types in ``items.parquet`` (any non-empty names). One of them is
the *focus*: the sparse, new content type the platform is launching (the paper's
audiobooks), on which cold start is measured and early stopping scores; by default the
type with the fewest streams. Everything per type derives from :class:`ItemTypes`:

* the co-listening relations: every unordered pair of types, T(T+1)/2, named by the
  types' short codes (``AA``, ``AP``, ``PP`` for audiobooks and podcasts); message passing
  runs both ways (``AP`` and ``PA``);
* the user features (one declaration, :data:`USER_WINDOW_FEATURES`, instantiated per type):
  the Feast views in ``feature_repo/`` and the feature jobs both come from it;
* one index, one popularity list and one evaluation table per type.

Order: the focus first, then the others by name (node type ids, relation names and table
order all follow it). The feature jobs record a work directory's types in their state
file, which is what the feature repository reads (``audiorec.featurestore.item_types``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Literal

import numpy as np

from audiorec.errors import ContractError

DEFAULT = ("audiobook", "podcast")
USER_CODE = "U"  # the user node type of the tripartite (HGNN-w-users) graph
ITEM_TYPE_PATTERN = "[a-z][a-z0-9_]{0,31}"  # a type names features: an identifier
_NAME = re.compile(ITEM_TYPE_PATTERN)

# The per-type user features of the trailing window: (name template, kind, view, scope,
# meaning). "{t}" is the type's name. Kinds: "vector" (mean HGNN embedding, zeros when
# none) or "count". View: which Feast view carries it (preferences, weak signals). Scope:
# "all" types, or the "focus" type only: the paper's weak signals (previews, intents to
# pay, their mean embedding) are its answer to the new type's scarcity; on a dense type
# they added inputs that measured below noise on the demo world and cost 0.02 HR@10 on Ciao.
USER_WINDOW_FEATURES: tuple[
    tuple[str, Literal["vector", "count"], str, Literal["all", "focus"], str], ...
] = (
    (
        "{t}_pref",
        "vector",
        "preferences",
        "all",
        "mean HGNN embedding of the distinct {t} items streamed or weakly signalled",
    ),
    ("{t}_items_90d", "count", "preferences", "all", "distinct {t} items touched"),
    ("{t}_streams_90d", "count", "preferences", "all", "streams of {t} items"),
    ("{t}_follow_count_90d", "count", "weak", "all", "follows of {t} items"),
    ("{t}_preview_count_90d", "count", "weak", "focus", "previews of {t} items"),
    ("{t}_intent_to_pay_count_90d", "count", "weak", "focus", "intents to pay for {t} items"),
    (
        "weak_{t}_pref",
        "vector",
        "weak",
        "focus",
        "mean HGNN embedding of the {t} items followed, previewed or started to buy",
    ),
)
# Features per type that come from the HGNN, and from weak signals (the evaluation's
# "2T alone" baseline and "no weak signals" ablation switch them off).
HGNN_TEMPLATES = ("{t}_pref", "weak_{t}_pref")
WEAK_TEMPLATES = (
    "{t}_follow_count_90d",
    "{t}_preview_count_90d",
    "{t}_intent_to_pay_count_90d",
    "weak_{t}_pref",
)


@dataclass(frozen=True)
class ItemTypes:
    """The item types of one dataset, the focus first. ``codes``: one short, unique
    upper-case code per type (its initial, longer where initials clash)."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.names:
            raise ContractError("a dataset needs at least one item type")
        bad = [n for n in self.names if not _NAME.fullmatch(n)]
        if bad:
            raise ContractError(
                f"item type names must be lower-case identifiers of at most "
                f"32 characters (a-z, 0-9, _); got {bad[:3]}"
            )
        if len(set(self.names)) != len(self.names):
            raise ContractError(f"item types repeat: {list(self.names)}")

    @classmethod
    def of(cls, names: Iterable[str], focus: str | None = None) -> "ItemTypes":
        """``names`` ordered: ``focus`` (default: the first given) first, the rest sorted."""
        names = list(names)
        if not names:
            raise ContractError("a dataset needs at least one item type")
        focus = focus if focus is not None else names[0]
        if focus not in names:
            raise ContractError(
                f"focus item type {focus!r} is not one of the dataset's "
                f"types ({', '.join(sorted(names))})"
            )
        return cls((focus, *sorted(n for n in set(names) if n != focus)))

    @property
    def focus(self) -> str:
        return self.names[0]

    def __iter__(self) -> Any:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def index(self, name: str) -> int:
        return self.names.index(name)

    def positions(self, values: Any) -> np.ndarray:
        """(n,) int64 index into ``names`` of each type name in ``values`` (all known)."""
        names = np.array(self.names, dtype=object)
        order = np.argsort(names)
        values = np.asarray(values, dtype=object)
        pos = np.searchsorted(names[order], values).clip(max=len(names) - 1)
        found = order[pos]
        if len(values) and (names[found] != values).any():
            unknown = sorted(set(values[names[found] != values].tolist()))[:3]
            raise ContractError(f"item types {unknown} are not among {list(self.names)}")
        return np.asarray(found, dtype=np.int64)

    @property
    def codes(self) -> dict[str, str]:
        """type -> code: the upper-case initial, extended letter by letter on a clash
        (and never ``U``, the users' code)."""
        out: dict[str, str] = {}
        for name in self.names:
            for length in range(1, len(name) + 1):
                code = name[:length].upper()
                if code != USER_CODE and code not in out.values():
                    break
            else:
                code = f"{name.upper()}{len(out)}"
            out[name] = code
        return out

    @property
    def relations(self) -> tuple[str, ...]:
        """Every unordered pair of types (i <= j in type order), as code pairs."""
        c = [self.codes[n] for n in self.names]
        return tuple(c[i] + c[j] for i in range(len(c)) for j in range(i, len(c)))

    def relation_types(self, relation: str) -> tuple[str, str]:
        """(source type, target type) of a relation code pair (message relations too)."""
        by_code = {v: k for k, v in self.codes.items()}
        for i in range(1, len(relation)):
            a, b = relation[:i], relation[i:]
            if a in by_code and b in by_code:
                return by_code[a], by_code[b]
        raise ContractError(
            f"relation {relation!r} does not name two of the item types "
            f"({', '.join(f'{v}={k}' for k, v in self.codes.items())})"
        )

    def user_window_columns(self) -> list[tuple[str, str, str]]:
        """(feature name, kind, view) of every per-type window feature, type by type."""
        return [
            (template.format(t=t), kind, view)
            for t in self.names
            for template, kind, view, scope, _ in USER_WINDOW_FEATURES
            if scope == "all" or t == self.focus
        ]

    def hgnn_user_features(self) -> tuple[str, ...]:
        return self._declared(HGNN_TEMPLATES)

    def weak_user_features(self) -> tuple[str, ...]:
        return self._declared(WEAK_TEMPLATES)

    def _declared(self, templates: tuple[str, ...]) -> tuple[str, ...]:
        names = {n for n, _, _ in self.user_window_columns()}
        return tuple(
            tpl.format(t=t) for t in self.names for tpl in templates if tpl.format(t=t) in names
        )

    def history_feature(self, name: str) -> str:
        """The count that says whether a user has recent history of type ``name``."""
        return f"{name}_items_90d"

    def to_json(self) -> list[str]:
        return list(self.names)
