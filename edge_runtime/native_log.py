"""Keep native libraries' start-up chatter off the CLI's stderr.

TensorFlow prints ``Could not find cuda drivers`` / ``oneDNN custom operations are on`` through
absl before its log level is read (``TF_CPP_MIN_LOG_LEVEL`` does not stop it), and LiteRT prints
``INFO: Created TensorFlow Lite XNNPACK delegate`` when it allocates tensors. Neither is
controllable from Python, so the few calls that trigger them run with file descriptor 2 pointed
at /dev/null. Real failures still surface: the libraries raise Python exceptions with the reason.
``SER_EDGE_DEBUG=1`` (or ``--debug``) leaves stderr alone.
"""
from __future__ import annotations

import contextlib
import os
import sys


def debug_enabled() -> bool:
    """True when ``SER_EDGE_DEBUG`` asks for everything (tracebacks, native logs)."""
    return os.environ.get("SER_EDGE_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def quiet_native_stderr():
    """Send C-level stderr (fd 2) to /dev/null for the block, unless debugging."""
    if debug_enabled():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreter): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_tensorflow_env() -> None:
    """Environment for a quiet TensorFlow in this process and every child it starts."""
    if debug_enabled():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (and tf_keras if installed) once, with its load-time chatter silenced."""
    quiet_tensorflow_env()
    if "tensorflow" in sys.modules:
        return
    with quiet_native_stderr():
        import tensorflow  # noqa: F401
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
