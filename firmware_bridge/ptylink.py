"""A null-modem cable made of two kernel pseudo-terminals, with pacing and fault injection.

Test utility: ``PtyLink`` opens two pty pairs (``os.openpty``), sets both slaves raw, and runs a
forwarding thread that copies bytes master A → master B and master B → master A. The two slave
paths (``link.port_a``, ``link.port_b``, e.g. ``/dev/pts/7``) are real tty devices that
``serial.Serial(path)`` (or the device's termios transport) opens like a UART.

Model of the cable:

* **Pacing** (``baud``): each direction is a wire that carries 10 bits per byte (8N1), so bytes
  arrive no faster than ``baud / 10`` per second, delivered in ~1 ms slices.
* **Sender back-pressure**: the link holds at most ``tx_buffer`` bytes in flight per direction
  (like a UART driver's TX ring); beyond that it stops reading and the sender's ``write`` blocks.
* **Receiver overrun**: if the receiving tty cannot take more bytes, they are dropped and counted
  (``overrun="drop"``, a UART without flow control) or held until it can (``overrun="block"``,
  RTS/CTS flow control).
* **Faults** (per direction, deterministic for a given ``seed`` whatever the read chunking): one
  flipped bit in a byte with probability ``bit_error_rate`` (a byte error rate), dropped bytes,
  bursts of random garbage bytes, and a pulled cable (:meth:`unplug` / :meth:`plug` /
  :meth:`pulled`): everything sent meanwhile, including bytes in flight, is lost.

A **vanishing port** (:meth:`hangup` / :meth:`replug`, e.g. a USB-serial adapter unplugged and
plugged back): one side's pty pair is closed (whoever holds that tty sees end of file / EIO, as
with a real unplugged device) and later replaced by a new one. With ``stable_paths=True`` the
ports are symlinks (like udev's ``/dev/serial/by-id/...``) that disappear on hang-up and point to
the new pty on replug, so a program can reopen the same path.

All injections are counted in :attr:`counters`; with ``record_events=True`` the position of each
fault in the sender's byte stream is logged in :attr:`events` (used by tests to know which frames
were hit).
"""
from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import tempfile
import threading
import time
import tty
from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["Faults", "PtyLink"]


@dataclass(frozen=True)
class Faults:
    """Fault rates for one direction. Rates are per byte sent."""

    bit_error_rate: float = 0.0  # probability that a byte gets one bit flipped
    drop_rate: float = 0.0  # probability that a byte is lost
    garbage_rate: float = 0.0  # probability that a burst of random bytes is inserted after a byte
    garbage_max_len: int = 16  # burst length is uniform in 1..garbage_max_len

    @property
    def any(self) -> bool:
        return self.bit_error_rate > 0 or self.drop_rate > 0 or self.garbage_rate > 0


_COUNTER_NAMES = ("bytes_in", "bytes_out", "bits_flipped", "bytes_dropped", "garbage_bursts",
                  "garbage_bytes", "unplugged_dropped", "overrun_dropped")


class _Direction:
    def __init__(self, name: str, src: int, dst: int, faults: Faults, seed: int, index: int):
        self.name = name
        self.src = src
        self.dst = dst
        self.faults = faults
        self.rng = np.random.default_rng([seed, index, 1])
        self.garbage_rng = np.random.default_rng([seed, index, 2])
        self.queue: deque[tuple[float, bytes]] = deque()  # (deliver_at, bytes) on the wire
        self.queued = 0
        self.pending = bytearray()  # due, but the receiver's tty is full
        self.busy_until = 0.0
        self.stream_pos = 0  # bytes read from the sender so far (for event positions)
        self.counters = {k: 0 for k in _COUNTER_NAMES}
        self.events: list[tuple[int, str]] = []


