"""URDU (natural Urdu talk-show speech): ``<Class>/S<G><id>_F<n>_<E><m>.(wav|flac)``.

``G`` sex (M/F), ``id`` speaker number, ``F<n>`` the speaker's n-th file in the class, ``E`` the class
letter (A angry, H happy, N neutral, S sad), ``m`` a running number. The speaker id is ``S<G><id>``
(e.g. ``SM1``). Speaker and class are confounded in this corpus (most speakers occur in one class
only): use it as extra training data or an out-of-domain check, always speaker-grouped.
"""
from __future__ import annotations

import re
from pathlib import Path

from .labels import to_common
from .records import Clip
from .scan import Skip

NAME = re.compile(r"^S([MF])(\d+)_F(\d+)_([AHNS])(\d+)$", re.IGNORECASE)
EMOTIONS = {"a": "angry", "h": "happy", "n": "neutral", "s": "sad"}


def parse(path: Path, root: Path, merge_calm: bool) -> Clip:
    m = NAME.match(path.stem)
    if not m:
        raise Skip("name is not an URDU S<G><id>_F<n>_<E><m> id")
    sex, spk, nth, letter, _ = m.groups()
    emotion = EMOTIONS[letter.lower()]
    folder = path.parent.name.lower()
    if folder in EMOTIONS.values() and folder != emotion:
        raise Skip(f"file name says {emotion!r} but folder says {folder!r}")
    return Clip(path=str(path), corpus="urdu", speaker=f"S{sex.upper()}{int(spk)}", emotion=emotion,
                label=to_common("urdu", emotion, merge_calm=merge_calm), sex=sex.upper(),
                statement=None, repetition=nth)


def looks_like(path: Path) -> bool:
    return bool(NAME.match(path.stem))
