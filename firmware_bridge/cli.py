"""Subcommands of the host bridge, added to the ``ser-edge`` CLI through the entry-point group."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``stream``, ``listen``, ``validate`` (serial host), ``export`` (C export), ``demo`` and
    ``dashboard`` (the live fleet page).

    None of these modules imports pyserial or TensorFlow at import time: a command whose extra is
    missing is still listed (its help says what to install) and fails with one line naming the extra.
    """
    from .dashboard import add_cli as add_dashboard
    from .demo import add_cli as add_demo
    from .export import register_export
    from .image import add_cli as add_firmware
    from .host_commands import register_commands

    register_commands(sub)
    register_export(sub)
    add_demo(sub)
    add_dashboard(sub)
    add_firmware(sub)
