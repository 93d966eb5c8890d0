"""audiorec: audiobook and podcast recommendations (2T-HGNN) on a feature store.

The package holds what every side shares: the command line, the typed-config base class and
the error type the CLI turns into one readable line. The batch side lives in ``training``,
the online side in ``serving``.
"""

__version__ = "0.1.0"
