"""StreamReassembler: reorder, ask for holes, give up in time, bounded memory (pure, clock passed in)."""
from __future__ import annotations

import numpy as np

from edge_runtime.protocol.reassembly import StreamReassembler

A = np.arange(1000, dtype=np.int16)


def _released(pieces) -> np.ndarray:
    out = []
    for kind, val in pieces:
        if kind == "data":
            out.append(np.asarray(val))
        elif kind == "fill":
            out.append(np.full(val, -1, np.int16))
    return np.concatenate(out) if out else np.zeros(0, np.int16)


def test_in_order_passes_through_and_a_hole_is_asked_for_then_filled_by_the_resend():
    r = StreamReassembler(0, hold_s=1.0, retry_s=0.1)
    got = [*r.push(0, A[:10], 0.0), *r.push(20, A[20:30], 0.0)]
    assert _released(got).tolist() == list(range(10)) and r.holes() == [(10, 20)]
    pieces, ranges = r.poll(0.0)
    assert pieces == [] and ranges == [(10, 10)]
    assert r.poll(0.05)[1] == []  # not again before retry_s
    assert r.poll(0.2)[1] == [(10, 10)]
    got = r.push(10, A[10:20], 0.3)
    assert _released(got).tolist() == list(range(10, 30)) and r.holes() == []
    assert r.counters["recovered_items"] == 10 and r.counters["fills"] == 0


def test_a_hole_is_given_up_after_hold_and_a_sync_reveals_a_lost_tail():
    r = StreamReassembler(0, hold_s=1.0, retry_s=0.1)
    r.push(0, A[:10], 0.0)
    r.push(10, A[:0], 0.0)  # SYNC at 10: nothing missing
    assert r.holes() == []
    assert r.push(30, A[:0], 0.1) == [] and r.holes() == [(10, 30)]  # SYNC: 10..30 were lost
    assert r.poll(0.5)[0] == []
    pieces, _ = r.poll(1.2)
    assert pieces == [("fill", 20)] and r.next == 30


def test_memory_is_bounded_and_offsets_wrap():
    r = StreamReassembler(0, hold_s=10.0, max_buffered=50)
    r.push(0, A[:10], 0.0)
    out = []
    for k in range(2, 10):  # chunk 1 never comes; 80 items pile up behind it
        out += r.push(10 * k, A[10 * k:10 * k + 10], 0.0)
    assert r.buffered <= 50
    assert _released(out).tolist() == [-1] * 10 + list(range(20, 100))  # gave up the hole, moved on
    w = StreamReassembler(2**32 - 5)
    assert _released(w.push(2**32 - 5, A[:10], 0)).size == 10
    assert _released(w.push(5, A[10:20], 0)).size == 10 and w.next == 20


def test_stale_duplicates_and_a_huge_jump():
    r = StreamReassembler(0, max_gap=100)
    r.push(0, A[:10], 0.0)
    assert r.push(0, A[:10], 0.0) == [] and r.counters["stale"] == 1
    assert _released(r.push(5, A[5:15], 0.0)).tolist() == list(range(10, 15))  # overlap trimmed
    pieces = r.push(500, A[:10], 0.0)
    assert pieces[0] == ("reset", 500) and r.next == 510


def test_revision_1_host_holes_are_filled_at_once():
    r = StreamReassembler(0, resend=False)
    assert _released(r.push(10, A[10:20], 0.0)).tolist() == [-1] * 10 + list(range(10, 20))
