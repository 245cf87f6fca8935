"""The ``ser-edge`` command: one entry point, subcommands from every installed part.

Device subcommands live in ``edge_runtime``; host-side packages (``model_build``,
``firmware_bridge``) add theirs through the ``ser_edge.commands`` entry-point group, so this module
never imports them directly (dependencies point one way) and a device install without them still
works. Heavy imports happen only inside the handler of the subcommand that needs them.

Every failure is reported here, once: :func:`edge_runtime.cli_errors.run_handler` turns what a
handler raises into one ``ser-edge COMMAND: error: ...`` line and exit code 2 (bad input) or 1
(runtime failure); argparse errors are one line with exit code 2 as well. ``--debug`` (anywhere on
the command line) or ``SER_EDGE_DEBUG=1`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from importlib import metadata

from . import __version__
from .cli_errors import BAD_INPUT, MissingExtra, run_handler

# Device-side subcommand modules, each exposing add_cli(subparsers). Missing ones are skipped.
_DEVICE_MODULES = ("edge_runtime.frontend_cli", "edge_runtime.run_cli", "edge_runtime.serial_device")
# Fallback when the package is used from a source tree without being installed (no entry points).
_HOST_FALLBACK = ("model_build.cli", "firmware_bridge.cli")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``ser-edge run: error: ...``) and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        hint = f" (see {self.prog} --help)" if "required" in message or "invalid choice" in message else ""
        self.exit(BAD_INPUT, f"{self.prog}: error: {' '.join(message.split())}{hint}\n")


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
        except ImportError as exc:  # a host part that cannot even be imported
            _add_missing(sub, ep.name, exc)
    for mod in _HOST_FALLBACK:
        if mod in seen:
            continue
        try:
            importlib.import_module(mod).register(sub)
        except ImportError:
            pass


def _add_missing(sub: argparse._SubParsersAction, name: str, exc: ImportError) -> None:
    err = MissingExtra(exc.name or name, f"the {name} commands")
    p = sub.add_parser(f"{name}-unavailable", help=str(err))

    def fail(_args):
        raise err

    p.set_defaults(func=fail)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (device commands plus any installed host commands)."""
    parser = Parser(
        prog="ser-edge",
        description="Speech emotion recognition at the edge: fixed-point front end, int8 model, serial link.",
        epilog="Exit codes: 0 ok, 2 bad input or usage, 1 runtime failure. Errors are one line; "
               "--debug (or SER_EDGE_DEBUG=1) shows the traceback.",
    )
    parser.add_argument("--version", action="version", version=f"ser-edge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also SER_EDGE_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _DEVICE_MODULES:
        try:
            importlib.import_module(mod).add_cli(sub)
        except (ImportError, AttributeError):
            continue
    _register_plugins(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ser-edge`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:  # accepted anywhere, not only before the subcommand
        argv = [a for a in argv if a != "--debug"]
        os.environ["SER_EDGE_DEBUG"] = "1"
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return BAD_INPUT
    return run_handler(args.func, args, f"ser-edge {args.command}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
