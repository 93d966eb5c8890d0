"""A small client of the Recommender API (the ``audiorec recommend`` command, tests)."""

from __future__ import annotations

from typing import Sequence

import grpc

from audiorec.errors import AudiorecError
from audiorec.v1 import recommender_pb2 as pb
from audiorec.v1 import recommender_pb2_grpc as pb_grpc

TYPES = {"audiobook": pb.AUDIOBOOK, "podcast": pb.PODCAST}


def _call(target: str, method: str, request, timeout: float):
    with grpc.insecure_channel(target) as channel:
        try:
            return getattr(pb_grpc.RecommenderStub(channel), method)(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise AudiorecError(f"{method} at {target}: {exc.code().name}: {exc.details()}") \
                from None


def recommend(target: str, user_id: str, k: int = 10, item_type: str = "audiobook",
              timeout: float = 5.0, languages: Sequence[str] = (),
              include_consumed: bool = False) -> pb.RecommendResponse:
    return _call(target, "Recommend", pb.RecommendRequest(
        user_id=user_id, k=k, item_type=TYPES[item_type], languages=list(languages),
        include_consumed=include_consumed), timeout)


def similar(target: str, item_id: str, k: int = 10, item_type: str = "audiobook",
            timeout: float = 5.0) -> pb.RecommendSimilarResponse:
    return _call(target, "RecommendSimilar", pb.RecommendSimilarRequest(
        item_id=item_id, k=k, item_type=TYPES[item_type]), timeout)


def format_answer(asked: str, response) -> str:
    """A readable table: rank, title, item id, type, score."""
    head = f"{asked}: model {response.model_version}"
    if hasattr(response, "strategy"):
        head += f", {pb.Strategy.Name(response.strategy)}"
        if response.reason:
            head += f" ({response.reason})"
    width = max([len(i.title) for i in response.items] + [5])
    lines = [head, f"  {'#':>3}  {'title':<{width}}  {'item_id':<10}  {'type':<9}  score"]
    for n, i in enumerate(response.items, 1):
        lines.append(f"  {n:>3}  {i.title:<{width}}  {i.item_id:<10}  "
                     f"{pb.ItemType.Name(i.item_type).lower():<9}  {i.score:.3f}")
    if not response.items:
        lines.append("  (no items)")
    return "\n".join(lines)
