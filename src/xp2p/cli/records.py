"""``xp2p records``: list a device's recordings. Not implemented yet (issue 3)."""

from __future__ import annotations

from xp2p.cli.common import Subparsers


def register(commands: Subparsers) -> None:
    """Adds ``xp2p records`` once it exists."""
