"""The daily run as steps: each a function of a frozen :class:`RunContext` that returns a
typed result. ``training/pipeline.py`` runs them in order (and times, reports and guards
each); the evaluation calls the same functions for the rows it evaluates as served.

    text_step -> hgnn_step -> features_step -> towers_step -> release_step
"""

from training.steps.context import PipelineConfig, RunContext
from training.steps.inputs import HGNNResult, TextResult, features_step, hgnn_step, text_step
from training.steps.model import ReleaseResult, TowerResult, release_step, towers_step

__all__ = [
    "HGNNResult",
    "PipelineConfig",
    "ReleaseResult",
    "RunContext",
    "TextResult",
    "TowerResult",
    "features_step",
    "hgnn_step",
    "release_step",
    "text_step",
    "towers_step",
]
