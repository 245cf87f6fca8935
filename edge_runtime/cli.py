"""The ``ser-edge`` command: one entry point, subcommands from every installed part.

Device subcommands live in ``edge_runtime``; host-side packages (``model_build``,
``firmware_bridge``) add theirs through the ``ser_edge.commands`` entry-point group, so this module
never imports them directly (dependencies point one way) and a device install without them still
works. Heavy imports happen only inside the handler of the subcommand that needs them.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

from . import __version__

# Device-side subcommand modules, each exposing add_cli(subparsers). Missing ones are skipped.
_DEVICE_MODULES = ("edge_runtime.frontend_cli", "edge_runtime.run_cli", "edge_runtime.serial_device")
# Fallback when the package is used from a source tree without being installed (no entry points).
_HOST_FALLBACK = ("model_build.cli", "firmware_bridge.cli")


def _register_plugins(sub: argparse._SubParsersAction) -> None:
    seen = set()
    try:
        eps = metadata.entry_points(group="ser_edge.commands")
    except Exception:  # pragma: no cover - very old importlib.metadata
        eps = []
    for ep in eps:
        seen.add(ep.value.split(":")[0])
        try:
            ep.load()(sub)
        except ImportError as exc:  # a host part whose extra is not installed
            _add_missing(sub, ep.name, exc)
    for mod in _HOST_FALLBACK:
        if mod in seen:
            continue
        try:
            importlib.import_module(mod).register(sub)
        except ImportError:
            pass


def _add_missing(sub: argparse._SubParsersAction, name: str, exc: Exception) -> None:
    p = sub.add_parser(f"{name}-unavailable", help=f"({name} not importable: {exc})")
    p.set_defaults(func=lambda a: sys.exit(f"{name} is not installed: {exc}"))


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (device commands plus any installed host commands)."""
    parser = argparse.ArgumentParser(
        prog="ser-edge",
        description="Speech emotion recognition at the edge: fixed-point front end, int8 model, serial link.",
    )
    parser.add_argument("--version", action="version", version=f"ser-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _DEVICE_MODULES:
        try:
            importlib.import_module(mod).add_cli(sub)
        except (ImportError, AttributeError):
            continue
    _register_plugins(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ser-edge`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    rc = args.func(args)
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
