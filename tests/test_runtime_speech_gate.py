"""Speech gate: integer log2, noise-floor tracking, golden vectors for the C port, noise vs speech."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.classifier import StreamingClassifier
from edge_runtime.speech_gate import GateConfig, SpeechGate, db_to_q8, frame_stats, ilog2_q8
from edge_runtime.test_signals import nonspeech_signals, speech_with_pauses
from tests.test_runtime_helpers import speechlike

GOLDEN = Path(__file__).parent / "golden" / "speech_gate_v1.json"


def test_ilog2_q8_exact_values_and_accuracy():
    assert ilog2_q8(np.array([0, 1, 2, 3, 4, 6, 255, 256, 1 << 48])).tolist() == \
        [0, 0, 256, 384, 512, 640, 7 * 256 + 254, 2048, 48 * 256]
    e = np.unique(np.random.default_rng(0).integers(1, 1 << 50, 5000, dtype=np.int64))
    err = ilog2_q8(e) / 256.0 - np.log2(e.astype(np.float64))
    assert err.max() <= 1e-9 and err.min() > -0.091  # linear mantissa (0.086) + 8-bit truncation (0.004)
    assert np.all(np.diff(ilog2_q8(e)) >= 0)  # monotonic
    assert db_to_q8(9.0) == 765 and db_to_q8(-75.0) == -6378


def test_dc_offset_has_no_level():
    n = 512
    assert frame_stats(np.array([n * 1000]), np.array([n * 1000 * 1000]), n).tolist() == [0]


def _levels(pcm, L=512, H=256):
    nf = 1 + (pcm.size - L) // H
    x = pcm.astype(np.int64)
    s = np.array([x[i * H:i * H + L].sum() for i in range(nf)])
    q = np.array([(x[i * H:i * H + L] ** 2).sum() for i in range(nf)])
    return s, q, frame_stats(s, q, L)


def _golden_signal():
    rng = np.random.default_rng(11)
    noise = np.round(rng.standard_normal(16000 * 6) * 60).astype(np.int64)  # ~ -55 dBFS floor
    x = noise.copy()
    x[16000:16000 + 24000] += speechlike(1.5, seed=3, level=0.2).astype(np.int64)
    x[64000:66000] += 9000  # a DC step (its edges are one-frame events)
    x[80000] = 20000  # a click
    return np.clip(x, -32768, 32767).astype(np.int16)


def test_golden_vectors_for_the_c_port():
    """Per-frame (sum, sum of squares) -> level (Q8) -> active flag, and per-window decisions, frozen
    in tests/golden/speech_gate_v1.json; the C gate must reproduce them bit for bit."""
    s, q, lv = _levels(_golden_signal())
    gate = SpeechGate(GateConfig(), 512)
    active = gate.push(lv)
    got = {"constants": gate.k.to_dict(), "sums": s.tolist(), "sumsq": q.tolist(), "levels": lv.tolist(),
           "active": active.tolist()}
    if os.environ.get("SER_EDGE_REGEN_GOLDEN") == "1":  # deliberate change of the gate: rewrite
        GOLDEN.write_text(json.dumps(got, separators=(",", ":")) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert got == want
    # the speech segment (1.0 .. 2.5 s) is active, the noise before it is not, the click is not
    hop_s = 256 / 16000
    t = np.arange(len(active)) * hop_s
    assert active[(t > 1.2) & (t < 2.3)].mean() > 0.5
    assert active[t < 0.95].sum() == 0 and active[(t > 4.9) & (t < 5.1)].sum() == 0


def test_floor_follows_the_background_within_its_memory():
    gate = SpeechGate(GateConfig(), 512)
    quiet = np.full(100, 5000)
    loud = np.full(300, 8000)  # the fan turned on: +3000 Q8 (~35 dB)
    gate.push(quiet)
    assert gate.floor_q8 == 5000
    gate.push(loud)
    k = gate.k
    assert gate.floor_q8 == 8000  # forgotten after floor_blocks * floor_block_frames frames
    assert k.floor_blocks * k.floor_block_frames <= 300


@pytest.fixture(scope="module")
def shipped():
    return StreamingClassifier.from_model()


def test_noise_and_tones_get_no_emotion(shipped):
    sigs = nonspeech_signals(seconds=4.0)
    assert len(sigs) >= 30
    for name, x in sigs.items():
        wins, utts, summary = shipped.classify_clip(x)
        assert wins and all(r.label_index is None and r.reason in ("silence", "no_speech") for r in wins), name
        assert summary.label_index is None and summary.reason in ("silence", "no_speech") and not utts, name


@pytest.mark.parametrize("peak_dbfs", [-35.0, -45.0, -1.0])
def test_speech_is_speech_at_any_level(shipped, peak_dbfs):
    x = speech_with_pauses(4.0).astype(np.float64)
    x = np.round(x * 10 ** (peak_dbfs / 20) * 32767 / np.abs(x).max()).astype(np.int16)
    wins, _, summary = shipped.classify_clip(x)
    speech = [r for r in wins if r.label_index is not None]
    assert len(speech) >= len(wins) - 1 and summary.label_index is not None


def test_speech_in_stationary_noise_still_passes(shipped):
    rng = np.random.default_rng(5)
    x = speechlike(3.0, seed=9, level=0.3).astype(np.float64)
    noise = rng.standard_normal(x.size) * np.sqrt(np.mean(x * x) / 10)  # 10 dB SNR
    y = np.clip(np.round(np.concatenate([noise[:16000], x + noise])), -32768, 32767).astype(np.int16)
    _, _, summary = shipped.classify_clip(y)
    assert summary.label_index is not None
