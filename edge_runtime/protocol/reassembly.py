"""Put a session's AUDIO/FEATURES chunks back in stream order, ask for what was lost, give up in time.

:class:`StreamReassembler` is the device side of selective retransmission (docs/protocol.md §6,
revision 2). It is pure bookkeeping -- no I/O, the caller passes the clock -- so the Python device
and a firmware port can share the same rules, and tests can drive it deterministically:

* a chunk at the expected offset is released at once (``("data", items)``), followed by any
  buffered chunks it made contiguous;
* a chunk ahead of the expected offset is buffered; the missing range before it is a *hole*, and
  :meth:`poll` returns it in the ranges to request (RESEND), again every ``retry_s`` while it is
  still missing;
* a hole still missing ``hold_s`` after it was seen, or any hole while more than ``max_buffered``
  items wait behind holes, is given up: released as ``("fill", n)`` (the device zero-fills it and
  flags the windows it touches GAP) so that the stream always moves on with bounded memory;
* a chunk more than ``max_gap`` items beyond anything seen so far resets the stream there
  (``("reset", position)``);
  a chunk entirely behind is stale (counted) and a partly old one is trimmed;
* an empty chunk (SYNC) only says where the stream has got to, so a lost *last* chunk is noticed.

With ``resend=False`` (a revision-1 host) holes are filled as soon as they are seen, as before.
Positions are unwrapped 64-bit item counts from the session's start; offsets on the wire are the
same modulo 2**32.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import numpy as np

WRAP = 1 << 32


@dataclass
class _Hole:
    start: int
    end: int
    seen: float  # when this loss was first noticed (kept across partial fills)
    next_request: float


class StreamReassembler:
    """Reorder buffer + loss detector for one session's stream of items (samples or frames)."""

    def __init__(self, start_offset: int = 0, *, resend: bool = True, hold_s: float = 1.5,
                 retry_s: float = 0.12, max_buffered: int = 64000, max_gap: int = 160000,
                 max_ranges: int = 8):
        self.resend = resend
        self.hold_s = hold_s
        self.retry_s = retry_s
        self.max_buffered = max_buffered
        self.max_gap = max_gap
        self.max_ranges = max_ranges
        self.start = start_offset & (WRAP - 1)
        self.next = 0  # position (items since start) of the next item to release
        self.known_end = 0  # furthest position any chunk or SYNC has announced
        self._pending: dict[int, Any] = {}  # position -> items buffered behind a hole
        self._starts: list[int] = []  # the positions of _pending, sorted
        self._buffered = 0
        self._holes: list[_Hole] = []
        self._now = 0.0  # the latest clock reading passed in (new holes are "seen" then)
        self.counters = {"stale": 0, "filled_items": 0, "fills": 0, "resend_requests": 0,
                         "resend_ranges": 0, "recovered_items": 0, "resets": 0}

    # ------------------------------------------------------------------ positions
    def position(self, offset: int) -> int:
        """Unwrapped position of wire ``offset`` (the one nearest the expected position)."""
        d = (offset - self.start - self.next) % WRAP
        if d >= WRAP // 2:
            d -= WRAP
        return self.next + d

    def offset_of(self, position: int) -> int:
        return (self.start + position) % WRAP

    @property
    def buffered(self) -> int:
        """Items waiting behind holes."""
        return self._buffered

    def holes(self) -> list[tuple[int, int]]:
        """Missing ``[start, end)`` positions between the release point and ``known_end``."""
        self._update_holes(self._now)
        return [(h.start, h.end) for h in self._holes]

    # ------------------------------------------------------------------ input
    def push(self, offset: int, items, now: float) -> list[tuple]:
        """Add one chunk (``items``: array of samples or frames, possibly empty = SYNC)."""
        n = len(items)
        pos = self.position(offset)
        out: list[tuple] = []
        self._now = max(self._now, now)
        if pos + n <= self.next and n:
            self.counters["stale"] += 1
            return out
        if pos < self.next:
            items, pos = items[self.next - pos:], self.next
            n = len(items)
        if pos - self.known_end > self.max_gap:  # a jump far past anything seen (not a backlog)
            out.append(("reset", pos))
            self.counters["resets"] += 1
            self._pending.clear()
            self._starts.clear()
            self._buffered = 0
            self._holes.clear()
            self.next = self.known_end = pos
        if n and pos < self.known_end and pos not in self._pending:
            self.counters["recovered_items"] += n  # it fills input that was missing
        self.known_end = max(self.known_end, pos + n)
        if n:
            if pos == self.next:
                out.append(("data", items))
                self.next += n
            else:
                old = self._pending.get(pos)
                if old is None:
                    bisect.insort(self._starts, pos)
                if old is None or len(old) < n:
                    self._buffered += n - (0 if old is None else len(old))
                    self._pending[pos] = items
            out += self._drain()
        if not self.resend:
            out += self._give_up(all_holes=True)
        if self._buffered > self.max_buffered:
            self._update_holes(now)
            while self._buffered > self.max_buffered and self._holes:
                out += self._give_up()
                self._update_holes(now)
        return out

    def poll(self, now: float) -> tuple[list[tuple], list[tuple[int, int]]]:
        """Give up holes older than ``hold_s``; return ``(pieces, ranges to request)``, the ranges
        as wire ``(offset, count)`` pairs, at most ``max_ranges``, oldest first."""
        out: list[tuple] = []
        self._now = max(self._now, now)
        self._update_holes(now)
        while self._holes and now - self._holes[0].seen > self.hold_s:
            out += self._give_up()
            self._update_holes(now)
        ranges = []
        if self.resend:
            for h in self._holes:
                if len(ranges) == self.max_ranges:
                    break
                if h.next_request <= now:
                    ranges.append((self.offset_of(h.start), h.end - h.start))
                    h.next_request = now + self.retry_s
        if ranges:
            self.counters["resend_requests"] += 1
            self.counters["resend_ranges"] += len(ranges)
        return out, ranges

    def flush(self) -> list[tuple]:
        """Give up every hole now (end of session): release everything buffered."""
        out: list[tuple] = []
        self._update_holes(self._now)
        while self._holes:
            out += self._give_up()
            self._update_holes(self._now)
        return out

    # ------------------------------------------------------------------ internals
    def _drain(self) -> list[tuple]:
        """Release buffered chunks that now continue the stream (or reach past its end)."""
        out = []
        while self._starts and self._starts[0] <= self.next:
            p = self._starts.pop(0)
            items = self._pending.pop(p)
            self._buffered -= len(items)
            if p + len(items) <= self.next:
                continue  # wholly released already (an overlapping copy)
            items = items[self.next - p:]
            out.append(("data", items))
            self.next += len(items)
        return out

    def _give_up(self, all_holes: bool = False) -> list[tuple]:
        out = []
        while True:
            first = self._starts[0] if self._starts else None
            end = first if first is not None else self.known_end
            if end > self.next:
                n = end - self.next
                out.append(("fill", n))
                self.counters["fills"] += 1
                self.counters["filled_items"] += n
                self.next = end
            out += self._drain()
            if not all_holes or self.next >= self.known_end:
                return out

    def _update_holes(self, now: float) -> None:
        spans, cur = [], self.next
        for p in self._starts:
            if p > cur:
                spans.append((cur, p))
            cur = max(cur, p + len(self._pending[p]))
        if self.known_end > cur:
            spans.append((cur, self.known_end))
        old = self._holes
        new = []
        for s, e in spans:
            parent = next((h for h in old if h.start <= s < h.end), None)
            if parent is None:
                new.append(_Hole(s, e, now, now))
            else:
                new.append(_Hole(s, e, parent.seen, parent.next_request))
        self._holes = new


def zero_items(like: np.ndarray, n: int, fill_value: int = 0) -> np.ndarray:
    """``n`` filler items shaped like ``like``'s rows (samples: 1-D; frames: 2-D)."""
    shape = (n,) + tuple(like.shape[1:])
    return np.full(shape, fill_value, dtype=like.dtype)
