"""Exceptions a user can act on; each message says what went wrong and, where it helps, why."""


class LookalikeError(Exception):
    """Base class: the CLI prints these as one line, without a traceback."""


class DecodeError(LookalikeError):
    """An image could not be read; `path` and `reason` say which and why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):
        """Rebuild from (path, reason): a worker process's error must survive pickling, else
        it breaks the pool that carries it back."""
        return (type(self), (self.path, self.reason))


class WeightsError(LookalikeError):
    """Attribute weights that cannot be used (unknown name, out of range, nothing to compare)."""


class CollectionError(LookalikeError):
    """A collection that is missing, of the wrong version, or asked for something it lacks."""


class CollectionBusy(LookalikeError):
    """Writes in other threads kept changing the indexes under a search: retry shortly."""


class QueryError(LookalikeError):
    """A query that cannot be understood; `position` points into the query text when known."""

    def __init__(self, message: str, position: int | None = None):
        super().__init__(message if position is None else f"{message} (at position {position})")
        self.message = message
        self.position = position

    def __reduce__(self):
        return (type(self), (self.message, self.position))
