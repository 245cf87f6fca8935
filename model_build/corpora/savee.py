"""SAVEE: flat ``DC_a01.wav`` (Kaggle) or ``AudioData/DC/a01.wav`` (original). Four male speakers."""
from __future__ import annotations

import re
from pathlib import Path

from .labels import to_common
from .records import Clip
from .scan import Skip

FLAT = re.compile(r"^([A-Za-z]{2})_(sa|su|a|d|f|h|n)(\d{2})$", re.IGNORECASE)
NESTED = re.compile(r"^(sa|su|a|d|f|h|n)(\d{2})$", re.IGNORECASE)
SPEAKER_DIR = re.compile(r"^[A-Za-z]{2}$")


def parse(path: Path, root: Path, merge_calm: bool) -> Clip:
    if m := FLAT.match(path.stem):
        speaker, code, num = m.groups()
    elif (m := NESTED.match(path.stem)) and SPEAKER_DIR.match(path.parent.name):
        (code, num), speaker = m.groups(), path.parent.name
    else:
        raise Skip("name is not a SAVEE <SPK>_<code><NN> or <SPK>/<code><NN> id")
    code = code.lower()
    return Clip(path=str(path), corpus="savee", speaker=speaker.upper(), emotion=code,
                label=to_common("savee", code, merge_calm=merge_calm), sex="M", statement=num)


def looks_like(path: Path) -> bool:
    return bool(FLAT.match(path.stem) or (NESTED.match(path.stem) and SPEAKER_DIR.match(path.parent.name)))
