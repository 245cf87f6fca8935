"""StreamingClassifier: chunking invariance, gating, feature path, smoothing, Engine interface."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime import classifier as classifier_mod
from edge_runtime.audio_sources import FileSource
from edge_runtime.classifier import StreamingClassifier
from edge_runtime.frontend import compute_features
from edge_runtime.results import SILENCE_LABEL, UNCERTAIN_LABEL, WindowResult
from tests.test_runtime_helpers import HOP, WINDOW, backend_params, speechlike, write_tiny_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("rt_clf"))


@pytest.fixture(scope="module")
def clip():
    # speech, a pause, speech: 4 s
    a = speechlike(1.5, seed=1)
    return np.concatenate([a, np.zeros(8000, np.int16), speechlike(2.0, seed=2)])


def _key(r: WindowResult):
    return (r.window_index, r.label, r.label_index, tuple(r.scores_int8.tolist()), r.gated,
            round(r.t_start_s, 6), round(r.t_end_s, 6), r.extra.get("active_frames"))


@pytest.mark.parametrize("backend", backend_params())
def test_random_chunkings_equal_whole_file(model_path, clip, backend):
    clf = StreamingClassifier.from_model(model_path, backend=backend)
    whole = clf.classify(clip)
    cfg = clf.cfg
    n_frames = cfg.n_frames(clip.size)
    assert len(whole) == (n_frames - WINDOW) // HOP + 1
    rng = np.random.default_rng(3)
    for trial in range(4):
        clf.reset()
        cuts = np.sort(rng.choice(np.arange(1, clip.size), size=rng.integers(5, 200), replace=False))
        got = []
        for piece in np.split(clip, cuts):
            if piece.size:
                got.extend(clf.push_audio(piece))
        assert [_key(r) for r in got] == [_key(r) for r in whole], f"trial {trial}"
    # chunks of 1 sample at the start (frames complete one sample at a time)
    clf.reset()
    got = [r for s in clip[:9000] for r in clf.push_audio(np.array([s], np.int16))]
    assert [_key(r) for r in got] == [_key(r) for r in whole[:len(got)]] and got


def test_windows_are_classified_like_batch(model_path, clip):
    """Each streamed window == the model applied to the batch features of that window."""
    clf = StreamingClassifier.from_model(model_path, gate=None)
    res = clf.classify(clip, chunk=1000)
    q = clf.model.quantize(compute_features(clip, clf.cfg))
    for r in res[::5]:
        k = r.window_index * HOP
        assert np.array_equal(r.scores_int8, clf.model.predict_window(q[k:k + WINDOW]))
    assert len({r.label for r in res}) > 1


def test_push_features_matches_push_audio(model_path, clip):
    clf = StreamingClassifier.from_model(model_path, gate=None)
    audio = clf.classify(clip)
    clf.reset()
    q = clf.model.quantize(compute_features(clip, clf.cfg))
    feats = []
    for i in range(0, len(q), 7):
        feats.extend(clf.push_features(q[i:i + 7]))
    assert [(_key(r)[:6]) for r in feats] == [(_key(r)[:6]) for r in audio]
    with pytest.raises(ValueError, match=r"int8 of shape \(n, 13\)"):
        clf.push_features(np.zeros((3, 12), np.int8))


def test_silence_and_noise_are_gated_speech_is_not(model_path, clip):
    clf = StreamingClassifier.from_model(model_path)
    quiet = (np.random.default_rng(0).standard_normal(16000 * 2) * 10).astype(np.int16)  # ~ -70 dBFS, stationary
    res = clf.classify(quiet)
    assert res and all(r.gated and r.label_index is None and r.reason in ("silence", "no_speech") for r in res)
    zeros = clf.classify(np.zeros(32000, np.int16))
    assert zeros and all(r.reason == "silence" and r.label == SILENCE_LABEL for r in zeros)
    res = clf.classify(clip)
    assert any(r.label_index is not None for r in res)
    # the window entirely inside the 0.5 s pause is not speech; windows with speech are
    for r in res:
        d = r.to_json_dict(clf.labels)
        assert (d["index"] is None) == (d["reason"] is not None)
        assert (d["reason"] in ("silence", "no_speech")) == r.gated
        if d["reason"] == "uncertain":  # min_confidence is off: only an exact tie of the top scores
            top = np.sort(d["scores_int8"])[::-1]
            assert top[0] == top[1], d


def test_quiet_speech_is_not_gated():
    """A -35 dBFS-peak utterance (a quiet talker, a far microphone) is still speech (shipped model:
    2 s windows, the gate's window decision needs 12 active frames)."""
    clf = StreamingClassifier.from_model()
    loud = speechlike(3.0, seed=4, level=0.5)
    quiet = np.round(loud * (10 ** (-35 / 20) * 32767 / np.abs(loud).max())).astype(np.int16)
    for x in (loud, quiet):
        wins, _, summary = clf.classify_clip(x)
        assert wins and all(not r.gated for r in wins)
        assert summary.label_index is not None


def test_smoothing_and_confidence(model_path, clip):
    raw = StreamingClassifier.from_model(model_path, gate=None).classify(clip)
    ema = StreamingClassifier.from_model(model_path, gate=None, smooth=4).classify(clip)
    maj = StreamingClassifier.from_model(model_path, gate=None, smooth=5, smooth_mode="majority").classify(clip)
    changes = lambda rs: sum(a.label != b.label for a, b in zip(rs, rs[1:]))  # noqa: E731
    assert changes(ema) <= changes(raw) and changes(maj) <= changes(raw)
    assert changes(ema) < changes(raw) or changes(maj) < changes(raw)
    # EMA first window == raw, later windows mix
    assert np.allclose(ema[0].probs, raw[0].probs)
    a = 2 / 5
    assert np.allclose(ema[1].probs, a * raw[1].probs + (1 - a) * raw[0].probs)
    unc = StreamingClassifier.from_model(model_path, gate=None, min_confidence=0.99).classify(clip)
    assert all(r.label == UNCERTAIN_LABEL for r in unc if r.probs.max() < 0.99)
    assert sum(r.label == UNCERTAIN_LABEL for r in unc) > 0


def test_engine_interface_and_api(model_path, clip, tmp_path):
    import hashlib
    import wave

    clf = StreamingClassifier.from_model(model_path)
    info = clf.info()
    data = open(model_path, "rb").read()
    assert info["model_hash"] == hashlib.sha256(data).hexdigest()[:16]
    assert info["frontend_hash"] == clf.cfg.hash
    for k in ("labels", "sample_rate", "window_frames", "hop_frames", "n_features", "input_scale",
              "input_zero_point", "version"):
        assert k in info
    assert (info["window_frames"], info["hop_frames"], info["n_features"]) == (WINDOW, HOP, 13)
    p = tmp_path / "clip.wav"
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(clip.tobytes())
    ref, utts, summary = clf.classify_clip(clip)
    clf.reset()
    records = list(clf.stream(FileSource(p, chunk_ms=20)))
    streamed = [r for r in records if r.record == "window"]
    assert [r.record for r in records[len(streamed):]] == ["utterance"] * len(utts) + ["summary"]
    assert records[-1].label_index == summary.label_index is not None
    clf.reset()
    seen = []
    assert clf.run(FileSource(p), seen.append) == len(records)
    seen = [r for r in seen if r.record == "window"]
    assert [_key(r) for r in streamed] == [_key(r) for r in ref] == [_key(r) for r in seen]
    for r in ref:
        assert r.latency_ms > 0 and r.latency_ms == pytest.approx(r.extra["fe_ms"] + r.extra["nn_ms"], abs=0.01)
        d = r.to_json_dict(clf.labels)
        assert set(d["probs"]) == set(clf.labels)


def test_default_model_missing_message(monkeypatch, tmp_path):
    monkeypatch.setattr(classifier_mod, "DEFAULT_MODEL", tmp_path / "models" / "default.tflite")
    with pytest.raises(FileNotFoundError, match="no default model.*--model"):
        StreamingClassifier.from_model()


def test_shared_tiny_model(request, clip):
    """The model_build engineer's shared fixture model (when tests/conftest.py provides it)."""
    path = request.getfixturevalue("tiny_model_path")
    clf = StreamingClassifier.from_model(path)
    whole = clf.classify(clip)
    chunked = clf.classify(clip, chunk=1237)
    assert whole and [_key(r) for r in chunked] == [_key(r) for r in whole]
    assert set(r.label for r in whole) <= set(clf.labels) | {SILENCE_LABEL, UNCERTAIN_LABEL, "no_speech"}
