"""The error types users see, each carrying the gRPC status it means.

Anything the user can fix (bad input data, a missing file, a wrong option, a bad request)
raises an :class:`AudiorecError` subclass with a message that says what arrived and what
was expected; the CLI prints it as one line and exits non-zero, and the gRPC server answers
with the class's :attr:`~AudiorecError.status` (mapped in one place, ``serving/server.py``).
Anything else is a bug and keeps its traceback (INTERNAL on the wire). The status is a
``grpc.StatusCode`` member name, so this base layer needs no gRPC import.
"""


class AudiorecError(Exception):
    """A user-facing failure with a self-explanatory message. On the request path it is
    the server's own state that is wrong (a broken artifact, a feature of the wrong
    shape): INTERNAL, with the type only on the wire."""

    status = "INTERNAL"


class ContractError(AudiorecError):
    """A dataset or artifact does not match its contract (``training.data.contract``,
    the manifests)."""


class InvalidRequest(AudiorecError):
    """A request field is out of its domain."""

    status = "INVALID_ARGUMENT"


class NotFound(AudiorecError):
    """A request names something that does not exist."""

    status = "NOT_FOUND"


class DeadlineExceeded(AudiorecError):
    """The caller's deadline passed; the remaining stages were not run."""

    status = "DEADLINE_EXCEEDED"


class Overloaded(AudiorecError):
    """The server is at capacity; the call was refused before any work."""

    status = "RESOURCE_EXHAUSTED"


class StoreUnavailable(AudiorecError):
    """The online store did not answer in time (or the breaker is open). The message is
    short and free of connection details: the request path turns it into a fallback
    answer whose ``reason`` quotes it."""

    status = "UNAVAILABLE"


class Unsupported(AudiorecError):
    """The served model cannot do what the call asks (a version published without what
    the call needs)."""

    status = "FAILED_PRECONDITION"


class AlreadyExists(AudiorecError):
    """The call would change something that exists and is not edited in place."""

    status = "ALREADY_EXISTS"
