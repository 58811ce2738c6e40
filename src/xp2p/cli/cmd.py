"""``xp2p cmd``: send a command to a device and print the reply. Not implemented yet (issue 3)."""

from __future__ import annotations

from xp2p.cli.common import Subparsers


def register(commands: Subparsers) -> None:
    """Adds ``xp2p cmd`` once it exists."""
