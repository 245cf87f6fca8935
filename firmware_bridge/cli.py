"""Subcommands of the host bridge, added to the ``ser-edge`` CLI through the entry-point group."""
from __future__ import annotations

import argparse
import importlib


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``stream``, ``listen``, ``validate`` (serial host), ``export`` (C export) and ``demo``."""
    for mod, fn in (("firmware_bridge.host_commands", "register_commands"), ("firmware_bridge.export", "register_export")):
        try:
            getattr(importlib.import_module(mod), fn)(sub)
        except ImportError as exc:  # pyserial missing: say so when the command is used
            p = sub.add_parser(mod.rsplit(".", 1)[1].replace("_", "-") + "-unavailable", help=f"needs: {exc}")
            p.set_defaults(func=lambda a, exc=exc: SystemExit(f"not available: {exc} (pip install 'ser-edge[bridge]')"))
    from .demo import add_cli as add_demo

    add_demo(sub)
