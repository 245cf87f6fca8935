"""RAVDESS: ``Actor_NN/MM-VC-EE-II-SS-RR-AA.(wav|flac)``; speech only (modality 03, vocal channel 01)."""
from __future__ import annotations

import re
from pathlib import Path

from .labels import RAVDESS_CODES, to_common
from .records import Clip
from .scan import Ignore, Skip

NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
INTENSITY = {"01": "normal", "02": "strong"}


def parse(path: Path, root: Path, merge_calm: bool) -> Clip:
    m = NAME.match(path.stem)
    if not m:
        raise Skip("name is not a RAVDESS MM-VC-EE-II-SS-RR-AA id")
    modality, channel, emo, inten, stmt, rep, actor = m.groups()
    if modality != "03":
        raise Ignore(f"non-audio-only files (modality {modality})")
    if channel == "02":
        raise Ignore("song files (vocal channel 02; speech only)")
    if channel != "01" or emo not in RAVDESS_CODES or inten not in INTENSITY:
        raise Skip(f"invalid RAVDESS code in {path.stem}")
    emotion = RAVDESS_CODES[emo]
    return Clip(path=str(path), corpus="ravdess", speaker=f"A{actor}", emotion=emotion,
                label=to_common("ravdess", emotion, merge_calm=merge_calm),
                sex="M" if int(actor) % 2 else "F",  # RAVDESS: odd actors male, even female
                statement=stmt, intensity=INTENSITY[inten], repetition=rep)


def looks_like(path: Path) -> bool:
    return bool(NAME.match(path.stem))
