"""``xp2p talk``: talk-back: send audio to a device. Not implemented yet (issue 3)."""

from __future__ import annotations

from xp2p.cli.common import Subparsers


def register(commands: Subparsers) -> None:
    """Adds ``xp2p talk`` once it exists."""