class PtyLink:
    """Two linked pseudo-terminals. Use as a context manager::

        with PtyLink(baud=115200, faults=Faults(bit_error_rate=0.01), seed=1) as link:
            host = serial.Serial(link.port_a); dev = serial.Serial(link.port_b)
    """

    def __init__(self, baud: int | None = None, faults: Faults | None = None,
                 faults_b_to_a: Faults | None = None, seed: int = 0, overrun: str = "drop",
                 tx_buffer: int = 4096, record_events: bool = False, stable_paths: bool = False):
        if overrun not in ("drop", "block"):
            raise ValueError("overrun must be 'drop' or 'block'")
        self.baud = baud
        self.overrun = overrun
        self.tx_buffer = tx_buffer
        self.record_events = record_events
        self.seed = seed
        fa = faults or Faults()
        fb = faults_b_to_a if faults_b_to_a is not None else fa
        self._ma, self._sa = self._new_pty()
        self._mb, self._sb = self._new_pty()
        self._retired: list[int] = []  # fds of hung-up ports, closed by the forwarding thread
        self._link_dir = tempfile.mkdtemp(prefix="ptylink_") if stable_paths else None
        if self._link_dir:
            self.port_a = os.path.join(self._link_dir, "port_a")
            self.port_b = os.path.join(self._link_dir, "port_b")
            self._point(self.port_a, self._sa)
            self._point(self.port_b, self._sb)
        else:
            self.port_a = os.ttyname(self._sa)
            self.port_b = os.ttyname(self._sb)
        self._dirs = (_Direction("a_to_b", self._ma, self._mb, fa, seed, 0),
                      _Direction("b_to_a", self._mb, self._ma, fb, seed, 1))
        self._lock = threading.Lock()
        self._unplugged = False
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "PtyLink":
        """Start the forwarding thread (done by ``__enter__``)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ptylink", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop forwarding and close every descriptor. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for fd in (self._ma, self._sa, self._mb, self._sb, self._wake_r, self._wake_w, *self._retired):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self._link_dir:
            shutil.rmtree(self._link_dir, ignore_errors=True)

    @staticmethod
    def _new_pty() -> tuple[int, int]:
        m, s = os.openpty()
        tty.setraw(s)  # no echo, no CR/LF translation, no signals: bytes pass untouched
        os.set_blocking(m, False)
        return m, s

    @staticmethod
    def _point(link: str, slave: int) -> None:
        tmp = link + ".new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, link)  # atomic: a reader sees the old or the new pty, never half

    def hangup(self, side: str = "b") -> None:
        """That side's port vanishes (USB unplugged): its pty is closed, so the program holding it
        reads end of file / gets EIO; with ``stable_paths`` its symlink is removed. Bytes in flight
        both ways are lost. :meth:`replug` brings a new port."""
        if side not in ("a", "b"):
            raise ValueError("side must be 'a' or 'b'")
        with self._lock:
            m, sl = (self._ma, self._sa) if side == "a" else (self._mb, self._sb)
            if m < 0:
                return
            self._retired += [m, sl]
            if side == "a":
                self._ma = self._sa = -1
            else:
                self._mb = self._sb = -1
            self._rewire()
            if self._link_dir:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.port_a if side == "a" else self.port_b)
        self._wake()

    def replug(self, side: str = "b") -> str:
        """A new port for that side after :meth:`hangup`; returns its path (the same path with
        ``stable_paths``, else the new pty's name, also stored in ``port_a``/``port_b``)."""
        m, sl = self._new_pty()
        with self._lock:
            if side == "a":
                self._ma, self._sa = m, sl
            else:
                self._mb, self._sb = m, sl
            self._rewire()
            if self._link_dir:
                self._point(self.port_a if side == "a" else self.port_b, sl)
            elif side == "a":
                self.port_a = os.ttyname(sl)
            else:
                self.port_b = os.ttyname(sl)
        self._wake()
        return self.port_a if side == "a" else self.port_b

    def attach(self, path: str, side: str = "b") -> None:
        """Connect that side to an existing tty instead of its own pty: e.g. QEMU's ``-serial pty``,
        so the firmware's UART sits behind this cable (pacing, faults) and a host talks to it on the
        other side's port. That side's port path becomes ``path``."""
        if side not in ("a", "b"):
            raise ValueError("side must be 'a' or 'b'")
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            tty.setraw(fd)
        except Exception:
            os.close(fd)
            raise
        with self._lock:
            old = (self._ma, self._sa) if side == "a" else (self._mb, self._sb)
            self._retired += [x for x in old if x >= 0]
            if side == "a":
                self._ma, self._sa, self.port_a = fd, -1, path
            else:
                self._mb, self._sb, self.port_b = fd, -1, path
            self._rewire()
        self._wake()

    def _rewire(self) -> None:
        """Point both directions at the current masters (called with the lock held)."""
        for d, (src, dst) in zip(self._dirs, ((self._ma, self._mb), (self._mb, self._ma))):
            if (d.src, d.dst) != (src, dst):
                d.counters["unplugged_dropped"] += d.queued + len(d.pending)
                d.queue.clear()
                d.queued = 0
                d.pending.clear()
                d.busy_until = 0.0
            d.src, d.dst = src, dst

    def __enter__(self) -> "PtyLink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- control ---------------------------------------------------------------------------
    def set_faults(self, faults: Faults, direction: str = "both") -> None:
        """Change fault rates at run time (``direction``: 'a_to_b', 'b_to_a' or 'both')."""
        with self._lock:
            for d in self._dirs:
                if direction in ("both", d.name):
                    d.faults = faults

    def unplug(self) -> None:
        """Pull the cable: bytes in flight and everything sent until :meth:`plug` are lost."""
        with self._lock:
            self._unplugged = True
            for d in self._dirs:
                d.counters["unplugged_dropped"] += d.queued + len(d.pending)
                d.queue.clear()
                d.queued = 0
                d.pending.clear()
        self._wake()

    def plug(self) -> None:
        """Plug the cable back in."""
        with self._lock:
            self._unplugged = False
            for d in self._dirs:
                d.busy_until = 0.0
        self._wake()

    @contextlib.contextmanager
    def pulled(self, seconds: float | None = None):
        """Context manager: cable out inside the block (and for at least ``seconds``)."""
        t0 = time.monotonic()
        self.unplug()
        try:
            yield self
        finally:
            if seconds is not None:
                time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
            self.plug()

    def pull_for(self, seconds: float) -> threading.Timer:
        """Unplug now and plug back after ``seconds`` without blocking the caller."""
        self.unplug()
        t = threading.Timer(seconds, self.plug)
        t.daemon = True
        t.start()
        return t

    @property
    def unplugged(self) -> bool:
        return self._unplugged

    @property
    def counters(self) -> dict:
        """Per-direction counters: ``{"a_to_b": {...}, "b_to_a": {...}}`` (a snapshot)."""
        with self._lock:
            return {d.name: dict(d.counters) for d in self._dirs}

    @property
    def events(self) -> dict:
        """Per-direction ``[(stream_position, kind), ...]`` if ``record_events`` was set."""
        with self._lock:
            return {d.name: list(d.events) for d in self._dirs}

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until nothing is in flight in either direction; True if it got idle in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                busy = any(d.queued or d.pending for d in self._dirs)
            if not busy:
                return True
            time.sleep(0.002)
        return False

    def raise_if_failed(self) -> None:
        """Re-raise an exception that killed the forwarding thread, if any."""
        if self._error is not None:
            raise RuntimeError("ptylink forwarding thread failed") from self._error

    # -- forwarding thread -----------------------------------------------------------------
    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # keep it for raise_if_failed(); the test will notice
            self._error = exc

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            rlist, wlist = [self._wake_r], []
            timeout = 0.2
            with self._lock:
                retired, self._retired = self._retired, []
                for fd in retired:  # hung-up ports: no select() of ours is using them now
                    with contextlib.suppress(OSError):
                        os.close(fd)
                for d in self._dirs:
                    self._deliver_due(d, now)
                    if d.pending and d.dst >= 0:
                        wlist.append(d.dst)
                    if d.queue:
                        timeout = min(timeout, max(0.0, d.queue[0][0] - now))
                    if d.queued + len(d.pending) < self.tx_buffer and d.src >= 0:
                        rlist.append(d.src)
            try:
                r, w, _ = select.select(rlist, wlist, [], timeout)
            except (OSError, ValueError):
                if self._stop.is_set():
                    return
                raise
            if self._wake_r in r:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)
            now = time.monotonic()
            with self._lock:
                for d in self._dirs:
                    if d.src >= 0 and d.src in r:
                        self._read_from(d, now)
                    self._deliver_due(d, time.monotonic())

    def _read_from(self, d: _Direction, now: float) -> None:
        room = max(1, self.tx_buffer - d.queued - len(d.pending))
        try:
            data = os.read(d.src, room)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EIO:  # no slave open right now: nothing to read
                return
            raise
        if not data:
            return
        d.counters["bytes_in"] += len(data)
        if self._unplugged:
            d.counters["unplugged_dropped"] += len(data)
            d.stream_pos += len(data)
            return
        data = self._apply_faults(d, data)
        if not data:
            return
        if self.baud:
            per_byte = 10.0 / self.baud
            slice_len = max(1, self.baud // 10 // 1000)  # ~1 ms of wire time per slice
            t = max(now, d.busy_until)
            for i in range(0, len(data), slice_len):
                piece = data[i:i + slice_len]
                t += len(piece) * per_byte
                d.queue.append((t, piece))
            d.busy_until = t
        else:
            d.queue.append((now, data))
        d.queued += len(data)

    def _apply_faults(self, d: _Direction, data: bytes) -> bytes:
        f = d.faults
        base = d.stream_pos
        d.stream_pos += len(data)
        if not f.any:
            return data
        n = len(data)
        u = d.rng.random((n, 4))  # fixed draws per byte: same faults whatever the chunking
        drop = u[:, 0] < f.drop_rate
        flip = (u[:, 1] < f.bit_error_rate) & ~drop
        garb = u[:, 2] < f.garbage_rate
        arr = np.frombuffer(data, dtype=np.uint8).copy()
        if flip.any():
            bits = (u[flip, 3] * 8).astype(np.uint8)
            arr[flip] ^= np.left_shift(np.uint8(1), bits).astype(np.uint8)
        c = d.counters
        c["bits_flipped"] += int(flip.sum())
        c["bytes_dropped"] += int(drop.sum())
        if self.record_events:
            for i in np.flatnonzero(flip):
                d.events.append((base + int(i), "flip"))
            for i in np.flatnonzero(drop):
                d.events.append((base + int(i), "drop"))
            for i in np.flatnonzero(garb):
                d.events.append((base + int(i), "garbage"))
        if not garb.any():
            return arr[~drop].tobytes()
        out = bytearray()
        for i in range(n):
            if not drop[i]:
                out.append(int(arr[i]))
            if garb[i]:
                k = int(d.garbage_rng.integers(1, f.garbage_max_len + 1))
                out += d.garbage_rng.integers(0, 256, k, dtype=np.uint8).tobytes()
                c["garbage_bursts"] += 1
                c["garbage_bytes"] += k
        return bytes(out)

    def _deliver_due(self, d: _Direction, now: float) -> None:
        while d.queue and d.queue[0][0] <= now:
            _, piece = d.queue.popleft()
            d.queued -= len(piece)
            d.pending += piece
        if not d.pending:
            return
        if d.dst < 0:  # the receiving port is unplugged
            d.counters["unplugged_dropped"] += len(d.pending)
            d.pending.clear()
            return
        try:
            n = os.write(d.dst, d.pending)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EAGAIN):
                raise
            n = 0
        d.counters["bytes_out"] += n
        del d.pending[:n]
        if d.pending and self.overrun == "drop":
            # the receiving tty is full: a UART without flow control overruns and loses bytes
            d.counters["overrun_dropped"] += len(d.pending)
            d.pending.clear()


