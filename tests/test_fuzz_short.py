"""Short runs of bench/fuzz.py: hostile frames (Python + C under ASan/UBSan), audio files, .tflite."""
from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from bench import fuzz
from tests.conftest import require_module, require_tool


def test_frames_python_and_c_under_sanitizers_agree_and_survive():
    require_tool("gcc")
    r = fuzz.fuzz_frames(3000, seed=7, compilers=("gcc",), log=lambda s: None)
    assert r["frame_crashes"] == 0 and r["python_exceptions"] == []
    assert r["c_gcc"]["built"] and r["c_gcc"]["verdicts_equal_python"]
    # the mutations really reach every rejection path, and some frames still pass
    assert all(r["python_drops"].get(k, 0) > 0 for k in ("cobs", "crc", "length", "oversize", "payload"))
    assert r["python_frames_ok"] > 100


def test_mutated_audio_files_are_read_or_refused_by_name():
    require_module("soundfile")
    r = fuzz.fuzz_wav(200, seed=3)
    assert r["wav_uncaught"] == 0, r["wav_examples"]
    assert r["wav_read_ok"] > 0 and r["wav_rejected_audio_input_error"] > 0
    assert r["wav_peak_rss_mb_max"] < 200


def test_hostile_wav_headers_cost_no_memory(tmp_path):
    """The cases from #13: a 16 Hz rate field, a data size of ~4 GiB, a frame count beyond the file."""
    from edge_runtime.audio_io import AudioInputError, load_audio, write_wav

    p = write_wav(tmp_path / "ok.wav", (np.random.default_rng(1).standard_normal(16000) * 3000).astype(np.int16))
    base = p.read_bytes()
    rate16 = bytearray(base)
    rate16[24:32] = struct.pack("<II", 16, 32)
    (tmp_path / "rate16.wav").write_bytes(rate16)
    with pytest.raises(AudioInputError, match="rate16.wav: implausible sample rate 16 Hz"):
        load_audio(tmp_path / "rate16.wav")
    huge = bytearray(base)
    huge[40:44] = struct.pack("<I", 0xFFFFFFF0)
    (tmp_path / "huge.wav").write_bytes(huge)
    assert load_audio(tmp_path / "huge.wav").size == 16000  # read what is there, allocate no more
    rng = random.Random(5)
    for i in range(50):
        q = tmp_path / f"m{i}.wav"
        q.write_bytes(fuzz.mutate_audio(base, rng))
        try:
            load_audio(q)
        except AudioInputError as e:
            assert str(q) in str(e)


def test_mutated_models_raise_model_file_error_only():
    r = fuzz.fuzz_tflite(500, seed=11)
    assert r["tflite_uncaught"] == 0, r.get("tflite_examples")
    assert r["tflite_read_ok"] > 0 and r["tflite_rejected_model_file_error"] > 0
