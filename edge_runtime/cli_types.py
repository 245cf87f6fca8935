"""argparse ``type=`` functions shared by every ``ser-edge`` subcommand.

Options are checked when the command line is parsed, so a bad value fails at once with argparse's
one line (``argument --chunk-ms: must be > 0, got 0``) and exit code 2, before any model, port or
heavy library is touched. Each function raises :class:`argparse.ArgumentTypeError` with what was
wrong; argparse adds the option name.
"""
from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass
from pathlib import Path


def _number(text: str, kind):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer > 0."""
    v = _number(text, int)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    v = _number(text, int)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def positive_float(text: str) -> float:
    """A finite number > 0."""
    v = _number(text, float)
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    v = _number(text, float)
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def fraction(text: str) -> float:
    """A number in [0, 1] (a probability or a share)."""
    v = _number(text, float)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return v


def dbfs(text: str) -> float:
    """A level in dBFS: a number <= 0."""
    v = _number(text, float)
    if not v <= 0:
        raise argparse.ArgumentTypeError(f"is a level in dBFS and must be <= 0, got {text}")
    return v


def baud_rate(text: str) -> int:
    """A serial baud rate (a positive integer)."""
    return positive_int(text)


def existing_file(text: str) -> str:
    """A path to an existing regular file (not a folder)."""
    p = Path(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, expected a file")
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not os.access(p, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: not readable (permission denied)")
    return text


def model_spec(text: str):
    """A model for ``--model``: a shipped name (``small``/``mcu``, ``pi``), ``auto`` (this device's
    default, :mod:`edge_runtime.model_select`) or a path to a .tflite; returns a
    :class:`~edge_runtime.model_select.ModelChoice` (file + why it was chosen)."""
    from .model_select import ModelSelectionError, resolve_model

    try:
        return resolve_model(text)
    except ModelSelectionError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def model_file(text: str) -> str:
    """A model file for ``--model`` of a command that names another device's model (``stream``,
    ``validate``): a shipped name (``small``/``mcu``, ``pi``) or a path; returns the file's path."""
    if text == "auto":  # this machine's default says nothing about the device at the other end
        raise argparse.ArgumentTypeError("auto: name the device's model (small, pi) or give its .tflite")
    return str(model_spec(text).path)


def existing_dir(text: str) -> str:
    """A path to an existing folder."""
    p = Path(text)
    if p.is_file():
        raise argparse.ArgumentTypeError(f"{text}: is a file, expected a folder")
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    return text


def output_dir(text: str) -> str:
    """A folder to write into: it exists and is writable, or can be created under a writable parent."""
    p = Path(text)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: exists and is not a folder")
    probe = p
    while not probe.exists():  # the nearest existing ancestor must let us create what is missing
        probe = probe.parent
    if not probe.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: cannot be created ({probe} is a file)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: not writable ({probe}: permission denied)")
    return text


def output_file(text: str) -> str:
    """A file to write: not a folder, and its folder exists (or can be created) and is writable."""
    p = Path(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, expected a file name")
    output_dir(str(p.parent) if str(p.parent) else ".")
    if p.exists() and not os.access(p, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text}: not writable (permission denied)")
    return text


def serial_port(text: str) -> str:
    """A serial device path that exists and is a character device (a tty, a pty, a USB serial)."""
    p = Path(text)
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such serial port")
    try:
        import stat

        if not stat.S_ISCHR(p.stat().st_mode):
            raise argparse.ArgumentTypeError(f"{text}: not a serial port (not a character device)")
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{text}: cannot inspect ({e.strerror})") from None
    return text


@dataclass(frozen=True)
class UdpTarget:
    """Where ``--udp HOST:PORT`` sends each JSON line: resolved once, at parse time."""

    host: str
    port: int
    family: int
    sockaddr: tuple

    def __str__(self) -> str:
        return f"udp://{'[' + self.host + ']' if ':' in self.host else self.host}:{self.port}"

    def sender(self):
        """A callable ``send(bytes)`` on one UDP socket (fire and forget: a lost datagram is not an error)."""
        sock = socket.socket(self.family, socket.SOCK_DGRAM)

        def send(data: bytes) -> None:
            try:
                sock.sendto(data, self.sockaddr)
            except OSError:  # nobody listening (ICMP port unreachable) must not stop the stream
                pass

        send.close = sock.close  # type: ignore[attr-defined]
        return send


def udp_address(text: str) -> UdpTarget:
    """``HOST:PORT`` (``[v6addr]:PORT`` for IPv6) with a port in 1-65535 and a host that resolves."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:5005), got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"port must be an integer 1-65535, got {port!r} in {text!r}")
    try:
        info = socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as e:
        reason = e.strerror if isinstance(e, socket.gaierror) and e.strerror else str(e)
        raise argparse.ArgumentTypeError(f"cannot resolve host {host!r} ({reason})") from None
    family, _, _, _, sockaddr = info[0]
    return UdpTarget(host, int(port), family, sockaddr)
