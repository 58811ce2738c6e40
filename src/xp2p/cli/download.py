"""``xp2p download``: download a recorded file from a device. Not implemented yet (issue 3)."""

from __future__ import annotations

from xp2p.cli.common import Subparsers


def register(commands: Subparsers) -> None:
    """Adds ``xp2p download`` once it exists."""
