"""A synthetic streaming world with planted tastes, written in the data contract.

``generate_world(config, seed, out)`` is the entry point; ``WorldConfig.for_scale`` gives
the tiny / demo / large presets. See ``world.py`` for the generative story.
"""

from training.synth.config import SCALES, WorldConfig
from training.synth.world import generate_world

__all__ = ["SCALES", "WorldConfig", "generate_world"]