@dataclass(frozen=True)
class LinkDecodeResult:
    """What :func:`decode_through_link` saw: decoded records in arrival order, the injected-fault
    events ``(byte_position, kind)`` A→B, the decoder's statistics and the link's A→B counters."""

    received: list
    events: list
    stats: object
    counters: dict


def decode_through_link(wire: bytes, faults: Faults, seed: int = 0, read_size: int = 4096,
                        idle_timeout: float = 30.0) -> LinkDecodeResult:
    """Send ``wire`` from port A to port B of a faulty :class:`PtyLink` (pyserial on both ends) and
    decode what arrives with the protocol's ``FrameDecoder``, so a caller can compare the frames the
    link damaged with the frames the decoder accepted."""
    import serial  # pyserial: host side only

    from edge_runtime.protocol import FrameDecoder

    with PtyLink(faults=faults, seed=seed, record_events=True, overrun="block") as link, \
            serial.Serial(link.port_a, timeout=0.05) as a, serial.Serial(link.port_b, timeout=0.05) as b:
        dec = FrameDecoder()
        got: list = []
        done = threading.Event()

        def reader() -> None:
            while not done.is_set():
                got.extend(dec.feed(b.read(read_size)))

        th = threading.Thread(target=reader)
        th.start()
        a.write(wire)
        a.flush()
        idle = link.wait_idle(idle_timeout)
        time.sleep(0.3)  # let the reader drain the last bytes
        done.set()
        th.join()
        if not idle:
            raise TimeoutError(f"link still busy after {idle_timeout} s")
        return LinkDecodeResult(got, list(link.events["a_to_b"]), dec.stats, dict(link.counters["a_to_b"]))
