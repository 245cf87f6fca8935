"""The per-chunk path keeps nothing alive from call to call.

`serve` runs for days, so anything the per-chunk path leaves alive accumulates in RSS. The subtle
case guarded here: numpy calls that look a method up by a C string (``arr.flags.writeable =
False`` calls ``setflags`` that way; ``np.cumsum`` calls ``accumulate``) create a fresh name object
per call, and CPython 3.11's type method cache keeps a reference to the name in one of its 4096
slots. And per-window tuples built from generators (``tuple(int(v) for v in scores)``) are
allocated at a guessed size and resized, bypassing CPython's free list of tuples of that length, but
land in it when freed: one more parked 128-byte block per window until the list holds 2000 (~0.25 MB
over the first ~35 minutes of a soak). tracemalloc and ``sys.getallocatedblocks`` count the blocks
still held after many calls.
"""
from __future__ import annotations

import sys
import tracemalloc
from typing import Callable

import numpy as np

from edge_runtime.frontend import DEFAULT_CONFIG
from edge_runtime.frontend.fixed_point import frame_signal
from edge_runtime.protocol.messages import Result
from edge_runtime.results import WindowResult
from edge_runtime.serial_device import result_to_message


def _blocks_left_behind(fn: Callable[[int], object], calls: int) -> int:
    """Live blocks that ``calls`` calls of ``fn`` added (after a warm-up)."""
    for i in range(200):
        fn(i)
    tracemalloc.start(1)
    try:
        before = tracemalloc.take_snapshot()
        for i in range(calls):
            fn(i)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    own = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = after.filter_traces(own).compare_to(before.filter_traces(own), "lineno")
    return sum(d.count_diff for d in diff)


def test_frame_signal_keeps_nothing_per_call() -> None:
    rng = np.random.default_rng(0)
    chunks = [rng.integers(-3000, 3000, 912).astype(np.int16) for _ in range(16)]
    read_only = [np.frombuffer(c.tobytes(), np.int16) for c in chunks]  # as AUDIO payloads arrive

    def call(i: int) -> None:
        f = frame_signal(chunks[i % 16] if i % 2 else read_only[i % 16], DEFAULT_CONFIG)
        assert not f.flags.writeable

    # `out.flags.writeable = False` left ~37 blocks behind in 20 000 calls; setflags leaves none
    assert _blocks_left_behind(call, 20_000) <= 5
    assert chunks[0].flags.writeable  # the caller's array is untouched



def test_result_messages_park_no_tuples() -> None:
    def window(i: int) -> WindowResult:
        return WindowResult(window_index=i, t_start_s=i * 0.5, t_end_s=i * 0.5 + 2.0, label="x", label_index=1,
                            scores_int8=(np.arange(8) - 4).astype(np.int8), probs=np.full(8, 0.125),
                            latency_ms=1.0, gated=False, reason=None, log_probs=None, extra=None)

    windows = [window(i) for i in range(3000)]
    payloads = [result_to_message(w, 1).encode_payload() for w in windows]
    # empty the free list of 8-tuples (it holds up to 2000) so that parking in it would show
    held = [tuple([i] * 8) for i in range(2500)]
    before = sys.getallocatedblocks()
    for w, p in zip(windows, payloads):
        assert Result.decode_payload(result_to_message(w, 1).encode_payload()).encode_payload() == p
    grown = sys.getallocatedblocks() - before
    del held
    # building the scores with tuple(generator) parked one block per RESULT, up to the cap: 2001
    assert grown <= 50, f"{grown} more blocks after 3000 RESULTs"
