"""Corpus feature extraction in a process pool: same features for any worker count, and a cache
that stays correct when workers, whole runs, or a killed run write it at the same time."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.frontend import DEFAULT_CONFIG, compute_features, compute_features_float
from model_build.features import audio_key, fixed_point_features, float_twin_features

ROOT = Path(__file__).resolve().parents[1]


def _clips(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # uneven lengths (0.1-0.6 s) so batches finish out of order
    return [(rng.standard_normal(int(rng.integers(1600, 9600))) * 4000).astype(np.int16) for _ in range(n)]


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / DEFAULT_CONFIG.hash).iterdir())


def test_pool_equals_single_process_and_reference(tmp_path):
    clips = _clips(24)
    clips.append(clips[3].copy())  # a duplicate: computed once, returned twice
    one = fixed_point_features(clips, DEFAULT_CONFIG, cache_dir=None, progress=False, workers=1)
    two = fixed_point_features(clips, DEFAULT_CONFIG, cache_dir=tmp_path, progress=False, workers=2, batch=4)
    assert len(one) == len(two) == len(clips)
    for c, a, b in zip(clips, one, two):
        np.testing.assert_array_equal(a, compute_features(c, DEFAULT_CONFIG))
        np.testing.assert_array_equal(a, b)
    names = [p.name for p in _entries(tmp_path)]
    assert len(names) == 24 and all(n.endswith(".npz") for n in names)  # no temporary files left


def test_float_twin_in_pool(tmp_path):
    clips = _clips(6, seed=1)
    got = float_twin_features(clips, DEFAULT_CONFIG, cache_dir=tmp_path, progress=False, workers=2)
    for c, g in zip(clips, got):
        np.testing.assert_array_equal(g, compute_features_float(c, DEFAULT_CONFIG))


def test_cache_hit_and_torn_entry_recomputed(tmp_path):
    clips = _clips(8, seed=2)
    ref = fixed_point_features(clips, DEFAULT_CONFIG, cache_dir=tmp_path, progress=False, workers=2, batch=2)
    d = tmp_path / DEFAULT_CONFIG.hash
    torn = d / f"{audio_key(clips[5])}.npz"
    torn.write_bytes(torn.read_bytes()[:40])  # what a non-atomic writer killed mid-write leaves
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    again = fixed_point_features(clips, DEFAULT_CONFIG, cache_dir=tmp_path, progress=False, workers=2)
    for a, b in zip(ref, again):
        np.testing.assert_array_equal(a, b)
    after = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    assert after.keys() == before.keys()
    changed = {n for n in after if after[n] != before[n]}
    assert changed == {torn.name}  # only the torn entry was recomputed; the rest were cache hits


def test_concurrent_runs_share_one_cache(tmp_path):
    """Two processes, each with a pool of two workers, extract overlapping sets into one cache at
    the same time; both get exact features and every entry on disk is whole."""
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        from tests.test_model_features_parallel import _clips
        from edge_runtime.frontend import DEFAULT_CONFIG, compute_features
        from model_build.features import fixed_point_features
        if __name__ == "__main__":
            clips = _clips(30, seed=3)[int(sys.argv[1]):]
            got = fixed_point_features(clips, DEFAULT_CONFIG, cache_dir=sys.argv[2], progress=False,
                                       workers=2, batch=3)
            assert all(np.array_equal(g, compute_features(c, DEFAULT_CONFIG)) for c, g in zip(clips, got))
            print("ok", len(got))
        """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(start), str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for start in (0, 5)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.startswith("ok")
    entries = _entries(tmp_path)
    assert len(entries) == 30 and all(p.suffix == ".npz" for p in entries)
    clips = _clips(30, seed=3)
    for c in clips:
        with np.load(tmp_path / DEFAULT_CONFIG.hash / f"{audio_key(c)}.npz") as z:
            np.testing.assert_array_equal(z["f"], compute_features(c, DEFAULT_CONFIG))


@pytest.mark.parametrize("workers", ["0", "x"])
def test_bad_worker_env(monkeypatch, workers):
    from model_build.features import default_workers

    monkeypatch.setenv("SER_EDGE_WORKERS", workers)
    if workers == "0":
        assert default_workers() == 1
    else:
        with pytest.raises(ValueError, match="SER_EDGE_WORKERS"):
            default_workers()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_same_features_for_any_worker_count_and_start_method(monkeypatch, method):
    """fork: this process computes batches too, with forked children; spawn (what a process
    running TensorFlow uses): a ProcessPoolExecutor of fresh interpreters. Same features, in
    order, for 1, 2 and 3 workers, with batches handed out in the shrinking plan's order."""
    import model_build.features as features

    monkeypatch.setattr(features, "_start_method", lambda: method)
    clips = _clips(40, seed=4)
    clips.append(clips[0].copy())
    clips.append(np.zeros(100, np.int16))  # shorter than a frame: zero frames
    ref = [compute_features(c, DEFAULT_CONFIG) for c in clips]
    for workers in (1, 2, 3):
        got = fixed_point_features(clips, DEFAULT_CONFIG, cache_dir=None, progress=False, workers=workers, batch=8)
        assert len(got) == len(clips)
        for r, g in zip(ref, got):
            assert g.dtype == np.int32
            np.testing.assert_array_equal(g, r)
    import multiprocessing

    assert multiprocessing.active_children() == []  # every worker was joined


