"""Synthetic corpus: deterministic, balanced, several speakers, emotion prosody visible in simple features.

(The synth corpus checks the pipeline; it does not measure emotion recognition. See docs/corpora.md.)
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from model_build.corpora import RAVDESS8, leave_one_speaker_out, open_corpus
from model_build.corpora.synth import generate_corpus, write_corpus


def features(a: np.ndarray, sr: int = 16000) -> np.ndarray:
    """[log RMS, median pitch proxy (Hz), log10 energy 1-4 kHz / below 1 kHz] over a clip's loud frames."""
    x = a.astype(np.float64) / 32768
    frames = np.lib.stride_tricks.sliding_window_view(x, 640)[::320]
    energy = (frames ** 2).mean(1)
    loud = frames[energy > 0.3 * energy.max()] * np.hanning(640)
    ac = np.fft.irfft(np.abs(np.fft.rfft(loud, 2048)) ** 2)
    lo, hi = sr // 450, sr // 65
    pitch = sr / (lo + np.argmax(ac[:, lo:hi], axis=1))
    power = np.abs(np.fft.rfft(loud, axis=1)) ** 2
    f = np.fft.rfftfreq(640, 1 / sr)
    tilt = np.log10(power[:, (f > 1000) & (f < 4000)].sum() / power[:, f < 1000].sum())
    return np.array([np.log(np.sqrt(energy[energy > 0.3 * energy.max()].mean())), np.median(pitch), tilt])


@pytest.fixture(scope="module")
def corpus():
    t = time.perf_counter()
    data = generate_corpus(n_speakers=4, clips_per_label=12, seed=3)
    return data, time.perf_counter() - t


def test_shape_balance_speakers(corpus):
    data, seconds = corpus
    clips = [c for c, _ in data]
    # a generous bound: this guards against a pathological slowdown, not a speed goal (CI machines
    # are shared; speed lives in bench/)
    assert len(data) == 96 and seconds < 60
    for label in RAVDESS8:
        mine = [c for c in clips if c.label == label]
        assert len(mine) == 12 and {c.speaker for c in mine} == {"S01", "S02", "S03", "S04"}
    assert {c.sex for c in clips if c.speaker == "S01"} == {"M"} and {c.sex for c in clips if c.speaker == "S02"} == {"F"}
    for _, a in data:
        assert a.dtype == np.int16 and 1.5 * 16000 <= len(a) <= 3.5 * 16000 + 1
        assert 500 < np.abs(a).max() < 32767


def test_deterministic_and_subset_stable(corpus):
    data, _ = corpus
    again = generate_corpus(n_speakers=4, clips_per_label=12, seed=3, labels=("sad", "angry"))
    mine = [(c, a) for c, a in data if c.label in ("sad", "angry")]
    assert [c for c, _ in again] == sorted((c for c, _ in mine), key=lambda c: c.label != "sad")
    same = {c.path: a for c, a in mine}
    assert all(np.array_equal(same[c.path], a) for c, a in again)
    other = generate_corpus(n_speakers=4, clips_per_label=1, seed=4, labels=("sad",))
    assert not np.array_equal(other[0][1][:1000], same[other[0][0].path][:1000])


def test_clips_within_a_class_differ(corpus):
    data, _ = corpus
    happy = [features(a) for c, a in data if c.label == "happy" and c.speaker == "S01"]
    assert np.ptp(np.array(happy)[:, 1]) > 5  # per-clip randomness moves the pitch


def test_prosody_follows_emotion(corpus):
    data, _ = corpus
    feats = {lab: np.array([features(a) for c, a in data if c.label == lab]) for lab in RAVDESS8}
    mean = {lab: f.mean(0) for lab, f in feats.items()}
    assert mean["angry"][0] > mean["sad"][0] + 0.5  # louder (log RMS, > 4 dB)
    assert mean["calm"][0] < mean["neutral"][0]
    assert mean["fearful"][1] > 1.2 * mean["sad"][1]  # higher pitch
    assert mean["surprised"][1] > mean["disgust"][1]
    assert mean["angry"][2] > mean["sad"][2] + 0.3  # brighter (flatter spectral tilt)


def test_simple_classifier_beats_chance_on_unseen_speakers(corpus):
    data, _ = corpus
    clips = [c for c, _ in data]
    X = np.array([features(a) for _, a in data])
    y = np.array([c.label for c in clips])
    X[:, 1] = np.log(X[:, 1])
    Z = np.empty_like(X)  # per-speaker normalisation (no labels used): removes voice, keeps prosody
    for s in {c.speaker for c in clips}:
        rows = [i for i, c in enumerate(clips) if c.speaker == s]
        Z[rows] = (X[rows] - X[rows].mean(0)) / X[rows].std(0)
    correct = 0
    for _, tr, te in leave_one_speaker_out(clips):
        cents = np.array([Z[tr][y[tr] == lab].mean(0) for lab in RAVDESS8])
        pred = np.array(RAVDESS8)[np.argmin(((Z[te][:, None] - cents[None]) ** 2).sum(-1), axis=1)]
        correct += int((pred == y[te]).sum())
    acc = correct / len(y)
    assert 0.3 < acc < 0.95, acc  # chance is 0.125; learnable but not trivial


def test_write_corpus_reads_back_with_folder_loader(tmp_path):
    written = write_corpus(tmp_path / "synth", n_speakers=2, clips_per_label=2, labels=("happy", "sad"), seed=1)
    idx = open_corpus(tmp_path / "synth")
    assert idx.name == "folder" and not idx.report.skipped
    got = sorted((c.label, c.speaker, c.path) for c in idx.clips)
    assert got == sorted((c.label, c.speaker, c.path) for c in written)
    ref = dict(generate_corpus(n_speakers=2, clips_per_label=2, labels=("happy",), seed=1))
    first = next(c for c in idx.clips if c.label == "happy")
    assert np.array_equal(first.load(), next(a for c, a in ref.items() if first.path.endswith(c.path)))


def test_unknown_label_rejected():
    with pytest.raises(ValueError, match="no synth profile"):
        generate_corpus(labels=("bored",))
