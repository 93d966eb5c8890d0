"""Where the heavy steps run: in this process (``local``) or on a Ray cluster (``ray``).

``open_engine(cfg)`` returns an :class:`Engine`; the steps hand it their partitions
(``map``) or a data-parallel training group (``group``) and never import Ray themselves.
"""

from training.engine.base import Engine, LocalEngine, open_engine
from training.engine.config import EngineConfig

__all__ = ["Engine", "EngineConfig", "LocalEngine", "open_engine"]
