"""Run the firmware image in QEMU (``-M mps2-an386``, a Cortex-M4F board) behind a host pty.

    with QemuDevice(elf) as dev:          # boots paused, opens the pty, then lets the CPU run
        port = dev.port                    # /dev/pts/N: talk to it with pyserial / DeviceClient
        ...
    dev.returncode                         # QEMU's exit status (semihosting SYS_EXIT code)

QEMU is started with ``-serial pty`` (UART0 appears as a host pseudo-terminal), ``-icount shift=0``
(one guest instruction = 1 ns of virtual time, so the firmware's SysTick counts instructions:
40 per 25 MHz tick, deterministically) and semihosting (test builds end the emulation with an exit
code on a fault). It starts paused (``-S``): the harness opens the pty first and only then
continues the CPU, so the boot INFO frame is not lost to a pty nobody has opened yet.

The emulated CMSDK UART moves ~18 KB/s whatever the baud rate: AUDIO sessions run slower than
real time (32 KB/s of samples); use FEATURES or short clips, and liveness timeouts that allow for it.
"""
from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

__all__ = ["QemuDevice", "QemuError", "RawHost", "qemu_binary", "firmware_result", "MACHINE"]

MACHINE = "mps2-an386"
_PTY_RE = re.compile(rb"char device redirected to (/dev/pts/\d+)")


def firmware_result(msg, min_confidence: float = 0.0, output_scale: float = 1.0, output_zero_point: int = 0):
    """The RESULT the firmware sends where the Python device sends ``msg`` (for comparisons).

    They are identical but for one documented difference (docs/window_policy.md): a *window* whose
    two top int8 scores tie exactly is ``uncertain`` on the Python device (the window policy's tie
    rule, :func:`edge_runtime.window_policy.window_label`), while the firmware still reports the
    lower index without the UNCERTAIN flag (``label_index`` is that index on both). A tied window
    below ``min_confidence`` is UNCERTAIN on both.
    """
    import dataclasses

    import numpy as np

    from edge_runtime.protocol import ResultFlags
    from edge_runtime.window_policy import score_log_probabilities

    s = np.sort(np.asarray(msg.scores, np.int64))[::-1]
    if msg.flags & ResultFlags.UTTERANCE or not msg.flags & ResultFlags.UNCERTAIN or s.size < 2 or s[0] != s[1]:
        return msg
    if min_confidence > 0:
        top = float(np.exp(score_log_probabilities(np.asarray(msg.scores), output_scale, output_zero_point)).max())
        if top < min_confidence:
            return msg
    return dataclasses.replace(msg, flags=int(msg.flags & ~ResultFlags.UNCERTAIN))


class QemuError(RuntimeError):
    """QEMU is missing, failed to start, or died."""


def qemu_binary() -> str | None:
    """Path of qemu-system-arm, or None."""
    return shutil.which("qemu-system-arm")


