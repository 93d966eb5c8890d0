"""HGNN-w-users: the same HGNN code on the tripartite graph, users scored by their node.

Item nodes start from their text embedding, user nodes from the mean text embedding of
the items they touched (users have no text of their own). After training on all five
relations (link prediction, the HGNN's margin loss), a user's recommendations are the
items nearest their node's embedding. Users without interactions in the window have no
node and get a zero vector (no signal).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from training.data.duck import DatasetLike
from training.data.embeddings import read_item_embeddings
from training.data.ids import aligned
from training.evaluation.models import unit
from training.graph.tripartite import build_tripartite_graph
from training.hgnn.fit import train_and_embed


def hgnn_with_users(
    data: DatasetLike,
    text_path: str | Path,
    cut: datetime,
    pipeline_cfg,
    users: np.ndarray,
    progress: bool = False,
    engine=None,
):
    """(user vectors aligned to ``users``, item ids, item vectors) of a trained model."""
    cfg, graph_cfg = pipeline_cfg.hgnn, pipeline_cfg.graph
    g = build_tripartite_graph(data, cut, graph_cfg)
    text = read_item_embeddings(text_path)
    item_x = unit(aligned(g.item_id, np.asarray(text.item_id, dtype=object), text.vectors))
    s, d, _ = (np.concatenate(parts) for parts in zip(*(g.edges[r] for r in g.user_relations)))
    touched = sp.csr_matrix(
        (np.ones(len(s), np.float32), (s - g.n_items, d)), shape=(len(g.user_id), g.n_items)
    )
    user_x = unit(touched @ item_x)
    features = torch.from_numpy(np.concatenate([item_x, user_x]).astype(np.float32))
    _, z = train_and_embed(g, features, cfg, progress, engine)
    user_vecs = aligned(np.asarray(users, dtype=object), g.user_id, z[g.n_items :])
    return user_vecs, g.item_id, z[: g.n_items]
