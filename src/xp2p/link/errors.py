"""The link's two exceptions, in a leaf module so that every layer can catch them without
importing aioice or aioquic."""

from __future__ import annotations


class LinkError(Exception):
    """The link could not be set up or was lost; ``reason`` is a short machine word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class StreamClosed(Exception):
    """The peer cancelled the request, or the link went down, while data was flowing."""
