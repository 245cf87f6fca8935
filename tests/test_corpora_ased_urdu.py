"""ASED and URDU loaders on tiny generated corpora with the real corpora's quirks."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

from model_build.corpora import detect_corpus, label_set, load_corpus, open_corpus, speaker_folds
from model_build.corpora.ased import trim_trailing_zeros


def write(path: Path, seconds: float = 0.3, pad_zeros_s: float = 0.0, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(str(path).encode()))
    x = 0.2 * np.sin(2 * np.pi * 180 * np.arange(int(sr * seconds)) / sr) + rng.normal(0, 0.01, int(sr * seconds))
    x = np.concatenate([x, np.zeros(int(sr * pad_zeros_s))])
    sf.write(path, x, sr, subtype="PCM_16")
    return path


def make_ased(root: Path) -> Path:
    folders = {"n": "01Neutral", "f": "02Fearful", "h": "03Happy", "s": "04Sad", "a": "05Angry"}
    for spk, sex in (("01", "01"), ("02", "02"), ("09", "01")):
        for i, (e, folder) in enumerate(folders.items()):
            # class-dependent zero padding, as in the original release
            write(root / folder / f"{e}{i + 1}-01-01-{sex}-{spk}.wav", pad_zeros_s=0.1 * (i + 1))
    write(root / "04Sad/s4-04-01-02-09.wav")  # speaker 09's stray male sex field
    write(root / "04Sad/S4-04-02-01-01.wav")  # capital letter in the original
    write(root / "05Angry/a5-01-01-01-xx.wav")  # not an ASED name
    return root


def test_ased_scan_trim_and_sex(tmp_path):
    root = make_ased(tmp_path / "ASED")
    assert detect_corpus(root) == "ased"
    idx = open_corpus(root)
    assert idx.labels == label_set("ased") == ("neutral", "happy", "sad", "angry", "fearful")
    assert len(idx.clips) == 17 and len(idx.report.skipped) == 1
    assert {c.sex for c in idx.clips if c.speaker == "S09"} == {"F"}  # fixed per speaker
    assert {c.sex for c in idx.clips if c.speaker == "S02"} == {"M"}
    assert any(Path(c.path).name.startswith("S4") and c.label == "sad" for c in idx.clips)
    clips, audios, _ = load_corpus(idx)
    for c, a in zip(clips, audios):
        assert a[-1] != 0  # every trailing zero run is gone...
        assert len(a) <= int(0.3 * 16000) + 1  # ...so no clip's length carries its class
    lens = {len(a) for a in audios}
    assert max(lens) - min(lens) < 50


def test_trim_trailing_zeros_keeps_inner_zeros():
    x = np.array([0, 3, 0, 0, -2, 0, 0, 0], np.int16)
    np.testing.assert_array_equal(trim_trailing_zeros(x), [0, 3, 0, 0, -2])
    assert trim_trailing_zeros(np.zeros(5, np.int16)).size == 0


def test_ased_all_zero_clip_is_reported_and_skipped(tmp_path):
    root = make_ased(tmp_path / "ASED")
    sf.write(root / "01Neutral/n1-02-01-01-01.wav", np.zeros(800), 16000, subtype="PCM_16")
    clips, audios, rep = load_corpus(root)
    assert any("all samples 0" in s.reason for s in rep.skipped)
    assert len(clips) == len(audios) == 17


def test_urdu_scan_speakers_and_folds(tmp_path):
    root = tmp_path / "URDU"
    n = 0
    for folder, letter in (("Angry", "A"), ("Happy", "H"), ("Neutral", "N"), ("Sad", "S")):
        for spk in ("SM1", "SF2", "SM3", "SF4"):
            n += 1
            write(root / folder / f"{spk}_F{n}_{letter}0{n}.wav", sr=44100)
    write(root / "Sad/SM1_F99_A099.wav")  # the name says angry in the Sad folder: refused
    assert detect_corpus(root) == "urdu"
    clips, audios, rep = load_corpus(root)
    assert len(clips) == 16 and len(rep.skipped) == 1 and "folder says" in rep.skipped[0].reason
    assert {c.speaker for c in clips} == {"SM1", "SF2", "SM3", "SF4"}
    assert {c.sex for c in clips if c.speaker == "SF2"} == {"F"}
    assert all(len(a) == int(0.3 * 16000) for a in audios)  # resampled from 44.1 kHz
    for tr, te in speaker_folds(clips, k=2, seed=0):
        assert not {clips[i].speaker for i in tr} & {clips[i].speaker for i in te}


def test_manifest_reads_ased_and_urdu(tmp_path):
    root = tmp_path / "data"
    make_ased(root / "ased")
    write(root / "urdu/Angry/SM1_F1_A01.wav")
    rows = ["path,corpus,emotion,speaker,sex,duration_s,sha256"]
    rows += [f"{p.relative_to(root)},ased,x,x,F,0,"
             for p in sorted((root / "ased").rglob("*.wav")) if not p.name.endswith("xx.wav")]
    rows += ["urdu/Angry/SM1_F1_A01.wav,urdu,angry,URDU_SM1,M,0,"]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    assert {c.corpus for c in open_corpus(root, "ased").clips} == {"ased"}
    assert [c.label for c in open_corpus(root, "urdu").clips] == ["angry"]
