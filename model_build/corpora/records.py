"""Records shared by all corpus loaders: one clip, and the report of what was skipped and why."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("model_build.corpora")

AUDIO_EXTENSIONS = (".wav", ".flac", ".aif", ".aiff", ".ogg")


@dataclass(frozen=True)
class Clip:
    """One utterance of a corpus. Audio is decoded lazily by :meth:`load`.

    ``emotion`` is the corpus's own name for the class (``ANG``, ``ps``, ``sa`` ...); ``label`` is
    the common label (see :mod:`model_build.corpora.labels`). ``speaker`` is unique within a corpus;
    group by ``(corpus, speaker)`` when mixing corpora (see :attr:`speaker_key`).
    """

    path: str
    corpus: str
    speaker: str
    emotion: str
    label: str
    sex: str | None = None  # "M" / "F" when the corpus says so
    statement: str | None = None  # sentence or word id ("01", "DFA", "bite", ...)
    intensity: str | None = None  # "normal"/"strong" (RAVDESS), "LO"/"MD"/"HI"/"XX" (CREMA-D)
    repetition: str | None = None
    sha256: str | None = None

    @property
    def speaker_key(self) -> str:
        """``corpus/speaker``: a speaker id that stays unique when corpora are combined."""
        return f"{self.corpus}/{self.speaker}"

    def load(self, sr: int = 16000) -> np.ndarray:
        """Decode this clip to int16 mono at ``sr`` Hz (raises ``AudioReadError`` naming the path)."""
        from edge_runtime.audio_io import load_audio

        return load_audio(self.path, sr)


@dataclass(frozen=True)
class SkippedItem:
    path: str
    reason: str


@dataclass
class LoadReport:
    """What a scan or load did: files seen, clips kept, and every skipped file with its reason.

    ``duplicates`` pairs each dropped byte-identical file with the file it duplicates (those files
    also appear in ``skipped``). ``notes`` holds counted, expected exclusions such as RAVDESS song
    files, which are not errors.
    """

    corpus: str
    root: str
    n_files: int = 0
    n_clips: int = 0
    skipped: list[SkippedItem] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def skip(self, path: object, reason: str, *, warn: bool = True) -> None:
        """Record a skipped file (and log a warning naming it)."""
        self.skipped.append(SkippedItem(str(path), reason))
        if warn:
            log.warning("skipping %s: %s", path, reason)

    def note(self, text: str) -> None:
        self.notes.append(text)
        log.info("%s: %s", self.corpus, text)

    def reasons(self) -> dict[str, str]:
        """``{path: reason}`` for every skipped file."""
        return {s.path: s.reason for s in self.skipped}

    def summary(self) -> str:
        lines = [f"{self.corpus} at {self.root}: {self.n_files} audio files, {self.n_clips} clips kept, "
                 f"{len(self.skipped)} skipped ({len(self.duplicates)} duplicates)"]
        lines += [f"  skipped {s.path}: {s.reason}" for s in self.skipped]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def label_counts(clips: list[Clip]) -> dict[str, int]:
    """Clips per common label, sorted by label."""
    return dict(sorted(Counter(c.label for c in clips).items()))