def test_plan_covers_every_clip_once_and_shrinks_towards_the_end():
    from model_build.features import _POOL_BATCH_MAX, _POOL_BATCH_MIN, _plan

    for n, workers, batch in [(600, 2, 64), (601, 3, 64), (37, 2, 4), (5, 2, 64), (1, 2, 64), (10, 1, 64)]:
        plan = _plan(n, workers, batch)
        assert [i for r in plan for i in r] == list(range(n))
        sizes = [len(r) for r in plan]
        assert max(sizes) <= min(batch, _POOL_BATCH_MAX if workers > 1 else batch)
        if workers > 1:
            assert sizes == sorted(sizes, reverse=True)  # large first, small last
            if n >= 4 * workers * _POOL_BATCH_MIN:
                assert sizes[-2] <= _POOL_BATCH_MIN  # the tail is a few clips, not 1/16 of the corpus
    assert [len(r) for r in _plan(600, 1, 64)] == [64] * 9 + [24]  # one process: as before


@pytest.mark.parametrize("where", [0, 10, -1])
def test_worker_error_is_raised_in_the_caller(where):
    """A clip the front end refuses raises the front end's own error from the call, whoever
    computed it, and no child is left behind. The first clip is long (the calling process is busy
    with the first batch for a while), so the child usually computes the batches after it."""
    import multiprocessing

    from edge_runtime.frontend import FrontendInputError

    clips = _clips(30, seed=5)
    clips[0] = _clips(1, seed=7)[0].repeat(200)  # ~1 min of audio
    clips[where] = clips[where].astype(np.float32)
    with pytest.raises(FrontendInputError, match="float"):
        fixed_point_features(clips, DEFAULT_CONFIG, cache_dir=None, progress=False, workers=2, batch=4)
    assert multiprocessing.active_children() == []


def test_forked_worker_hands_its_error_to_the_parent():
    """The child's side on its own (run in this process): batches in plan order until the shared
    counter passes the plan, features sent per batch, an error sent as the exception itself, then
    the end of the pipe."""
    import multiprocessing

    import model_build.features as features
    from edge_runtime.frontend import FrontendInputError

    ctx = multiprocessing.get_context("fork")
    clips = _clips(6, seed=8)
    clips[4] = clips[4].astype(np.float64)
    batches = [range(0, 2), range(2, 4), range(4, 6)]
    nxt, lock = ctx.RawValue("q", 0), ctx.Lock()
    r, w = ctx.Pipe(duplex=False)
    features._FORKED_AUDIOS = clips
    try:
        features._forked_worker("", DEFAULT_CONFIG, None, batches, nxt, lock, w)  # pipe: ~7 KB, fits
    finally:
        features._FORKED_AUDIOS = None
    got = [r.recv() for _ in range(3)]
    with pytest.raises(EOFError):
        r.recv()
    assert [b for b, _ in got] == [0, 1, -1]
    for b, feats in got[:2]:
        for i, f in zip(batches[b], feats):
            np.testing.assert_array_equal(f, compute_features(clips[i], DEFAULT_CONFIG))
    assert isinstance(got[2][1], FrontendInputError) and "float64" in str(got[2][1])
    assert nxt.value == 3  # it stopped at the bad batch


def test_blas_threads_restored_after_a_pool_call():
    """The pool limits BLAS to one thread while it runs (in this process and, inherited, its
    children) and gives the caller its own setting back."""
    from threadpoolctl import threadpool_info

    before = [m["num_threads"] for m in threadpool_info()]
    fixed_point_features(_clips(12, seed=6), DEFAULT_CONFIG, cache_dir=None, progress=False, workers=2, batch=4)
    assert [m["num_threads"] for m in threadpool_info()] == before


def test_a_killed_worker_is_an_error_not_a_hang(monkeypatch):
    """A child killed mid-batch (as the OOM killer would) makes the call fail with a clear error
    once the other batches are done, instead of waiting forever for the lost batch. The fork path
    is forced: earlier tests of the suite import TensorFlow, which would otherwise select spawn."""
    import multiprocessing
    import os
    import signal
    import threading
    import time

    # ~40 s of audio each, one clip per batch: ~25 ms batches with microseconds between them, and
    # enough of them that the child is still busy when it is killed
    clips = [c.repeat(120) for c in _clips(24, seed=9)]
    killed = []

    def kill_child():
        t_end = time.monotonic() + 20
        while not killed and time.monotonic() < t_end:
            kids = multiprocessing.active_children()
            if kids:
                time.sleep(0.1)  # into one of its batches
                os.kill(kids[0].pid, signal.SIGKILL)
                killed.append(kids[0].pid)
            time.sleep(0.005)

    import model_build.features as features

    monkeypatch.setattr(features, "_start_method", lambda: "fork")
    t = threading.Thread(target=kill_child)
    t.start()
    try:
        with pytest.raises(RuntimeError, match=r"worker died \(exit codes \[-9\]\)"):
            fixed_point_features(clips, DEFAULT_CONFIG, cache_dir=None, progress=False, workers=2, batch=1)
    finally:
        t.join()
    assert killed and multiprocessing.active_children() == []
