"""TESS: ``<OAF|YAF>_<emotion>/<SPK>_<word>_<emotion>.(wav|flac)``, any capitalisation.

The speaker comes from the folder (one original file is named ``OA_bite_neutral``), the emotion from
the file name's last ``_`` field (Kaggle's folders say ``OAF_Pleasant_surprise`` / ``YAF_pleasant_
surprised`` while the files say ``ps``).
"""
from __future__ import annotations

import re
from pathlib import Path

from .labels import NATIVE_TO_COMMON, to_common
from .records import Clip
from .scan import Skip

FOLDER = re.compile(r"^(OAF|YAF)_", re.IGNORECASE)


def parse(path: Path, root: Path, merge_calm: bool) -> Clip:
    m = FOLDER.match(path.parent.name) or FOLDER.match(path.name)
    if not m:
        raise Skip("not in an OAF_*/YAF_* folder")
    parts = path.stem.split("_")
    emotion = parts[-1].lower()
    if len(parts) < 2 or emotion not in NATIVE_TO_COMMON["tess"]:
        raise Skip(f"unknown TESS emotion {parts[-1]!r} in file name")
    return Clip(path=str(path), corpus="tess", speaker=m.group(1).upper(), emotion=emotion,
                label=to_common("tess", emotion, merge_calm=merge_calm), sex="F",  # both TESS talkers are women
                statement="_".join(parts[1:-1]).lower() or None)


def looks_like(path: Path) -> bool:
    return bool(FOLDER.match(path.parent.name))
