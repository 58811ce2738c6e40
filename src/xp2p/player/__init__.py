"""The local player: HTTP-FLV server and page."""
