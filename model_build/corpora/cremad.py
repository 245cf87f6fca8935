"""CREMA-D: ``AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav``, e.g. ``1001_DFA_ANG_XX.wav``.

Sex comes from ``VideoDemographics.csv`` (columns ActorID, Sex) when it is found under the root or
next to it; otherwise it is left unknown.
"""
from __future__ import annotations

import csv
import re
from functools import lru_cache
from pathlib import Path

from .labels import NATIVE_TO_COMMON, to_common
from .records import Clip
from .scan import Skip

NAME = re.compile(r"^(\d{4})_([A-Za-z]{3})_([A-Za-z]{3})_([A-Za-z]{2})$")


@lru_cache(maxsize=8)
def _demographics(root: Path) -> dict[str, str]:
    for base in (root, root.parent):
        for f in list(base.glob("VideoDemographics.csv")) + list(base.glob("*/VideoDemographics.csv")):
            with open(f, newline="", encoding="utf-8-sig") as fh:
                return {row["ActorID"].strip(): row["Sex"].strip()[:1].upper() for row in csv.DictReader(fh)}
    return {}


def parse(path: Path, root: Path, merge_calm: bool) -> Clip:
    m = NAME.match(path.stem)
    if not m:
        raise Skip("name is not a CREMA-D <actor>_<sentence>_<EMO>_<level> id")
    actor, sentence, emo, level = m.groups()
    if emo.lower() not in NATIVE_TO_COMMON["cremad"]:
        raise Skip(f"unknown CREMA-D emotion {emo!r}")
    return Clip(path=str(path), corpus="cremad", speaker=actor, emotion=emo.upper(),
                label=to_common("cremad", emo, merge_calm=merge_calm),
                sex=_demographics(root).get(actor), statement=sentence.upper(), intensity=level.upper())


def looks_like(path: Path) -> bool:
    return bool(NAME.match(path.stem))
