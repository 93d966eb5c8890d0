"""The engine's settings (a section of PipelineConfig)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from audiorec.config import StrictConfig


class EngineConfig(StrictConfig):
    """``local``: every step in this process, as before. ``ray``: the feature jobs and the
    co-listening graph as tasks over user partitions, text embeddings over item
    partitions, the HGNN (DDP, gloo) and the towers (tf.distribute) data-parallel over
    ``workers``, Feast's historical
    retrieval and materialization on its Ray offline store and compute engine."""

    kind: Literal["local", "ray"] = "local"
    # A running cluster ("ray://head:10001" or "head:6379"); None: start a local Ray
    # instance inside this machine's limits (num_cpus, object_store_mib) and stop it after.
    address: str | None = None
    # Local instance only: CPUs Ray may schedule on (None: all of this machine's cores)
    num_cpus: int | None = Field(None, ge=1)
    # Local instance only: the shared-memory object store (Ray's default is 30% of RAM)
    object_store_mib: int = Field(512, ge=78)  # 78 MiB is Ray's minimum
    # User partitions of the feature jobs and the graph, item partitions of the text
    # embeddings (0: two per schedulable CPU)
    partitions: int = Field(0, ge=0)
    # Training workers: the HGNN's DDP ranks (each samples its share of every balanced
    # batch) and the towers' tf.distribute workers (each embeds its share of a batch's
    # users); 1: both train in the driver, as on the local engine
    workers: int = Field(2, ge=1)
    # Seconds to wait for the cluster's head to accept a connection
    connect_timeout_s: float = Field(5.0, gt=0)
    # Seconds to wait for one step's tasks or training group before cancelling them and
    # failing the run with one line (None: no limit). The default is a ceiling for a hung
    # worker, not a budget: raise it for a backfill whose one step may take longer.
    task_timeout_s: float | None = Field(6 * 3600.0, gt=0)
