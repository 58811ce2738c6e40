"""Package ``__init__``s that load their public names on first use.

A package re-exports its main classes (``from xp2p.link import Link``), but importing one of
its pure modules (``xp2p.link.nat_behaviour``) runs the package's ``__init__`` first: eager
re-exports would pull aioice, aioquic and cryptography in with it. Each such package maps
its names to the modules that define them and lets this build its ``__getattr__``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``name`` from ``package.names[name]``."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__
