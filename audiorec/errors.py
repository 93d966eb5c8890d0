"""The one error type users see.

Anything the user can fix (bad input data, a missing file, a wrong option) raises
:class:`AudiorecError` with a message that says what arrived and what was expected; the CLI
prints it as one line and exits non-zero. Anything else is a bug and keeps its traceback.
"""


class AudiorecError(Exception):
    """A user-facing failure with a self-explanatory message."""


class ContractError(AudiorecError):
    """A dataset does not match the data contract (see ``training.data.contract``)."""


class InvalidRequest(AudiorecError):
    """A request field is out of its domain (gRPC INVALID_ARGUMENT)."""


class NotFound(AudiorecError):
    """A request names something that does not exist (gRPC NOT_FOUND)."""


class DeadlineExceeded(AudiorecError):
    """The caller's deadline passed; the remaining stages were not run."""


class Overloaded(AudiorecError):
    """The server is at capacity; the call was refused before any work (RESOURCE_EXHAUSTED)."""
