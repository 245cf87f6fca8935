"""bench/soak.py's bookkeeping: every device RESULT is checked against the reference record of the
same kind and number (the hour-long run itself is a benchmark, `make soak`)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from bench.soak import Ledger
from edge_runtime.classifier import StreamingClassifier
from edge_runtime.protocol import ResultFlags
from edge_runtime.serial_device import result_to_message
from edge_runtime.test_signals import speech_with_pauses


@pytest.fixture(scope="module")
def session():
    """A stream as the device runs it: windows while streaming, then STOP's tail window, utterance
    and summary records (4.3 s: 3 windows and an 18-frame tail, so STOP flushes one more window)."""
    clf = StreamingClassifier.from_model()
    pcm = speech_with_pauses(4.3, seed=5)
    streamed = []
    for i in range(0, pcm.size, 512):
        streamed += clf.push_audio(pcm[i:i + 512])
        streamed += clf.take_utterances()
    at_stop = clf.finish() + clf.take_utterances()
    return streamed, at_stop


def device_messages(records, session_id=7):
    # what serve sends: the same conversion, its own session id and latency
    return [result_to_message(r, session_id, latency_us=1234) for r in records]


def test_stop_records_are_not_taken_for_windows(session):
    """The flush window, utterance 0 and the summary come at STOP; utterance 0 shares the number 0
    with window 0 (the first soak keyed everything by number: 1 "mismatched" + 1-2 "unexpected")."""
    streamed, at_stop = session
    kinds = [m.flags & ResultFlags.UTTERANCE and m.window_index for m in device_messages(at_stop)]
    assert kinds[0] == 0 and 0 in kinds[1:] and 0xFFFFFFFF in kinds  # flush window, utterance 0, summary
    ledger = Ledger()
    ledger.expect(streamed)
    ledger.expect(at_stop)
    for m in device_messages(streamed + at_stop):
        ledger.receive(m, t_rx_s=0.0)
    parts, details = ledger.compare()
    assert sum(parts.values()) == 0, details
    assert sorted(ledger.received["window"]) == [0, 1, 2, 3]
    assert list(ledger.received["utterance"]) == [0] and list(ledger.received["summary"]) == [0xFFFFFFFF]


def test_every_kind_of_difference_is_an_error(session):
    streamed, at_stop = session
    msgs = device_messages(streamed + at_stop)
    w1 = next(i for i, m in enumerate(msgs) if m.window_index == 1 and not m.flags & ResultFlags.UTTERANCE)
    w2 = next(i for i, m in enumerate(msgs) if m.window_index == 2 and not m.flags & ResultFlags.UTTERANCE)
    bad = list(msgs)
    bad[w1] = replace(msgs[w1], scores=(msgs[w1].scores[0] ^ 1,) + msgs[w1].scores[1:])
    bad[w2] = replace(msgs[w2], flags=msgs[w2].flags | ResultFlags.GAP)  # GAP counted, not a mismatch
    summary = next(i for i, m in enumerate(msgs) if m.window_index == 0xFFFFFFFF)
    del bad[summary]
    bad.append(replace(msgs[0], window_index=99))  # a window nobody expected
    bad.append(msgs[0])  # sent twice
    ledger = Ledger()
    ledger.expect(streamed + at_stop)
    for m in bad:
        ledger.receive(m)
    parts, details = ledger.compare()
    assert {k: v for k, v in parts.items() if v} == {
        "mismatched_windows": 1, "unexpected_windows": 1, "missing_summarys": 1, "gap_windows": 1,
        "duplicate_records": 1}
    mism = next(d for d in details if d["error"] == "mismatched_window")
    assert mism["number"] == 1 and mism["expected"]["scores"] != mism["got"]["scores"]
