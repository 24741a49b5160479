"""trio_range: an RFC 9110 range-request origin and a streaming range proxy on trio."""

__version__ = "0.1.0"
