"""The project's error hierarchy.

One small tree, as h11 does it: each error carries the HTTP status a server should answer with,
so the I/O layer maps our errors to responses in one place.
"""


class TrioRangeError(Exception):
    """Base of every error trio_range raises on purpose."""

    status_hint: int = 500

    def __init__(self, message: str, *, status_hint: int | None = None) -> None:
        super().__init__(message)
        if status_hint is not None:
            self.status_hint = status_hint


class RangeParseError(TrioRangeError):
    """A Range header or ``?range=`` value that does not parse.

    RFC 9110 §14.2: a server MAY ignore the Range header field; an invalid one is ignored (the
    whole representation is sent), so the hint is 200, not 400.
    """

    status_hint = 200


class ConfigError(TrioRangeError):
    """A configuration value or option that is unknown or out of range."""

    status_hint = 500


class UpstreamError(TrioRangeError):
    """The upstream could not be reached or answered with a broken message."""

    status_hint = 502


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time."""

    status_hint = 504


class StreamAborted(TrioRangeError):
    """Raised inside a response body to abort the client connection.

    Used when the bytes promised by the headers cannot be delivered (a file shrank, an upstream
    truncated its body): an aborted transfer is detectable by the client, a short one is not.
    """

    status_hint = 502


class MediaHeaderError(TrioRangeError):
    """A media file whose container header does not give a duration (truncated, hostile, other).

    Never reaches a client: the origin then paces the file at the fixed rate (issue 16).
    """

    status_hint = 200
