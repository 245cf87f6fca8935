"""load_audio: formats, sample rates, channel down-mix, int16 conversion, and clear errors."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import soundfile as sf

from edge_runtime.audio_io import AudioReadError, load_audio, resample, to_int16


def tone(freq: float, sr: int, seconds: float = 0.5, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(sr * seconds)) / sr)).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int = 16000) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


def test_wav_16k_int16_is_exact(tmp_path):
    x = (np.arange(-1000, 1000) * 7).astype(np.int16)
    sf.write(tmp_path / "a.wav", x, 16000, subtype="PCM_16")
    y = load_audio(tmp_path / "a.wav")
    assert y.dtype == np.int16 and np.array_equal(y, x)


@pytest.mark.parametrize("sr,fmt,channels", [(44100, "WAV", 2), (96000, "WAV", 1), (48000, "FLAC", 1),
                                             (24414, "WAV", 1), (8000, "FLAC", 2)])
def test_resampled_length_and_frequency_preserved(tmp_path, sr, fmt, channels):
    x = tone(1000.0, sr)
    data = np.stack([x, x], axis=1) if channels == 2 else x
    path = tmp_path / f"t.{fmt.lower()}"
    sf.write(path, data, sr, format=fmt, subtype="PCM_16")
    y = load_audio(path)
    assert y.ndim == 1 and y.dtype == np.int16
    assert abs(len(y) - round(len(x) * 16000 / sr)) <= 1
    assert peak_hz(y) == pytest.approx(1000.0, rel=0.01)
    assert np.abs(y).max() == pytest.approx(0.5 * 32768, rel=0.02)  # level kept


def test_stereo_is_averaged(tmp_path):
    left, right = np.full(1600, 0.5, np.float32), np.full(1600, -0.25, np.float32)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
    y = load_audio(tmp_path / "s.wav")
    assert np.all(y == round(0.125 * 32768))


def test_aiff_content_named_wav(tmp_path):
    x = tone(440.0, 22050)
    path = tmp_path / "misnamed.wav"
    sf.write(path, x, 22050, format="AIFF", subtype="PCM_16")
    assert path.read_bytes()[:4] == b"FORM"  # really AIFF inside
    y = load_audio(path)
    assert abs(len(y) - 8000) <= 1 and peak_hz(y) == pytest.approx(440.0, rel=0.01)


def test_float_out_of_range_is_clipped():
    assert to_int16(np.array([1.5, 1.0, -1.0, -2.0, 0.5])).tolist() == [32767, 32767, -32768, -32768, 16384]


def test_no_soxr_is_a_clear_error_not_another_resampler(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "soxr", None)  # makes `import soxr` fail
    sf.write(tmp_path / "t44.wav", tone(1000.0, 44100), 44100, subtype="PCM_16")
    with pytest.raises(AudioReadError, match="needs soxr"):
        load_audio(tmp_path / "t44.wav")


@pytest.mark.parametrize("content,reason", [(b"", "empty file"), (b"RIFF\x00\x01garbage" * 10, "not readable"),
                                            (bytes(range(256)) * 4, "not readable")])
def test_bad_files_raise_with_path_and_reason(tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioReadError) as err:
        load_audio(path)
    assert err.value.path == str(path) and reason in err.value.reason and str(path) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_zero_frames_and_missing_file(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioReadError, match="0 frames"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioReadError, match="not found"):
        load_audio(tmp_path / "nope.flac")


def test_nan_samples_rejected(tmp_path):
    x = tone(300.0, 16000)
    x[10] = np.nan
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioReadError, match="NaN"):
        load_audio(tmp_path / "nan.wav")
