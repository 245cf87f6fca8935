"""Corpus loaders on tiny fake corpora in each layout, with the real corpora's quirks."""
from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model_build.corpora import (COMMON7, RAVDESS8, detect_corpus, label_counts, load_corpus, open_corpus,
                                 to_common)


def write(path: Path, sr: int = 16000, seconds: float = 0.2, freq: float = 220.0, fmt: str | None = None,
          channels: int = 1) -> Path:
    """A short tone, plus faint noise seeded by the file name so that no two files are identical."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(zlib.crc32(str(path).encode())).normal(0, 0.01, int(sr * seconds))
    x = 0.3 * np.sin(2 * np.pi * freq * np.arange(int(sr * seconds)) / sr) + noise
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, sr, format=fmt, subtype="PCM_16")
    return path


@pytest.fixture
def ravdess(tmp_path):
    root = tmp_path / "RAVDESS"
    for actor in (1, 2):
        for emo in (1, 2, 5):
            write(root / f"Actor_{actor:02d}/03-01-{emo:02d}-01-01-01-{actor:02d}.wav", freq=200 + 50 * emo)
    write(root / "Actor_01/03-01-08-02-02-01-01.flac", sr=48000)  # surprised, strong, FLAC 48 kHz
    dup = root / "Actor_02/03-01-05-01-01-02-02.wav"  # repetition 02 identical to repetition 01
    dup.write_bytes((root / "Actor_02/03-01-05-01-01-01-02.wav").read_bytes())
    write(root / "Actor_01/03-02-03-01-01-01-01.wav")  # song: left out with a note
    (root / "Actor_02/03-01-04-01-01-01-02.wav").write_bytes(b"not audio at all" * 20)  # corrupt
    (root / "Actor_02/03-01-06-01-01-01-02.wav").write_bytes(b"")  # zero-length
    (root / "Actor_01/notes.txt").write_text("ignored: not audio")
    return root


def test_ravdess_scan(ravdess):
    assert detect_corpus(ravdess) == "ravdess"
    idx = open_corpus(ravdess)
    assert idx.name == "ravdess" and idx.labels == RAVDESS8
    by_name = {Path(c.path).name: c for c in idx.clips}
    c = by_name["03-01-08-02-02-01-01.flac"]
    assert (c.speaker, c.sex, c.emotion, c.label, c.intensity, c.statement) == ("A01", "M", "surprised",
                                                                              "surprised", "strong", "02")
    assert by_name["03-01-02-01-01-01-02.wav"].sex == "F"
    assert by_name["03-01-02-01-01-01-02.wav"].label == "calm"
    rep = idx.report
    assert rep.n_files == 11 and len(idx.clips) == 8  # 7 tones + flac + corrupt - dup - empty - song
    reasons = rep.reasons()
    assert "empty" in reasons[str(ravdess / "Actor_02/03-01-06-01-01-01-02.wav")]
    assert rep.duplicates == [(str(ravdess / "Actor_02/03-01-05-01-01-02-02.wav"),
                               str(ravdess / "Actor_02/03-01-05-01-01-01-02.wav"))]
    assert any("song" in n and n.startswith("left out 1 ") for n in rep.notes)


def test_ravdess_merge_calm_and_no_dedupe(ravdess):
    idx = open_corpus(ravdess, merge_calm=True, dedupe=False)
    assert "calm" not in idx.labels and "calm" not in {c.label for c in idx.clips}
    assert {c.emotion for c in idx.clips if c.label == "neutral"} == {"neutral", "calm"}
    assert len(idx.clips) == 9 and not idx.report.duplicates


def test_load_corpus_skips_corrupt_and_goes_on(ravdess, caplog):
    with caplog.at_level(logging.WARNING):
        clips, audios, rep = load_corpus(ravdess, progress=False)
    corrupt = str(ravdess / "Actor_02/03-01-04-01-01-01-02.wav")
    assert len(clips) == len(audios) == 7 and corrupt not in {c.path for c in clips}
    assert "not readable" in rep.reasons()[corrupt] and rep.n_clips == 7
    assert corrupt in caplog.text
    flac = next(a for c, a in zip(clips, audios) if c.path.endswith(".flac"))
    assert flac.dtype == np.int16 and len(flac) == 3200  # 0.2 s at 48 kHz -> 16 kHz


@pytest.fixture
def tess(tmp_path):
    root = tmp_path / "TESS Toronto emotional speech set data"
    write(root / "OAF_angry/OAF_back_angry.wav")
    write(root / "OAF_Fear/OAF_bar_fear.wav")
    write(root / "OAF_Pleasant_surprise/OAF_base_ps.wav")
    write(root / "OAF_neutral/OA_bite_neutral.wav")  # odd file name in the original
    write(root / "YAF_pleasant_surprised/YAF_bath_PS.wav", sr=24414)
    write(root / "yaf_sad/YAF_bean_Sad.wav", fmt="AIFF")  # AIFF content named .wav
    write(root / "YAF_happy/YAF_date_happy.wav", sr=96000)
    write(root / "YAF_happy/YAF_date_bored.wav")  # not a TESS emotion
    return root


def test_tess_kaggle_names(tess):
    assert detect_corpus(tess) == "tess"
    idx = open_corpus(tess)
    got = {Path(c.path).name: (c.speaker, c.emotion, c.label, c.statement) for c in idx.clips}
    assert got == {
        "OAF_back_angry.wav": ("OAF", "angry", "angry", "back"),
        "OAF_bar_fear.wav": ("OAF", "fear", "fearful", "bar"),
        "OAF_base_ps.wav": ("OAF", "ps", "surprised", "base"),
        "OA_bite_neutral.wav": ("OAF", "neutral", "neutral", "bite"),
        "YAF_bath_PS.wav": ("YAF", "ps", "surprised", "bath"),
        "YAF_bean_Sad.wav": ("YAF", "sad", "sad", "bean"),
        "YAF_date_happy.wav": ("YAF", "happy", "happy", "date"),
    }
    assert "unknown TESS emotion" in idx.report.reasons()[str(tess / "YAF_happy/YAF_date_bored.wav")]
    assert idx.labels == COMMON7
    clips, audios, rep = load_corpus(idx, progress=False)
    lengths = {Path(c.path).name: len(a) for c, a in zip(clips, audios)}
    assert lengths["YAF_bean_Sad.wav"] == 3200 and lengths["YAF_date_happy.wav"] == 3200
    assert abs(lengths["YAF_bath_PS.wav"] - 3200) <= 1 and len(rep.skipped) == 1


def test_cremad(tmp_path):
    root = tmp_path / "CREMA-D"
    for name in ("1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1002_DFA_NEU_XX", "1002_TIE_FEA_LO"):
        write(root / "AudioWAV" / f"{name}.wav")
    write(root / "AudioWAV/1002_TIE_BOR_LO.wav")
    (root / "VideoDemographics.csv").write_text("ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,C,N\n1002,21,Female,C,N\n")
    assert detect_corpus(root) == "cremad"
    idx = open_corpus(root)
    got = sorted((c.speaker, c.sex, c.emotion, c.label, c.statement, c.intensity) for c in idx.clips)
    assert got == [("1001", "M", "ANG", "angry", "DFA", "XX"), ("1001", "M", "HAP", "happy", "IEO", "HI"),
                   ("1002", "F", "FEA", "fearful", "TIE", "LO"), ("1002", "F", "NEU", "neutral", "DFA", "XX")]
    assert len(idx.report.skipped) == 1 and "surprised" not in idx.labels


@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_savee_layouts(tmp_path, layout):
    root = tmp_path / "SAVEE"
    for spk, code in (("DC", "a01"), ("DC", "sa03"), ("JE", "su15"), ("KL", "n30"), ("JK", "f02")):
        write(root / ("ALL" if layout == "flat" else "AudioData") / (f"{spk}_{code}.wav" if layout == "flat"
                                                                      else f"{spk}/{code}.wav"))
    assert detect_corpus(root) == "savee"
    got = sorted((c.speaker, c.emotion, c.label, c.sex) for c in open_corpus(root).clips)
    assert got == [("DC", "a", "angry", "M"), ("DC", "sa", "sad", "M"), ("JE", "su", "surprised", "M"),
                   ("JK", "f", "fearful", "M"), ("KL", "n", "neutral", "M")]


def test_folder_layout_speaker_sources(tmp_path):
    root = tmp_path / "mine"
    write(root / "happy/alice_001.wav")
    write(root / "Fear/bob_002.flac")
    write(root / "stressed/carol/take1.wav")  # speaker sub-folder; own label kept
    write(root / "sad/take9.wav")  # no speaker information
    write(root / "sad/x.wav")
    write(root / "loose.wav")  # not in a label folder
    (root / "speakers.csv").write_text("path,speaker,sex\nsad/x.wav,dave,M\n")
    assert detect_corpus(root) == "folder"
    idx = open_corpus(root)
    got = sorted((c.emotion, c.label, c.speaker, c.sex) for c in idx.clips)
    assert got == [("Fear", "fearful", "bob", None), ("happy", "happy", "alice", None),
                   ("sad", "sad", "dave", "M"), ("sad", "sad", "unknown", None),
                   ("stressed", "stressed", "carol", None)]
    assert idx.labels == ("happy", "sad", "fearful", "stressed")
    assert "label" in idx.report.reasons()[str(root / "loose.wav")]


def test_manifest_fast_path_matches_scan(ravdess, tess, tmp_path):
    import csv
    import hashlib

    data = tmp_path / "data"
    data.mkdir()
    ravdess.rename(data / "ravdess")
    tess.rename(data / "tess")
    rows = []
    for corpus in ("ravdess", "tess"):
        for p in sorted((data / corpus).rglob("*.*")):
            if p.suffix in (".wav", ".flac"):
                rows.append({"path": p.relative_to(data).as_posix(), "corpus": corpus,
                             "sha256": hashlib.sha256(p.read_bytes()).hexdigest()})
    with open(data / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["path", "corpus", "sha256"])
        w.writeheader()
        w.writerows(rows)
    assert detect_corpus(data) == "manifest"
    fast = open_corpus(data, corpus="tess")
    slow = open_corpus(data / "tess")
    assert sorted(fast.clips, key=str) == sorted(slow.clips, key=str) and len(fast.clips) == 7
    both = open_corpus(data)
    assert {c.corpus for c in both.clips} == {"ravdess", "tess"} and len(both.report.duplicates) == 1


def test_to_common_and_errors(tmp_path):
    assert to_common("tess", "Pleasant_Surprise") == "surprised"
    assert to_common("ravdess", "calm", merge_calm=True) == "neutral"
    assert to_common("ravdess", "calm") == "calm"
    with pytest.raises(KeyError):
        to_common("savee", "x")
    with pytest.raises(ValueError, match="no audio"):
        detect_corpus(tmp_path)
    write(tmp_path / "a.wav")
    with pytest.raises(ValueError, match="unknown corpus"):
        open_corpus(tmp_path, corpus="emodb")


def test_label_counts(ravdess):
    assert label_counts(list(open_corpus(ravdess).clips)) == {"angry": 2, "calm": 2, "neutral": 2, "sad": 1,
                                                              "surprised": 1}  # corrupt "sad" found only on decode
