"""Drain a serial port in its own thread, into a bounded buffer, so input is never lost to a busy loop.

A UART (or a pty) holds only a few kilobytes of received bytes: a Linux pty ~12 KB, 0.13 s of a
921600 baud line; a Pi's PL011 driver about as much. A device loop that reads, then spends that long
classifying (a burst of audio from a host catching up, a model invoke on a loaded CPU), loses the
bytes that arrive meanwhile (the kernel drops them: lost frames, RESEND traffic). :class:`PortReader`
moves the bytes from the port into memory as soon as they arrive, in a thread that does nothing else,
so the port's own buffer never fills; the device loop takes them with :meth:`PortReader.get` when it
is ready.

Memory is bounded (``max_bytes``, default 256 KiB: 2.8 s of a 921600 baud line arriving while the
loop is busy): when that much is waiting, the thread stops reading (counted ``full``) until the loop
takes it, so the port's own flow control applies again -- a USB gadget port or RTS/CTS holds the
host back and nothing is lost; a bare UART overruns as it would have without the thread, and the
protocol's sequence numbers and RESEND recover the frames.

Only the standard library: ``transport`` is anything with ``read(n)`` returning ``b""`` on timeout
(the device's :class:`~edge_runtime.serial_device.TtyTransport`, a pyserial ``Serial``).
"""
from __future__ import annotations

import threading
from typing import Any

__all__ = ["PortReader"]


class PortReader:
    """A thread reading ``transport`` into a preallocated ring of ``max_bytes``.

    :meth:`get` returns everything buffered (waiting up to ``timeout`` for the first byte); an
    exception raised by the transport (a lost port) is re-raised by :meth:`get` once the bytes
    read before it have been taken. :meth:`stop` ends the thread (within one read timeout).

    With a transport that has ``readinto(buffer)`` (:class:`~edge_runtime.serial_device.TtyTransport`)
    the thread reads straight into the ring and allocates nothing: a first version that allocated
    a ``bytes`` per read (freed later by the device loop, in another thread) and handed the loop
    everything at once grew serve's anonymous memory by 1.6 MB over two hours of accelerated soak.
    Other transports are read with ``read(n)``.
    """

    def __init__(self, transport: Any, *, read_size: int = 4096, max_bytes: int = 256 * 1024,
                 name: str = "serial-rx"):
        if max_bytes < read_size:
            raise ValueError(f"max_bytes ({max_bytes}) must be at least read_size ({read_size})")
        self.transport = transport
        self.read_size = read_size
        self.max_bytes = max_bytes
        self._ring = bytearray(max_bytes)  # bytes [_head, _head + _size) modulo max_bytes
        self._view = memoryview(self._ring)
        self._head = 0
        self._size = 0
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._readinto = getattr(transport, "readinto", None)
        self.counters = {"bytes_in": 0, "full": 0, "max_buffered": 0}
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "PortReader":
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop reading (the thread finishes its current read first)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def buffered(self) -> int:
        """Bytes read from the port and not yet taken."""
        return self._size

    def get(self, timeout: float, limit: int | None = None) -> bytes:
        """The bytes buffered (at most ``limit``, oldest first), waiting up to ``timeout`` s for
        some; ``b""`` if none came. A limit keeps the caller's work per call (and the objects it
        decodes at once) the same as reading the port directly would."""
        with self._cv:
            if not self._size and self._error is None:
                self._cv.wait(timeout)
            if self._size:
                h, n, m = self._head, self._size, self.max_bytes
                if limit is not None:
                    n = min(n, max(1, int(limit)))
                first = min(n, m - h)
                data = bytes(self._view[h:h + first])
                if first < n:  # wrapped around the end of the ring
                    data += self._view[:n - first]
                self._head = (h + n) % m
                self._size -= n
                self._cv.notify_all()  # room again for a reader waiting on a full ring
                return data
            if self._error is not None:
                raise self._error
            return b""

    def _run(self) -> None:
        m = self.max_bytes
        while not self._stop.is_set():
            with self._cv:
                if self._size >= m:  # the loop is far behind: stop reading (see the module docstring)
                    self.counters["full"] += 1
                    while self._size >= m and not self._stop.is_set():
                        self._cv.wait(0.05)
                    continue
                # the free span after the data, up to the end of the ring (only this thread fills it)
                tail = (self._head + self._size) % m
                span = min(self.read_size, m - self._size, m - tail)
            try:
                if self._readinto is not None:
                    n = self._readinto(self._view[tail:tail + span])
                else:
                    data = self.transport.read(span)
                    n = len(data)
                    self._view[tail:tail + n] = data
            except BaseException as exc:  # noqa: BLE001 - handed to the device loop by get()
                with self._cv:
                    self._error = exc
                    self._cv.notify_all()
                return
            if not n:
                continue
            with self._cv:
                self._size += n
                self.counters["bytes_in"] += n
                self.counters["max_buffered"] = max(self.counters["max_buffered"], self._size)
                self._cv.notify_all()
