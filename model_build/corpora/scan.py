"""Generic corpus scan: list audio files, parse each name into a Clip, drop empty and duplicate files.

Each corpus module supplies a ``parse(path, root, merge_calm) -> Clip`` that raises :class:`Skip`
for a file that should be there but is unusable (reported as a problem) or :class:`Ignore` for an
expected exclusion (counted in the report's notes, e.g. RAVDESS song files).
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

from .records import AUDIO_EXTENSIONS, Clip, LoadReport


class Skip(Exception):
    """The file is not a usable clip of this corpus; the message is the reason."""


class Ignore(Exception):
    """The file is deliberately left out (not an error); the message is the counted note."""


Parser = Callable[[Path, Path, bool], Clip]


@dataclass(frozen=True)
class CorpusIndex:
    """A scanned corpus: clips (audio not decoded yet) and the report of what was left out."""

    name: str
    root: str
    clips: tuple[Clip, ...]
    report: LoadReport
    labels: tuple[str, ...]


def list_audio_files(root: Path) -> list[Path]:
    """Audio files under ``root`` (any depth, sorted; hidden files such as macOS ``._x.wav`` skipped)."""
    return sorted(p for p in root.rglob("*")
                  if p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".") and p.is_file())


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def scan_files(corpus: str, root: Path, files: Iterable[Path], parse: Parser, *, merge_calm: bool,
               dedupe: bool, known_hashes: dict[Path, str] | None = None) -> tuple[list[Clip], LoadReport]:
    """Parse ``files`` into clips; report unusable, empty and (if ``dedupe``) byte-identical files.

    The first file (in sorted path order) of a set of identical files is kept. ``known_hashes``
    (e.g. from a manifest) saves hashing those files.
    """
    report = LoadReport(corpus=corpus, root=str(root))
    ignored: Counter[str] = Counter()
    clips: list[Clip] = []
    first_by_hash: dict[str, str] = {}
    for path in files:
        report.n_files += 1
        try:
            clip = parse(path, root, merge_calm)
        except Ignore as e:
            ignored[str(e)] += 1
            continue
        except Skip as e:
            report.skip(path, str(e))
            continue
        if not path.is_file():
            report.skip(path, "file not found")
            continue
        if path.stat().st_size == 0:  # before hashing: all empty files would look identical
            report.skip(path, "empty file (0 bytes)")
            continue
        if dedupe:
            digest = (known_hashes or {}).get(path) or file_sha256(path)
            if digest in first_by_hash:
                report.duplicates.append((str(path), first_by_hash[digest]))
                report.skip(path, f"byte-identical duplicate of {first_by_hash[digest]}")
                continue
            first_by_hash[digest] = str(path)
            clip = replace(clip, sha256=digest)
        clips.append(clip)
    for what, n in sorted(ignored.items()):
        report.note(f"left out {n} {what}")
    report.n_clips = len(clips)
    return clips, report
