"""How every ``ser-edge`` subcommand fails: one line on stderr, a consistent exit code.

Exit codes (the whole CLI, every subcommand):

* ``0`` success;
* ``2`` bad input or usage: an option value, a missing or unreadable file, a corrupt model or audio
  file, a folder that holds no corpus: something the user can fix in the command line;
* ``1`` runtime failure: a device that does not answer, a port that cannot be opened, a missing
  optional dependency, a build that fails, an internal error;
* ``130`` interrupted (Ctrl-C).

A handler raises :class:`BadInput` or :class:`Failure` (or lets one of the library's own error types
through; :func:`describe` maps those); :func:`run_handler` (called by ``edge_runtime.cli.main``)
prints ``ser-edge COMMAND: error: MESSAGE`` and returns the code. A traceback is printed only with
``--debug`` or ``SER_EDGE_DEBUG=1``. This module imports nothing heavy: it recognises optional
libraries' exceptions (pyserial, TensorFlow) by class name.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Callable

from .native_log import debug_enabled

BAD_INPUT = 2
FAILURE = 1
INTERRUPTED = 130

# import name of an optional dependency -> the extra of pyproject.toml that installs it
EXTRA_OF_MODULE = {
    "tensorflow": "train", "tf_keras": "train", "keras": "train", "librosa": "train", "scipy": "train",
    "matplotlib": "train", "tflite_micro": "train", "tqdm": "train",
    "serial": "bridge", "cobs": "bridge",
    "sounddevice": "mic",
    "paho": "mqtt",
    "soundfile": "edge", "ai_edge_litert": "edge", "soxr": "edge",
}
# import name -> distribution name, where they differ
_DIST_OF_MODULE = {"paho": "paho-mqtt", "serial": "pyserial", "tf_keras": "tf-keras", "tflite_micro": "tflite-micro",
                   "ai_edge_litert": "ai-edge-litert"}


class CliError(Exception):
    """A failure the CLI reports as one line; ``code`` is the process exit code."""

    code = FAILURE


class BadInput(CliError):
    """The command line named something unusable (exit code 2)."""

    code = BAD_INPUT


class Failure(CliError):
    """The command could not do its work for a reason outside the command line (exit code 1)."""

    code = FAILURE


class MissingExtra(Failure):
    """An optional dependency is not installed; the message says which extra installs it."""

    def __init__(self, module: str, what: str | None = None):
        top = module.split(".")[0]
        extra = EXTRA_OF_MODULE.get(top)
        dist = _DIST_OF_MODULE.get(top, top)
        hint = f"pip install 'ser-edge[{extra}]'" if extra else f"pip install {dist}"
        super().__init__(f"{what or 'this command'} needs the Python package {dist!r}, which is not "
                         f"installed: {hint}")
        self.module, self.extra = top, extra


def missing_modules(*modules: str) -> list[str]:
    """The optional modules among ``modules`` that are not installed (found without importing them)."""
    out = []
    for m in modules:
        try:
            if importlib.util.find_spec(m) is None:
                out.append(m)
        except (ImportError, ValueError):
            out.append(m)
    return out


def needs(help_text: str, *modules: str) -> str:
    """``help_text``, marked with the extra to install when one of ``modules`` is missing.

    Host commands call this for their ``help=`` so an edge-only install's ``--help`` says which
    commands cannot run there and what to install.
    """
    missing = missing_modules(*modules)
    if not missing:
        return help_text
    extras = sorted({EXTRA_OF_MODULE.get(m.split(".")[0], m) for m in missing})
    return f"[not installed: pip install 'ser-edge[{','.join(extras)}]'] {help_text}"


def require(what: str, *modules: str) -> None:
    """Raise :class:`MissingExtra` (exit 1, names the extra) unless every module is installed."""
    missing = missing_modules(*modules)
    if missing:
        raise MissingExtra(missing[0], what)


def _class_names(exc: BaseException) -> set[str]:
    return {f"{c.__module__}.{c.__name__}" for c in type(exc).__mro__}


def _os_message(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    if exc.filename is not None:
        return f"{exc.filename}: {what[0].lower() + what[1:] if what else what}"
    return what


def describe(exc: BaseException) -> tuple[int, str]:
    """``(exit code, one-line message)`` for an exception that escaped a subcommand handler."""
    names = _class_names(exc)
    msg = " ".join(str(exc).split())  # one line, whatever the library put in it
    if isinstance(exc, CliError):
        return exc.code, msg
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED, "interrupted"
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return FAILURE, str(MissingExtra(exc.name))
    # the library's own error types (matched by name: importing them here would pull in their modules)
    if names & {"edge_runtime.interpreter.BackendUnavailableError", "firmware_bridge.serial_host.DeviceError",
                "firmware_bridge.cbuild.CBuildError", "model_build.convert.GraphCheckError"}:
        return FAILURE, msg
    if "serial.serialutil.SerialException" in names or "termios.error" in names:
        return FAILURE, f"serial port: {msg}"
    if isinstance(exc, ConnectionError):
        return FAILURE, msg
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
                        FileExistsError)):
        return BAD_INPUT, _os_message(exc)
    if isinstance(exc, OSError):
        return FAILURE, _os_message(exc)
    if isinstance(exc, ValueError):  # ModelFileError, AudioInputError, ExportError, ... all derive from it
        return BAD_INPUT, msg
    return FAILURE, f"internal error: {type(exc).__name__}: {msg} (run with --debug for the traceback)"


def run_handler(func: Callable[..., int | None], args, prog: str) -> int:
    """Call a subcommand handler; turn any exception into one stderr line and an exit code."""
    try:
        return int(func(args) or 0)
    except SystemExit as e:  # a handler that still calls sys.exit("message")
        if isinstance(e.code, str):
            print(f"{prog}: error: {' '.join(e.code.split())}", file=sys.stderr)
            return FAILURE
        return int(e.code or 0)
    except BrokenPipeError:  # the consumer of stdout went away (| head): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the exit-time flush does not fail again
        return 0
    except BaseException as e:  # noqa: BLE001 - this is the one place that reports them
        if debug_enabled():
            raise
        code, msg = describe(e)
        if code != INTERRUPTED:
            print(f"{prog}: error: {msg}", file=sys.stderr)
        return code
