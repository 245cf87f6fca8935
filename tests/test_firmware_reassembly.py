"""The firmware's reorder buffer (firmware/ser_reassembly.c, compiled for the host) makes the same
decisions as the Python device's StreamReassembler: the same items released in the same order, the
same holes given up (zero-filled), the same ranges asked for at the same times, the same resets,
for random streams of reordered, lost, duplicated and resent chunks and SYNCs."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.protocol.reassembly import StreamReassembler
from firmware_bridge.cbuild import CReassembler

POOL_ITEMS = 6144 // 2  # SER_RA_POOL_BYTES of int16 samples
STREAM = (np.arange(20000) % 30000).astype(np.int16) + 1  # item value = position + 1 (never 0)


def _items(pieces) -> list:
    """Released stream: item values, 0 for a zero-filled item, ('reset', pos) markers."""
    out: list = []
    for kind, val in pieces:
        if kind == "data":
            out += np.asarray(val).tolist()
        elif kind == "fill":
            out += [0] * int(val)
        else:
            out.append(("reset", int(val)))
    return out


@st.composite
def scenarios(draw):
    """(start offset, resend, [events]): an event is ("push", first, count, t), ("poll", t) or
    ("sync", position, t); chunks come from one partition of the stream, as a host sends them."""
    start = draw(st.sampled_from([0, 7000, 0xFFFFFF00]))  # the last one wraps the u32 offsets
    sizes = draw(st.lists(st.integers(1, 300), min_size=3, max_size=40))
    edges = np.concatenate([[0], np.cumsum(sizes)])
    chunks = [(int(a), int(b - a)) for a, b in zip(edges[:-1], edges[1:])]
    order = draw(st.permutations(range(len(chunks))))
    # mostly in order: a few chunks moved late (resent), lost or duplicated
    late = draw(st.sets(st.integers(0, len(chunks) - 1), max_size=4))
    lost = draw(st.sets(st.integers(0, len(chunks) - 1), max_size=3))
    seq = [i for i in range(len(chunks)) if i not in late and i not in lost]
    seq += [order[k] for k in range(len(order)) if order[k] in late]
    events, t = [], 0.0
    for i in seq:
        # odd steps: no two clock readings differ by exactly the retry (0.1 s) or hold (3 s), where
        # Python's float sums and the C's integer ticks could round a tie either way
        t += draw(st.sampled_from([0.0, 0.0137, 0.0531, 0.2113, 1.0071]))
        first, count = chunks[i]
        events.append(("push", first, count, t))
        if draw(st.booleans()):
            events.append(("poll", t))
        if draw(st.integers(0, 9)) == 0:  # a duplicate
            events.append(("push", first, count, t))
    end = int(edges[-1])
    if draw(st.booleans()):  # a far jump: resets the stream
        events.append(("push", end + 170000, 50, t))
        end = end + 170050
    events.append(("sync", end, t))
    for dt in (0.0519, 0.5023, 2.0117, 4.0071):
        events.append(("poll", t + dt))
    return start, draw(st.booleans()), events


def _data(first: int, count: int) -> np.ndarray:
    return ((np.arange(first, first + count) % 30000) + 1).astype(np.int16)


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_c_reorder_buffer_decides_like_python(scenario):
    start, resend, events = scenario
    py = StreamReassembler(start, resend=resend, hold_s=3.0, retry_s=0.1, max_buffered=POOL_ITEMS,
                           max_gap=160000)
    c = CReassembler(start, resend=resend, hold_s=3.0, retry_s=0.1, max_gap=160000)
    for ev in events:
        if ev[0] in ("push", "sync"):
            first, count = (ev[1], ev[2]) if ev[0] == "push" else (ev[1], 0)
            t = ev[-1]
            items = _data(first, count)
            got_py = py.push(start + first, items, t)
            got_c = c.push(start + first, items, t)
            assert _items(got_c) == _items(got_py), ev
        else:
            (pp, ranges_py), (pc, ranges_c) = py.poll(ev[1]), c.poll(ev[1])
            assert _items(pc) == _items(pp), ev
            assert ranges_c == ranges_py, ev
        assert c.buffered == py.buffered
    assert _items(c.flush()) == _items(py.flush())


def test_pool_bound_gives_up_the_oldest_hole_first():
    """More than the pool behind a hole: the hole is zero-filled and the stream moves on, in both."""
    py = StreamReassembler(0, hold_s=3.0, retry_s=0.1, max_buffered=POOL_ITEMS)
    c = CReassembler(0, hold_s=3.0, retry_s=0.1)
    out_py, out_c = [], []
    for first in range(0, 8192, 256):
        if first == 256:
            continue  # lost
        out_py += py.push(first, _data(first, 256), 0.0)
        out_c += c.push(first, _data(first, 256), 0.0)
    assert _items(out_c) == _items(out_py)
    assert _items(out_c)[256:512] == [0] * 256 and len(_items(out_c)) > 256 + POOL_ITEMS


def test_overlapping_resends_release_each_item_once():
    """A host may resend with other frame boundaries: overlapping copies are merged, never released
    twice, in both implementations."""
    py = StreamReassembler(0, hold_s=3.0, retry_s=0.1, max_buffered=POOL_ITEMS)
    c = CReassembler(0, hold_s=3.0, retry_s=0.1)
    out_py, out_c = [], []
    for first, count in [(100, 100), (150, 150), (260, 20), (0, 120), (90, 250), (340, 10), (300, 45)]:
        out_py += py.push(first, _data(first, count), 0.0)
        out_c += c.push(first, _data(first, count), 0.0)
    assert _items(out_c) == _items(out_py) == _data(0, 350).tolist()
    assert c.buffered == py.buffered == 0
