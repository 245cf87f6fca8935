"""ASED v1 (Amharic): ``<NN><Class>/<e><n>-<ss>-<rr>-<gg>-<kk>.(wav|flac)``.

``e<n>`` emotion letter and class number (n1 neutral, f2 fearful, h3 happy, s4 sad, a5 angry; one
original file has a capital ``S4``), ``ss`` sentence 01-07, ``rr`` repetition, ``gg`` sex (01 female,
02 male), ``kk`` speaker 01-65. Five files carry a male sex field among a female speaker's files
(speakers 09, 15, 21, 23, 25); the source's count of 25 female speakers needs them female, so the
speaker's sex is fixed per speaker, never per file.

The clips are padded with exact zeros to class-dependent lengths (duration gives the label away):
:func:`trim_trailing_zeros` runs on every decoded ASED clip (see ``catalog.POSTPROCESS``).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .labels import to_common
from .records import Clip
from .scan import Skip

NAME = re.compile(r"^([nfhsa])([1-5])-(\d{2})-(\d{2})-(0[12])-(\d{2})$", re.IGNORECASE)
EMOTIONS = {"n": ("1", "neutral"), "f": ("2", "fearful"), "h": ("3", "happy"), "s": ("4", "sad"),
            "a": ("5", "angry")}
FEMALE_SPEAKERS_WITH_MALE_FIELD = frozenset({"09", "15", "21", "23", "25"})


def parse(path: Path, root: Path, merge_calm: bool) -> Clip:
    m = NAME.match(path.stem)
    if not m:
        raise Skip("name is not an ASED <e><n>-ss-rr-gg-kk id")
    letter, num, stmt, rep, sex, spk = m.groups()
    letter = letter.lower()
    code, emotion = EMOTIONS[letter]
    if num != code:
        raise Skip(f"ASED emotion letter {letter!r} and class number {num} disagree")
    sex_code = "F" if (sex == "01" or spk in FEMALE_SPEAKERS_WITH_MALE_FIELD) else "M"
    return Clip(path=str(path), corpus="ased", speaker=f"S{spk}", emotion=emotion,
                label=to_common("ased", emotion, merge_calm=merge_calm), sex=sex_code,
                statement=stmt, repetition=rep)


def looks_like(path: Path) -> bool:
    return bool(NAME.match(path.stem))


def trim_trailing_zeros(pcm: np.ndarray) -> np.ndarray:
    """Drop the run of exact-zero samples at the end of a clip (ASED's digital padding).

    Only *exact* zeros are removed, so a quiet but real ending stays. An all-zero clip becomes empty
    (the caller reports it).
    """
    a = np.asarray(pcm)
    nz = np.flatnonzero(a)
    return a[: nz[-1] + 1] if nz.size else a[:0]