class QemuDevice:
    """One QEMU process running ``elf``; ``port`` is the host side of its UART0.

    ``icount``: deterministic instruction-counted virtual time (default). ``extra_args``: more
    QEMU arguments. ``boot_timeout``: seconds to wait for QEMU to announce its pty.
    ``start_paused``: leave the CPU stopped until :meth:`resume`.
    """

    def __init__(self, elf: str | os.PathLike, *, icount: bool = True, extra_args: tuple[str, ...] = (),
                 boot_timeout: float = 20.0, start_paused: bool = False) -> None:
        self.elf = Path(elf)
        self.icount = icount
        self.extra_args = tuple(extra_args)
        self.boot_timeout = boot_timeout
        self.start_paused = start_paused
        self.proc: subprocess.Popen | None = None
        self.port: str | None = None
        self._hold_fd: int | None = None
        self.output = b""

    def command(self) -> list[str]:
        qemu = qemu_binary()
        if qemu is None:
            raise QemuError("qemu-system-arm not found (Debian/Ubuntu: apt-get install qemu-system-arm)")
        cmd = [qemu, "-M", MACHINE, "-display", "none", "-monitor", "stdio", "-serial", "pty",
               "-kernel", str(self.elf), "-semihosting-config", "enable=on,target=native", "-S"]
        if self.icount:
            cmd += ["-icount", "shift=0"]
        return cmd + list(self.extra_args)

    def start(self) -> "QemuDevice":
        if not self.elf.is_file():
            raise QemuError(f"{self.elf}: no such firmware image")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        os.set_blocking(self.proc.stdout.fileno(), False)
        t_end = time.monotonic() + self.boot_timeout
        while self.port is None:
            m = _PTY_RE.search(self.output)
            if m:
                self.port = m.group(1).decode()
                break
            if self.proc.poll() is not None or time.monotonic() > t_end:
                self._read_output(0.1)
                self.stop()
                raise QemuError(f"QEMU did not announce a pty: {self.output.decode(errors='replace')[-500:]}")
            self._read_output(0.1)
        # Hold the pty open from the start: QEMU drops UART output while no one has the pty open,
        # and notices a new reader only on a timer. Then let the CPU run.
        self._hold_fd = os.open(self.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        import termios
        import tty

        tty.setraw(self._hold_fd)
        attrs = termios.tcgetattr(self._hold_fd)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(self._hold_fd, termios.TCSANOW, attrs)
        if not self.start_paused:
            self.resume()
        return self

    def resume(self) -> None:
        """Let the CPU run (after ``start_paused=True``: e.g. once the host has opened the port,
        so that opening it, which flushes its input, does not discard the boot INFO)."""
        self.monitor("cont")

    def _read_output(self, timeout: float) -> None:
        if self.proc is None or self.proc.stdout is None:
            return
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if r:
            try:
                chunk = self.proc.stdout.read()
            except (BlockingIOError, ValueError):
                chunk = None
            if chunk:
                self.output += chunk

    def monitor(self, command: str) -> None:
        """Send one line to the QEMU monitor (e.g. ``cont``, ``system_reset``)."""
        if self.proc is None or self.proc.stdin is None or self.proc.poll() is not None:
            raise QemuError("QEMU is not running")
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait(self, timeout: float) -> int:
        """Wait for QEMU to exit by itself (semihosting SYS_EXIT); returns its exit code."""
        if self.proc is None:
            raise QemuError("not started")
        try:
            rc = self.proc.wait(timeout)
        finally:
            self._read_output(0.0)
        return rc

    def stop(self) -> None:
        """Terminate QEMU (if running) and close the pty."""
        if self._hold_fd is not None:
            os.close(self._hold_fd)
            self._hold_fd = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            self._read_output(0.0)
            for f in (self.proc.stdin, self.proc.stdout):
                if f is not None:
                    try:
                        f.close()
                    except OSError:
                        pass

    def __enter__(self) -> "QemuDevice":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class RawHost:
    """A pyserial connection that sends messages and collects decoded replies, nothing else (no
    handshake, retries or liveness): the harness's own view of the device. Writes block as long as
    the emulated UART needs (``DeviceClient`` gives up on a write after 2 s, which a burst of AUDIO
    to QEMU's ~18 KB/s UART can exceed)."""

    def __init__(self, port: str, baud: int = 921600):
        import serial

        from edge_runtime.protocol import FrameDecoder, Sequencer

        self.port = serial.Serial(port, baud, timeout=0.02)  # no write timeout
        self.tx = Sequencer()
        self.dec = FrameDecoder()

    def send(self, msg) -> int:
        seq, frame = self.tx.encode(msg)
        self.port.write(frame)
        return seq

    def recv(self, n: int = 1, timeout: float = 3.0, types=None) -> list:
        """Up to ``n`` messages (of ``types``, if given) within ``timeout`` seconds."""
        out = []
        t_end = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < t_end:
            for r in self.dec.feed(self.port.read(4096)):
                if types is None or r.msg.TYPE in types:
                    out.append(r.msg)
        return out

    def close(self) -> None:
        self.port.close()

    def __enter__(self) -> "RawHost":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
