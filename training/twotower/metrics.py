"""What the two towers' training watches: recall@k of the validation examples against the
whole catalogue of their item type, and the training curve it draws.

Cost: recall@k is O(rows x items of the type x dim), in chunks of about 16M scores so
that memory stays bounded at any catalogue size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from training.twotower.examples import TowerData

RECALL_K = 10


def recall_at_k(
    user_vecs: np.ndarray,
    item_vecs: np.ndarray,
    targets: np.ndarray,
    k: int = RECALL_K,
    seen: sp.csr_matrix | None = None,
    bias: np.ndarray | None = None,
) -> float:
    """Share of rows whose target item (row of ``item_vecs``) ranks in the top ``k``;
    ``seen`` (rows x items) marks items the row's user already streamed (never ranked,
    as serving drops them), ``bias`` is added to every row's item scores."""
    if len(targets) == 0:
        return float("nan")
    # rows in chunks of ~16M scores: at 200k items a full (rows x items) matrix is GBs
    chunk = max(1, (1 << 24) // max(1, len(item_vecs)))
    hits = 0
    for lo in range(0, len(targets), chunk):
        hi = min(len(targets), lo + chunk)
        scores = user_vecs[lo:hi] @ item_vecs.T
        if bias is not None:
            scores += bias[None, :]
        if seen is not None:
            coo = seen[lo:hi].tocoo()
            scores[coo.row, coo.col] = -np.inf
        target = scores[np.arange(hi - lo), targets[lo:hi]]
        hits += int(((scores > target[:, None]).sum(axis=1) < k).sum())
    return hits / len(targets)


def per_type(data: TowerData, rows: np.ndarray, kind: str):
    """(which of ``rows`` have a target of ``kind``, the type's item rows, each target's
    column among them, the seen mask restricted to them)."""
    of_kind = np.flatnonzero(data.item_types == kind)
    position = np.full(len(data.item_types), -1)
    position[of_kind] = np.arange(len(of_kind))
    mine = data.item_types[data.item[rows]] == kind
    seen = data.seen[rows[mine]][:, of_kind] if data.seen is not None else None
    return mine, of_kind, position[data.item[rows][mine]], seen


def plot_curve(history: list[dict], path: str | Path) -> None:
    """Training loss and the validation recall@10 of each item type, per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(epochs, [h["train_loss"] for h in history], marker="o")
    a.set(xlabel="epoch", ylabel="in-batch softmax loss", title="training loss")
    for key in [k for k in history[0] if k.startswith("val_recall_")] if history else []:
        b.plot(epochs, [h[key] for h in history], marker="o", label=key[len("val_recall_") :])
    b.set(xlabel="epoch", ylabel=f"recall@{RECALL_K}", title="validation (later slice)")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
