"""Common emotion label set and each corpus's native names mapped onto it.

The common names are RAVDESS's eight classes. ``calm`` exists only in RAVDESS; whether it is kept
as its own class or merged into ``neutral`` is a modelling choice, so every mapping function takes
``merge_calm`` explicitly instead of deciding silently.
"""
from __future__ import annotations

RAVDESS8: tuple[str, ...] = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
"""RAVDESS's classes, in its emotion-code order (01..08)."""

ASED5: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fearful")
"""ASED's classes (no calm, disgust, surprised), in RAVDESS order."""

URDU4: tuple[str, ...] = ("neutral", "happy", "sad", "angry")
"""URDU's classes (no calm, fearful, disgust, surprised), in RAVDESS order."""

COMMON7: tuple[str, ...] = tuple(lab for lab in RAVDESS8 if lab != "calm")
"""Classes shared by RAVDESS (calm merged), TESS and SAVEE."""

CREMAD6: tuple[str, ...] = tuple(lab for lab in COMMON7 if lab != "surprised")
"""CREMA-D has no surprise."""

RAVDESS_CODES: dict[str, str] = {f"{i + 1:02d}": lab for i, lab in enumerate(RAVDESS8)}

# Native name (lower-cased) -> common label, per corpus. "folder" also serves users' own folders,
# so it accepts the spellings of all corpora.
NATIVE_TO_COMMON: dict[str, dict[str, str]] = {
    "ravdess": {lab: lab for lab in RAVDESS8},
    "tess": {
        "angry": "angry", "disgust": "disgust", "fear": "fearful", "happy": "happy",
        "neutral": "neutral", "ps": "surprised", "pleasant_surprise": "surprised",
        "pleasant_surprised": "surprised", "sad": "sad",
    },
    "cremad": {"ang": "angry", "dis": "disgust", "fea": "fearful", "hap": "happy", "neu": "neutral", "sad": "sad"},
    "savee": {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral", "sa": "sad", "su": "surprised"},
    # ASED and URDU already use RAVDESS words (their folders: 02Fearful, Angry, ...)
    "ased": {lab: lab for lab in ("neutral", "fearful", "happy", "sad", "angry")},
    "urdu": {lab: lab for lab in ("angry", "happy", "neutral", "sad")},
}
_ALIASES: dict[str, str] = {
    **{k: v for table in NATIVE_TO_COMMON.values() for k, v in table.items() if len(k) > 2},
    "calm": "calm", "fearful": "fearful", "surprised": "surprised", "surprise": "surprised",
    "anger": "angry", "disgusted": "disgust", "happiness": "happy", "sadness": "sad",
}
NATIVE_TO_COMMON["folder"] = _ALIASES
NATIVE_TO_COMMON["synth"] = {lab: lab for lab in RAVDESS8}


def to_common(corpus: str, native: str, *, merge_calm: bool = False) -> str:
    """Map a corpus's native emotion name to the common label set.

    ``corpus`` is one of ravdess, tess, cremad, savee, ased, urdu, folder, synth. For ``folder`` an unknown name is
    kept as given (lower-cased), so users can train on their own classes. Raises ``KeyError`` for a
    name the named corpus does not use.
    """
    key = native.strip().lower()
    table = NATIVE_TO_COMMON[corpus]
    if key in table:
        label = table[key]
    elif corpus == "folder":
        label = key
    else:
        raise KeyError(f"{corpus}: unknown emotion {native!r} (known: {sorted(table)})")
    return "neutral" if (merge_calm and label == "calm") else label


def label_set(corpus: str, *, merge_calm: bool = False) -> tuple[str, ...]:
    """The common labels a corpus can produce, in RAVDESS order."""
    base = {"ravdess": RAVDESS8, "synth": RAVDESS8, "tess": COMMON7, "savee": COMMON7, "cremad": CREMAD6,
            "ased": ASED5, "urdu": URDU4}
    labels = base.get(corpus, RAVDESS8)
    return tuple(lab for lab in labels if not (merge_calm and lab == "calm"))
