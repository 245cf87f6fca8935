"""Find out which corpus a folder holds, scan it, and decode it (skipping bad files, with a report)."""
from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import ased, cremad, folder, ravdess, savee, tess, urdu
from .labels import label_set
from .records import Clip, LoadReport, log
from .scan import CorpusIndex, list_audio_files, scan_files

PARSERS = {"ravdess": ravdess.parse, "tess": tess.parse, "cremad": cremad.parse, "savee": savee.parse,
           "ased": ased.parse, "urdu": urdu.parse, "folder": folder.parse}
_DETECTORS = {"ravdess": ravdess.looks_like, "cremad": cremad.looks_like, "tess": tess.looks_like,
              "savee": savee.looks_like, "ased": ased.looks_like, "urdu": urdu.looks_like}
# Applied to every decoded clip of a corpus before anything else sees it (ASED's zero padding
# carries the label through the clip length, so it must never reach features).
POSTPROCESS = {"ased": ased.trim_trailing_zeros}
MANIFEST_COLUMNS = {"path", "corpus"}


def _manifest(root: Path) -> Path | None:
    f = root / "manifest.csv"
    if not f.is_file():
        return None
    with open(f, newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh), [])
    return f if MANIFEST_COLUMNS <= set(header) else None


def detect_corpus(root: str | os.PathLike) -> str:
    """Name the layout under ``root``: ravdess, tess, cremad, savee, ased, urdu, folder, or manifest.

    ``manifest`` means ``root/manifest.csv`` (columns path, corpus[, sha256]) lists the files, as in
    the project's shared data folder. Otherwise the corpus whose naming scheme matches most audio
    files (at least half) wins; failing that, audio in sub-folders means the folder-per-label layout.
    Raises ``ValueError`` when ``root`` holds no audio.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    if _manifest(root):
        return "manifest"
    files = list_audio_files(root)
    if not files:
        raise ValueError(f"{root}: no audio files (.wav/.flac/.aif/.aiff/.ogg) found")
    votes = {name: sum(map(hit, files)) for name, hit in _DETECTORS.items()}
    best = max(votes, key=votes.get)
    if votes[best] * 2 >= len(files):
        return best
    if any(len(p.relative_to(root).parts) >= 2 for p in files):
        return "folder"
    raise ValueError(f"{root}: audio files match no known corpus layout and are not in <label>/ folders")


def open_corpus(root: str | os.PathLike, corpus: str = "auto", *, merge_calm: bool = False,
                dedupe: bool = True) -> CorpusIndex:
    """Scan ``root`` into clips without decoding audio.

    ``corpus``: ``auto`` (see :func:`detect_corpus`), or ravdess / tess / cremad / savee / ased / urdu /
    folder.
    With a ``manifest.csv`` under ``root`` (auto-detected), ``corpus`` selects the manifest's rows of
    that corpus (``auto``: all rows). ``merge_calm`` maps RAVDESS calm to neutral. ``dedupe`` drops
    byte-identical files (sha256), keeping the first by path. Unusable files are listed in the
    returned index's ``report``.
    """
    root = Path(root)
    folder._speakers_csv.cache_clear()  # these side files may change between calls
    cremad._demographics.cache_clear()
    if corpus != "auto" and corpus not in PARSERS:
        raise ValueError(f"unknown corpus {corpus!r}; expected auto or one of {sorted(PARSERS)}")
    if root.is_dir() and _manifest(root):
        return _open_manifest(root, None if corpus == "auto" else corpus, merge_calm, dedupe)
    name = detect_corpus(root) if corpus == "auto" else corpus
    clips, report = scan_files(name, root, list_audio_files(root), PARSERS[name],
                               merge_calm=merge_calm, dedupe=dedupe)
    return CorpusIndex(name, str(root), tuple(clips), report, _labels(name, clips, merge_calm))


def _labels(name: str, clips: list[Clip], merge_calm: bool) -> tuple[str, ...]:
    if name != "folder":
        return label_set(name, merge_calm=merge_calm)
    known = label_set("ravdess", merge_calm=merge_calm)
    present = {c.label for c in clips}
    return tuple(lab for lab in known if lab in present) + tuple(sorted(present - set(known)))


def _open_manifest(root: Path, only: str | None, merge_calm: bool, dedupe: bool) -> CorpusIndex:
    """Fast path: the manifest lists the files and their sha256, so nothing is walked or hashed."""
    with open(root / "manifest.csv", newline="", encoding="utf-8-sig") as fh:
        rows = [r for r in csv.DictReader(fh) if only is None or r["corpus"] == only]
    if not rows:
        raise ValueError(f"{root / 'manifest.csv'}: no rows for corpus {only!r}")
    clips: list[Clip] = []
    merged = LoadReport(corpus=only or "manifest", root=str(root))
    for name in sorted({r["corpus"] for r in rows}):
        if name not in PARSERS:
            merged.note(f"left out rows of unknown corpus {name!r}")
            continue
        mine = [r for r in rows if r["corpus"] == name]
        files = [root / r["path"] for r in mine]
        hashes = {root / r["path"]: r["sha256"] for r in mine if r.get("sha256")}
        c, rep = scan_files(name, root / name if (root / name).is_dir() else root, files, PARSERS[name],
                            merge_calm=merge_calm, dedupe=dedupe, known_hashes=hashes)
        clips += c
        merged.n_files += rep.n_files
        merged.skipped += rep.skipped
        merged.duplicates += rep.duplicates
        merged.notes += [f"{name}: {n}" for n in rep.notes]
    merged.n_clips = len(clips)
    names = sorted({c.corpus for c in clips})
    labels = label_set(names[0], merge_calm=merge_calm) if len(names) == 1 else label_set("ravdess", merge_calm=merge_calm)
    return CorpusIndex(only or "manifest", str(root), tuple(clips), merged, labels)


def load_corpus(source: str | os.PathLike | CorpusIndex, corpus: str = "auto", *, merge_calm: bool = False,
                dedupe: bool = True, sr: int = 16000, progress: bool | None = None,
                ) -> tuple[list[Clip], list[np.ndarray], LoadReport]:
    """Scan (unless given a :class:`CorpusIndex`) and decode every clip to int16 mono at ``sr``.

    Files that fail to decode are skipped, logged and added to the report; the rest load. Per-corpus
    clean-up (:data:`POSTPROCESS`: ASED's trailing zero padding is trimmed) runs on each clip. Returns
    ``(clips, audios, report)`` with ``audios[i]`` the samples of ``clips[i]``. ``progress``: tqdm
    bar on stderr (default: only for more than 200 files).
    """
    from tqdm.auto import tqdm

    from edge_runtime.audio_io import AudioReadError, load_audio

    index = source if isinstance(source, CorpusIndex) else open_corpus(source, corpus, merge_calm=merge_calm,
                                                                        dedupe=dedupe)
    report = replace(index.report, skipped=list(index.report.skipped), duplicates=list(index.report.duplicates),
                     notes=list(index.report.notes))
    show = len(index.clips) > 200 if progress is None else progress
    clips, audios = [], []
    for clip in tqdm(index.clips, desc=f"loading {index.name}", unit="file", disable=not show):
        try:
            audio = load_audio(clip.path, sr)
        except AudioReadError as e:
            report.skip(clip.path, e.reason)
            continue
        post = POSTPROCESS.get(clip.corpus)
        if post is not None:
            audio = post(audio)
            if audio.size == 0:
                report.skip(clip.path, "no audio left after trimming the zero padding (all samples 0)")
                continue
        audios.append(audio)
        clips.append(clip)
    report.n_clips = len(clips)
    if report.skipped:
        log.warning("%s: %d of %d files skipped (see report.skipped)", index.name, len(report.skipped),
                    report.n_files)
    return clips, audios, report


def describe(clips: list[Clip]) -> str:
    """One line per corpus: clip count, speakers, and clips per label."""
    out = []
    for name in sorted({c.corpus for c in clips}):
        mine = [c for c in clips if c.corpus == name]
        per = Counter(c.label for c in mine)
        out.append(f"{name}: {len(mine)} clips, {len({c.speaker for c in mine})} speakers, "
                   + ", ".join(f"{k} {v}" for k, v in sorted(per.items())))
    return "\n".join(out)
