"""Front-end features for training clips: fixed-point (what the device computes), cached on disk.

Every model input is the fixed-point front end's output (``edge_runtime.frontend``) converted to
real log2 units (``q / 2**frac_bits``); the float64 twin is computed only to measure what the
fixed-point arithmetic costs. Features are cached per clip as ``<cache>/<cfg.hash>/<sha1>.npz``
where ``sha1`` hashes the int16 PCM bytes, so augmented copies and re-runs reuse work and any
front-end change (new hash) invalidates everything automatically. A corpus is computed by one
process per core (the calling process and forked children; a spawned pool when TensorFlow is
loaded); every cache entry is written to a unique temporary file and renamed into place, so
concurrent workers, concurrent runs and killed runs never leave a torn entry.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import zipfile
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np


def default_cache_dir() -> Path:
    """``$SER_EDGE_CACHE`` or ``~/.cache/ser-edge`` (features live under ``features/``)."""
    return Path(os.environ.get("SER_EDGE_CACHE", Path.home() / ".cache" / "ser-edge")) / "features"


def audio_key(pcm: np.ndarray) -> str:
    """sha1 of the int16 PCM bytes (the cache key, together with the front-end hash)."""
    return hashlib.sha1(np.ascontiguousarray(pcm, dtype=np.int16).tobytes()).hexdigest()


def to_real(q: np.ndarray, cfg) -> np.ndarray:
    """Fixed-point features (Q``frac_bits``) -> float32 log2 units (the model's input units).

    One float32 rounding of ``q`` then an exact power-of-two scale: bit for bit what dividing in
    float64 and rounding once to float32 gives, without the float64 copies (training windows run to GBs)."""
    out = np.asarray(q).astype(np.float32)
    out *= np.float32(1.0 / (1 << cfg.frac_bits))
    return out


def default_workers() -> int:
    """``$SER_EDGE_WORKERS`` or the number of cores this process may run on."""
    env = os.environ.get("SER_EDGE_WORKERS", "").strip()
    if env:
        if not env.isdigit():
            raise ValueError(f"SER_EDGE_WORKERS must be a whole number of processes, got {env!r}")
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _compute(kind: str, clips: list[np.ndarray], cfg) -> list[np.ndarray]:
    """The features of ``kind`` ("" fixed point, "_f64" float twin) for a batch of clips."""
    if kind == "_f64":
        from edge_runtime.frontend import compute_features_float

        return [compute_features_float(x, cfg) for x in clips]
    from edge_runtime.frontend import compute_features_many

    return compute_features_many(list(clips), cfg)


def _store(path: Path, f: np.ndarray) -> None:
    """Write one cache entry atomically: a uniquely named temporary file in the same directory,
    then ``os.replace``. Readers never see a half-written file, and two writers of the same key
    (two processes, two runs sharing a cache) never write into each other's temporary file: the
    last rename wins and both wrote the same bytes."""
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, f=f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _load(path: Path) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["f"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # damaged (e.g. by an older, non-atomic
        return None  # version killed mid-write): recompute


def _work(kind: str, cfg, clips: list[np.ndarray], cache: Path | None) -> list[np.ndarray]:
    """One batch, whole: hash each clip, take what the cache has, compute the rest in one
    vectorised call, store it. Runs in a worker process, so hashing and cache reads are parallel
    too (no serial pass over the corpus in the parent)."""
    keys = [audio_key(c) for c in clips]
    out: list[np.ndarray | None] = [None] * len(clips)
    first: dict[str, int] = {}  # key -> the index that computes it (a duplicate is computed once)
    for i, k in enumerate(keys):
        if k in first:
            continue
        first[k] = i
        if cache is not None:
            out[i] = _load(cache / f"{k}{kind}.npz")
    todo = [i for i in first.values() if out[i] is None]
    if todo:
        for i, f in zip(todo, _compute(kind, [clips[i] for i in todo], cfg)):
            out[i] = f
            if cache is not None:
                _store(cache / f"{keys[i]}{kind}.npz", f)
    return [out[first[k]] for k in keys]  # type: ignore[misc]


# The clips of the call in progress, for workers forked from this process: they inherit the list
# (copy-on-write) and receive only indices, instead of every clip pickled through a pipe.
_FORKED_AUDIOS: Sequence[np.ndarray] | None = None

#: Largest batch (clips) when several processes share a corpus, and the smallest one the plan ends
#: with. Batches shrink towards the end of the corpus so that the processes finish together: the
#: last batch someone is still computing while the others are idle is a few clips (~10 ms), not a
#: sixteenth of the corpus.
_POOL_BATCH_MAX = 32
_POOL_BATCH_MIN = 4


def _plan(n: int, workers: int, batch: int) -> list[range]:
    """Contiguous batches of ``n`` clips, in the order they are handed out.

    One process: batches of ``batch`` (at most an eighth of the corpus). Several: guided
    self-scheduling, i.e. each batch is a fraction of what is left (``left / (2 * workers)``)
    between :data:`_POOL_BATCH_MIN` and ``min(batch, _POOL_BATCH_MAX)`` clips, so there are few
    batches while much is left (little per-batch overhead) and small ones at the end (a short
    tail)."""
    if workers == 1:
        per = max(1, min(batch, -(-n // 8)))
        return [range(s, min(n, s + per)) for s in range(0, n, per)]
    hi = max(1, min(batch, _POOL_BATCH_MAX))
    lo = min(hi, _POOL_BATCH_MIN)
    out, s = [], 0
    while s < n:
        per = max(lo, min(hi, -(-(n - s) // (2 * workers))))
        out.append(range(s, min(n, s + per)))
        s += per
    return out


def _init_worker() -> None:
    """One BLAS thread per worker: the front end's DCT is a float64 matrix product, and OpenBLAS
    would otherwise start a thread per core in every worker (2 workers x 2 threads on 2 cores
    made the pool no faster than one process for some batch sizes). For the rest of the process."""
    _limit_blas()


_BLAS = None  # this process's threadpoolctl controller: finding the libraries takes ~7 ms, once


def _limit_blas():
    """Limit the BLAS libraries loaded in this process to one thread; returns the limiter (its
    ``restore_original_limits()`` undoes it), or ``None`` without threadpoolctl (optional: the
    pool then works, just oversubscribed)."""
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            return None
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1)


def _start_method() -> str:
    import multiprocessing
    import sys

    # fork starts a worker in milliseconds and shares the clips, but a child forked from a process
    # that runs TensorFlow's native threads inherits their locks in whatever state they were (a
    # classic deadlock): then spawn, whose workers import numpy and the front end only.
    if "tensorflow" in sys.modules or "fork" not in multiprocessing.get_all_start_methods():
        return "spawn"
    return "fork"


def _take_next(nxt, lock) -> int:
    """The next batch number of the plan from the counter shared by the caller and its children."""
    with lock:
        b = nxt.value
        nxt.value = b + 1
    return b


def _forked_worker(kind: str, cfg, cache: Path | None, batches: list[range], nxt, lock, conn) -> None:
    """A forked worker's life: take the next batch of the plan from the shared counter, compute
    it, send its features to the parent; until the plan is exhausted. A thread sends while the
    next batch is computed, so the worker never waits for the parent (which computes batches too
    and reads only between them). An error is sent as the exception itself."""
    from concurrent.futures import ThreadPoolExecutor

    sender = ThreadPoolExecutor(1)
    try:
        while True:
            b = _take_next(nxt, lock)
            if b >= len(batches):
                break
            feats = _work(kind, cfg, [_FORKED_AUDIOS[i] for i in batches[b]], cache)  # type: ignore[index]
            sender.submit(conn.send, (b, feats))
    except BaseException as e:  # noqa: BLE001 -- handed to the parent, which raises it
        import pickle
        import traceback

        try:
            pickle.dumps(e)
        except Exception:  # noqa: BLE001
            e = RuntimeError(traceback.format_exc())
        sender.submit(conn.send, (-1, e))
    finally:
        sender.shutdown(wait=True)
        conn.close()


def _run_forked(kind: str, cfg, audios: Sequence[np.ndarray], cache: Path | None, batches: list[range],
                workers: int, out: list, bar) -> None:
    """``workers - 1`` forked children and this process take batches from one shared counter in
    plan order; each child sends its features through its own pipe, which this process reads
    between its own batches. Compared with a ``ProcessPoolExecutor`` of ``workers`` processes: one
    fork fewer, no process idles waiting for results, no executor threads competing for the
    cores, and no per-task messages (a batch is taken by incrementing a counter in shared memory).
    This process keeps no write end of a child's pipe, so a child that dies (even in the middle of
    a message) reads as the end of its pipe: an error, never a hang."""
    import multiprocessing
    from multiprocessing.connection import wait

    global _FORKED_AUDIOS
    ctx = multiprocessing.get_context("fork")
    nxt = ctx.RawValue("q", 0)
    lock = ctx.Lock()
    # One BLAS thread here too, set before forking: the children inherit it and skip their own
    # (importing threadpoolctl and finding the libraries cost each new process ~10-25 ms).
    blas = _limit_blas()
    _FORKED_AUDIOS = audios
    children, readers = [], []
    try:
        for _ in range(workers - 1):
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_forked_worker, args=(kind, cfg, cache, batches, nxt, lock, w))
            p.start()
            w.close()
            children.append(p)
            readers.append(r)
        left = len(batches)

        def take(b: int, feats) -> None:
            nonlocal left
            for i, f in zip(batches[b], feats):
                out[i] = f
            left -= 1
            bar.update(len(batches[b]))

        def receive(timeout: float | None) -> None:
            for r in wait(readers, timeout):
                try:
                    b, feats = r.recv()
                except (EOFError, OSError):  # the child is done (or died, maybe mid-message)
                    readers.remove(r)
                    r.close()
                    continue
                if b < 0:
                    raise feats
                take(b, feats)

        while True:
            b = _take_next(nxt, lock)
            if b >= len(batches):
                break
            take(b, _work(kind, cfg, [audios[i] for i in batches[b]], cache))
            receive(0)  # what the children finished meanwhile
        while readers:
            receive(None)
        for p in children:
            p.join()
        if left:
            codes = [p.exitcode for p in children]
            raise RuntimeError(f"a feature-extraction worker died (exit codes {codes}); "
                               f"{left} batches were not computed")
    finally:
        _FORKED_AUDIOS = None
        for r in readers:
            r.close()
        for p in children:
            if p.exitcode is None:
                p.terminate()
                p.join()
        if blas is not None:
            blas.restore_original_limits()


def _cached(audios: Sequence[np.ndarray], cfg, kind: str, cache_dir, progress: bool, batch: int,
            desc: str, workers: int | None) -> list[np.ndarray]:
    cache = Path(cache_dir) / cfg.hash if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    n = len(audios)
    if n == 0:
        return []
    from tqdm.auto import tqdm

    workers = default_workers() if workers is None else max(1, int(workers))
    # Identical clips in one batch are computed once; in different batches, twice (same entry,
    # same bytes: harmless and rare).
    batches = _plan(n, workers, batch)
    out: list[np.ndarray | None] = [None] * n
    with tqdm(total=n, desc=desc, unit="clip", disable=not progress, leave=False) as bar:
        if workers == 1 or len(batches) == 1:
            for idx in batches:
                for i, f in zip(idx, _work(kind, cfg, [audios[i] for i in idx], cache)):
                    out[i] = f
                bar.update(len(idx))
        elif _start_method() == "fork":
            _run_forked(kind, cfg, audios, cache, batches, min(workers, len(batches)), out, bar)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(min(workers, len(batches)), initializer=_init_worker,
                                     mp_context=multiprocessing.get_context("spawn")) as ex:
                futs = {ex.submit(_work, kind, cfg, [audios[i] for i in idx], cache): idx for idx in batches}
                for fut in as_completed(futs):
                    idx = futs[fut]
                    for i, f in zip(idx, fut.result()):
                        out[i] = f
                    bar.update(len(idx))
    return out  # type: ignore[return-value]


def fixed_point_features(audios: Sequence[np.ndarray], cfg, cache_dir: str | os.PathLike | None = "default",
                         progress: bool = True, batch: int = 64, workers: int | None = None) -> list[np.ndarray]:
    """Fixed-point front-end features (raw Q``frac_bits`` integers) of each int16 clip, cached.

    ``cache_dir=None`` disables the cache; ``"default"`` uses :func:`default_cache_dir`.
    Uncached clips are computed by ``workers`` processes (default :func:`default_workers`, i.e.
    every core); the result is identical for any number of workers.
    """
    cache_dir = default_cache_dir() if cache_dir == "default" else cache_dir
    return _cached(audios, cfg, "", cache_dir, progress, batch, "front end (fixed point)", workers)


def float_twin_features(audios: Sequence[np.ndarray], cfg, cache_dir: str | os.PathLike | None = "default",
                        progress: bool = True, workers: int | None = None) -> list[np.ndarray]:
    """Float64-twin features (same frames and Q units as the fixed-point ones); comparison only."""
    cache_dir = default_cache_dir() if cache_dir == "default" else cache_dir
    return _cached(audios, cfg, "_f64", cache_dir, progress, 64, "front end (float64 twin)", workers)


# ----------------------------------------------------------------------------- augmentation
def augment(pcm: np.ndarray, rng: np.random.Generator, speed: float = 0.1, gain_db: float = 6.0,
            snr_db: tuple[float, float] = (10.0, 30.0), p_noise: float = 0.5) -> np.ndarray:
    """One random copy of an int16 clip: speed (+-``speed``, resampled, so pitch moves too),
    gain (+-``gain_db``), and with probability ``p_noise`` white noise at 10-30 dB SNR."""
    from scipy.signal import resample_poly

    x = np.asarray(pcm, np.float64) / 32768.0
    if speed > 0:
        r = Fraction(float(rng.uniform(1 - speed, 1 + speed))).limit_denominator(50)
        if r != 1:
            x = resample_poly(x, r.denominator, r.numerator)  # faster speech = fewer samples
    x = x * 10 ** (rng.uniform(-gain_db, gain_db) / 20)
    if rng.random() < p_noise:
        p_sig = float(np.mean(x * x)) + 1e-12
        snr = rng.uniform(*snr_db)
        x = x + rng.standard_normal(x.size) * np.sqrt(p_sig / 10 ** (snr / 10))
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


def augmented_copies(audios: Sequence[np.ndarray], n_copies: int, seed: int = 0) -> list[list[np.ndarray]]:
    """``n_copies`` deterministic augmented versions of each clip (seeded by clip index and copy)."""
    return [[augment(audios[i], np.random.default_rng([seed, i, c])) for c in range(n_copies)]
            for i in range(len(audios))]
