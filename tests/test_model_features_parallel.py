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
