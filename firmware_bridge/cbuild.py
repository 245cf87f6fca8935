"""Compile the firmware C sources with the system gcc and call them through ctypes.

The shared library is cached under ``$SER_EDGE_CACHE/cbuild/<hash>/`` (default
``~/.cache/ser-edge``; a temp directory when that is not writable), keyed by the sources, the flags
and the compiler version, so editing a .c file rebuilds and concurrent test processes share one
build (written to a temp name, then atomically renamed).

    fe = CFrontend(FrontendConfig())
    feats = fe.compute(pcm_int16)        # == edge_runtime.frontend.compute_features(pcm)
    s = fe.stream(); s.push(chunk)       # == StreamingFrontend.push, through ser_fe_push/ser_fe_pop

Protocol bindings: :func:`crc32`, :func:`cobs_encode`, :func:`cobs_decode`, :func:`encode_frame`,
:class:`CFrameDecoder`, :func:`result_payload`; the firmware's reorder buffer: :class:`CReassembler`.
Cross-compilation for a Cortex-M4:
:func:`cross_compile_m4` (section sizes via ``arm-none-eabi-size``).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.frontend import FrontendConfig

from .export import ARRAY_FIELDS, FIRMWARE_DIR, PARAM_FIELDS, V2_FIELDS, c_arrays, c_params

SOURCES = ("ser_frontend.c", "ser_protocol.c", "ser_nn.c", "ser_reassembly.c")
HEADERS = ("ser_frontend.h", "ser_protocol.h", "ser_nn.h", "ser_reassembly.h")
WARN_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-Wdouble-promotion", "-Wfloat-conversion",
              "-Wshadow", "-pedantic")
# -O3: the vectoriser turns ser_fe_compute's lanes (SER_FE_LANES frames side by side) into SIMD
CFLAGS = ("-O3", *WARN_FLAGS, "-fPIC", "-shared")
# The host library serves every test configuration: the largest frame / mel count the config allows.
HOST_DEFINES = {"SER_FE_MAX_FRAME_LENGTH": 4096, "SER_FE_MAX_MELS": 128, "SER_MAX_PAYLOAD": 4096}
M4_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft", "-Os", "-ffunction-sections",
            "-fdata-sections", *WARN_FLAGS)


class CBuildError(RuntimeError):
    """The C compiler is missing or rejected the sources (message carries its output)."""


def cache_dir() -> Path:
    """Writable cache root: ``$SER_EDGE_CACHE``, else ``~/.cache/ser-edge``, else a temp dir."""
    for cand in (os.environ.get("SER_EDGE_CACHE"), str(Path.home() / ".cache" / "ser-edge")):
        if not cand:
            continue
        p = Path(cand)
        try:
            p.mkdir(parents=True, exist_ok=True)
            if os.access(p, os.W_OK):
                return p
        except OSError:
            continue
    p = Path(tempfile.gettempdir()) / f"ser-edge-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    p.mkdir(parents=True, exist_ok=True)
    return p


def _compiler_id(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise CBuildError(f"C compiler {cc!r} not usable: {e}") from None


def _define_flags(defines: dict[str, int]) -> list[str]:
    return [f"-D{k}={v}" for k, v in sorted(defines.items())]


@functools.lru_cache(maxsize=None)
def host_simd_flags(cc: str = "gcc") -> tuple[str, ...]:
    """The vector extension to build the host library with: on x86-64, ``-mavx2`` or ``-msse4.1``
    when this machine's CPU has it (baseline SSE2 has no signed 32 x 32 -> 64-bit vector multiply,
    which the front end's lanes need), else nothing. Asked of the compiler (``-march=native``
    macros); the flags are part of the build's cache key, so a library is never loaded on a CPU
    it was not built for."""
    try:
        r = subprocess.run([cc, "-march=native", "-dM", "-E", "-x", "c", os.devnull], capture_output=True,
                           text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ()
    macros = set(r.stdout.split()) if r.returncode == 0 else set()
    if "__x86_64__" not in macros:
        return ()
    return ("-mavx2",) if "__AVX2__" in macros else ("-msse4.1",) if "__SSE4_1__" in macros else ()


def build_library(cc: str = "gcc", defines: dict[str, int] | None = None,
                  extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile the firmware sources into a shared library (cached); returns its path."""
    defines = HOST_DEFINES if defines is None else defines
    flags = [*CFLAGS, *host_simd_flags(cc), *extra_flags, *_define_flags(defines)]
    h = hashlib.sha256()
    for name in SOURCES + HEADERS:
        h.update(name.encode() + b"\0" + (FIRMWARE_DIR / name).read_bytes() + b"\0")
    h.update("\0".join(flags).encode())
    h.update(_compiler_id(cc).encode())
    out_dir = cache_dir() / "cbuild" / h.hexdigest()[:16]
    lib = out_dir / "libserfw.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".libserfw.{os.getpid()}.so"
    cmd = [cc, *flags, "-I", str(FIRMWARE_DIR), "-o", str(tmp), *(str(FIRMWARE_DIR / s) for s in SOURCES)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise CBuildError(f"compiling the firmware sources failed:\n{' '.join(cmd)}\n{r.stderr}")
    os.replace(tmp, lib)
    return lib


# ------------------------------------------------------------------------------------------ ctypes
class _Tables(ctypes.Structure):
    _fields_ = [(k, ctypes.c_int32) for k in PARAM_FIELDS] + [
        (n, ctypes.POINTER(ctypes.c_int32 if t == "int32_t" else ctypes.c_uint16)) for n, t in ARRAY_FIELDS] + [
        (k, ctypes.c_int32) for k in V2_FIELDS]


class _Frame(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint8), ("type", ctypes.c_uint8), ("seq", ctypes.c_uint16),
                ("length", ctypes.c_uint16), ("payload", ctypes.POINTER(ctypes.c_uint8))]


_P = ctypes.c_void_p
_SZ = ctypes.c_size_t
_RA_EMIT = ctypes.CFUNCTYPE(None, _P, ctypes.c_int, ctypes.POINTER(ctypes.c_uint8), ctypes.c_uint32, ctypes.c_int64)


@functools.lru_cache(maxsize=None)
def load_library(cc: str = "gcc", extra_flags: tuple[str, ...] = ()) -> ctypes.CDLL:
    """Build (if needed) and load the host library, with argument types declared."""
    lib = ctypes.CDLL(str(build_library(cc, extra_flags=tuple(extra_flags))))
    sig = {
        "ser_fe_check_tables": (ctypes.c_int, [_P]),
        "ser_fe_init": (ctypes.c_int, [_P, _P]),
        "ser_fe_reset": (None, [_P]),
        "ser_fe_push": (_SZ, [_P, _P, _SZ]),
        "ser_fe_pop": (ctypes.c_int, [_P, _P]),
        "ser_fe_samples_needed": (_SZ, [_P]),
        "ser_fe_n_frames": (_SZ, [_P, _SZ]),
        "ser_fe_compute": (_SZ, [_P, _P, _SZ, _P, _SZ]),
        "ser_fe_quantize": (None, [_P, _SZ, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, _P]),
        "ser_fe_tables_checksum": (ctypes.c_uint32, [_P]),
        "ser_fe_state_size": (_SZ, []),
        "ser_fe_tables_size": (_SZ, []),
        "ser_fe_lanes": (_SZ, []),
        "ser_crc32": (ctypes.c_uint32, [_P, _SZ]),
        "ser_cobs_encode": (_SZ, [_P, _SZ, _P, _SZ]),
        "ser_cobs_decode": (ctypes.c_long, [_P, _SZ, _P, _SZ]),
        "ser_frame_encode": (_SZ, [ctypes.c_uint8, ctypes.c_uint16, _P, _SZ, _P, _SZ]),
        "ser_decoder_init": (None, [_P, _SZ]),
        "ser_decoder_feed": (ctypes.c_int, [_P, ctypes.c_uint8, _P]),
        "ser_decoder_stats": (ctypes.POINTER(ctypes.c_uint32), [_P]),
        "ser_decoder_size": (_SZ, []),
        "ser_decoder_check_messages": (None, [_P, ctypes.c_int]),
        "ser_result_payload": (_SZ, [ctypes.c_uint32, ctypes.c_uint16, ctypes.c_uint8, ctypes.c_uint8,
                                     ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, _P, ctypes.c_uint8,
                                     _P, _SZ]),
        "ser_audio_parse": (ctypes.c_long, [_P, _SZ, _P]),
        "ser_resend_payload": (_SZ, [ctypes.c_uint16, _P, _P, ctypes.c_uint, _P, _SZ]),
        "ser_resend_parse": (ctypes.c_int, [_P, _SZ, _P, _P, _P, ctypes.c_uint]),
        "ser_ra_init": (None, [_P, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint64,
                               ctypes.c_uint64, ctypes.c_int64, _RA_EMIT, _P]),
        "ser_ra_push": (None, [_P, ctypes.c_uint32, _P, ctypes.c_uint32, ctypes.c_uint64]),
        "ser_ra_poll": (ctypes.c_uint, [_P, ctypes.c_uint64, _P, _P]),
        "ser_ra_flush": (None, [_P]),
        "ser_ra_buffered": (ctypes.c_uint32, [_P]),
        "ser_ra_size": (_SZ, []),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    if lib.ser_fe_tables_size() != ctypes.sizeof(_Tables):
        raise CBuildError(f"ser_fe_tables_t is {lib.ser_fe_tables_size()} bytes in C but "
                          f"{ctypes.sizeof(_Tables)} in the ctypes mirror: update cbuild._Tables")
    return lib


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


class CFrontend:
    """The C front end for one configuration (tables from make_tables, passed by pointer)."""

    def __init__(self, cfg: FrontendConfig = FrontendConfig(), cc: str = "gcc",
                 extra_flags: tuple[str, ...] = ()) -> None:
        self.cfg = cfg
        self.lib = load_library(cc, tuple(extra_flags))  # e.g. the Cortex-M build switches
        self._arrays = c_arrays(cfg)  # keep alive: the C struct points into them
        self.tables = _Tables(**c_params(cfg))  # scalars by name: PARAM_FIELDS and V2_FIELDS
        for name, ctype in ARRAY_FIELDS:
            a = self._arrays[name]
            if a is not None:
                ptype = ctypes.POINTER(ctypes.c_int32 if ctype == "int32_t" else ctypes.c_uint16)
                setattr(self.tables, name, ctypes.cast(_ptr(a), ptype))
        self._state = self._new_state()

    def _new_state(self) -> np.ndarray:
        st = np.zeros((self.lib.ser_fe_state_size() + 15) // 8, np.int64)  # 8-byte aligned
        rc = self.lib.ser_fe_init(_ptr(st), ctypes.byref(self.tables))
        if rc != 0:
            raise CBuildError(f"ser_fe_init rejected the tables of {self.cfg} (code {rc})")
        return st

    def checksum(self) -> int:
        return int(self.lib.ser_fe_tables_checksum(ctypes.byref(self.tables)))

    def compute(self, pcm: np.ndarray) -> np.ndarray:
        """int32 (n_frames, n_features) of a whole clip in one C call (ser_fe_compute)."""
        x = np.ascontiguousarray(pcm, dtype=np.int16)
        nf = self.cfg.n_frames(x.size)
        out = np.empty((nf, self.cfg.n_features), np.int32)
        got = self.lib.ser_fe_compute(_ptr(self._state), _ptr(x), x.size, _ptr(out), nf)
        assert got == nf, (got, nf)
        return out

    def stream(self) -> "CStream":
        return CStream(self)


class CStream:
    """Streaming through ser_fe_push / ser_fe_pop on its own state (same API as StreamingFrontend)."""

    def __init__(self, fe: CFrontend) -> None:
        self.fe = fe
        self.lib = fe.lib
        self._state = fe._new_state()
        self._feat = np.empty(fe.cfg.n_features, np.int32)

    def reset(self) -> None:
        self.lib.ser_fe_reset(_ptr(self._state))

    def push(self, pcm: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(pcm, dtype=np.int16)
        rows, pos = [], 0
        st, feat = _ptr(self._state), _ptr(self._feat)
        while True:
            k = self.lib.ser_fe_push(st, x.ctypes.data + 2 * pos, x.size - pos)
            pos += k
            while self.lib.ser_fe_pop(st, feat):
                rows.append(self._feat.copy())
            if pos >= x.size:
                break
        return np.array(rows, np.int32).reshape(len(rows), self.fe.cfg.n_features)

    @property
    def samples_needed(self) -> int:
        return int(self.lib.ser_fe_samples_needed(_ptr(self._state)))


def quantize(q: np.ndarray, m0: int, right_shift: int, zero_point: int) -> np.ndarray:
    """ser_fe_quantize on int32 features (any shape) -> int8."""
    lib = load_library()
    a = np.ascontiguousarray(q, dtype=np.int32)
    out = np.empty(a.shape, np.int8)
    lib.ser_fe_quantize(_ptr(a), a.size, m0, right_shift, zero_point, _ptr(out))
    return out


# ---------------------------------------------------------------------------------- protocol
def crc32(data: bytes) -> int:
    buf = ctypes.create_string_buffer(bytes(data), len(data) or 1)
    return int(load_library().ser_crc32(buf, len(data)))


def cobs_encode(data: bytes) -> bytes:
    lib = load_library()
    cap = len(data) + len(data) // 254 + 1
    src = ctypes.create_string_buffer(bytes(data), len(data) or 1)
    out = ctypes.create_string_buffer(cap)
    n = lib.ser_cobs_encode(src, len(data), out, cap)
    if n == 0:
        raise CBuildError("ser_cobs_encode: output buffer too small")
    return out.raw[:n]


def cobs_decode(data: bytes) -> bytes:
    """Raises ValueError on invalid COBS (ser_cobs_decode returned -1)."""
    lib = load_library()
    src = ctypes.create_string_buffer(bytes(data), len(data) or 1)
    out = ctypes.create_string_buffer(max(len(data), 1))
    n = lib.ser_cobs_decode(src, len(data), out, len(data))
    if n < 0:
        raise ValueError("invalid COBS data")
    return out.raw[:n]


def encode_frame(msg_type: int, seq: int, payload: bytes, cap: int | None = None) -> bytes:
    """A complete wire frame built by ser_frame_encode (b"" when it does not fit ``cap``)."""
    lib = load_library()
    cap = cap if cap is not None else 6 + len(payload) + 4 + (10 + len(payload)) // 254 + 2
    src = ctypes.create_string_buffer(bytes(payload), len(payload) or 1)
    out = ctypes.create_string_buffer(max(cap, 1))
    n = lib.ser_frame_encode(msg_type, seq & 0xFFFF, src, len(payload), out, cap)
    return out.raw[:n]


DROP_REASONS = ("cobs", "short", "crc", "version", "length", "oversize", "unknown_type", "payload")


@dataclass(frozen=True)
class CFrameEvent:
    """What ser_decoder_feed reported for one completed segment."""

    ok: bool
    reason: str | None
    type: int | None
    seq: int | None
    payload: bytes | None


class CFrameDecoder:
    """ser_decoder_t fed byte by byte from Python (for tests)."""

    _STATS_FIELDS = ("bytes_in", "frames_ok", "empty", "seq_lost")

    def __init__(self, max_payload: int = 0, check_messages: bool = False) -> None:
        self.lib = load_library()
        self._buf = np.zeros(self.lib.ser_decoder_size() // 8 + 2, np.int64)
        self.lib.ser_decoder_init(_ptr(self._buf), max_payload)
        if check_messages:  # payload layouts checked in the decoder (ser_message_check), as the firmware does
            self.lib.ser_decoder_check_messages(_ptr(self._buf), 1)
        self._frame = _Frame()

    def feed(self, data: bytes) -> list[CFrameEvent]:
        out = []
        for b in bytes(data):
            rc = self.lib.ser_decoder_feed(_ptr(self._buf), b, ctypes.byref(self._frame))
            if rc == 1:
                f = self._frame
                out.append(CFrameEvent(True, None, f.type, f.seq, ctypes.string_at(f.payload, f.length)))
            elif rc < 0:
                reason = DROP_REASONS[-rc - 1]
                after_crc = reason in ("version", "length", "oversize", "unknown_type", "payload") and self._frame.payload
                out.append(CFrameEvent(False, reason, self._frame.type if after_crc else None,
                                       self._frame.seq if after_crc else None, None))
                self._frame = _Frame()
        return out

    @property
    def stats(self) -> dict:
        """Counters with the Python DecoderStats names (``dropped`` by reason)."""
        p = self.lib.ser_decoder_stats(_ptr(self._buf))
        vals = [p[i] for i in range(4 + len(DROP_REASONS) + 1)]
        d = dict(zip(self._STATS_FIELDS, vals[:4]))
        d["dropped"] = dict(zip(DROP_REASONS, vals[4:-1]))
        d["seq_resync"] = vals[-1]
        return d


def result_payload(window_index: int, session: int, label_index: int, flags: int, t_start_ms: int,
                   t_end_ms: int, latency_us: int, scores) -> bytes:
    lib = load_library()
    sc = np.ascontiguousarray(scores, dtype=np.int8)
    out = ctypes.create_string_buffer(21 + 255)
    n = lib.ser_result_payload(window_index, session, label_index, flags, t_start_ms, t_end_ms,
                               latency_us, _ptr(sc) if sc.size else None, sc.size, out, len(out))
    if n == 0:
        raise ValueError("ser_result_payload refused the arguments")
    return out.raw[:n]


class CReassembler:
    """The firmware's reorder buffer (ser_reassembly.c) driven from Python, with the interface of
    :class:`edge_runtime.protocol.reassembly.StreamReassembler` for int16 samples: ``push`` and
    ``flush`` return pieces (``("data", int16 array)``, ``("fill", n)``, ``("reset", position)``),
    ``poll`` returns ``(pieces, ranges)``. Times are seconds (converted to microsecond ticks)."""

    _KINDS = ("data", "fill", "reset")

    def __init__(self, start_offset: int = 0, *, resend: bool = True, hold_s: float = 3.0,
                 retry_s: float = 0.1, max_gap: int = 160000) -> None:
        self.lib = load_library()
        self._buf = np.zeros(self.lib.ser_ra_size() // 8 + 2, np.int64)
        self._out: list = []

        def emit(_ctx, kind, items, n, pos):
            name = self._KINDS[kind]
            if name == "data":
                self._out.append(("data", np.frombuffer(ctypes.string_at(items, 2 * n), "<i2").astype(np.int16)))
            else:
                self._out.append((name, int(n) if name == "fill" else int(pos)))

        self._emit = _RA_EMIT(emit)  # keep the callback alive as long as the C side may call it
        self.lib.ser_ra_init(_ptr(self._buf), start_offset & 0xFFFFFFFF, 2, int(resend), int(hold_s * 1e6),
                             int(retry_s * 1e6), max_gap, self._emit, None)

    def _take(self) -> list:
        out, self._out = self._out, []
        return out

    def push(self, offset: int, items: np.ndarray, now: float) -> list:
        data = np.ascontiguousarray(items, dtype="<i2")
        self.lib.ser_ra_push(_ptr(self._buf), offset & 0xFFFFFFFF, _ptr(data) if data.size else None, data.size,
                             int(now * 1e6))
        return self._take()

    def poll(self, now: float) -> tuple[list, list]:
        first = np.zeros(8, np.uint32)
        count = np.zeros(8, np.uint32)
        m = self.lib.ser_ra_poll(_ptr(self._buf), int(now * 1e6), _ptr(first), _ptr(count))
        return self._take(), [(int(first[i]), int(count[i])) for i in range(m)]

    def flush(self) -> list:
        self.lib.ser_ra_flush(_ptr(self._buf))
        return self._take()

    @property
    def buffered(self) -> int:
        return int(self.lib.ser_ra_buffered(_ptr(self._buf)))


# ------------------------------------------------------------------------ cross-compilation
def arm_toolchain() -> tuple[str, str] | None:
    """(arm-none-eabi-gcc, arm-none-eabi-size) paths, or None when not installed."""
    cc, size = shutil.which("arm-none-eabi-gcc"), shutil.which("arm-none-eabi-size")
    return (cc, size) if cc and size else None


def cross_compile_m4(out_dir: str | Path | None = None, sources: tuple[str | Path, ...] = SOURCES,
                     defines: dict[str, int] | None = None,
                     include_dirs: tuple[str | Path, ...] = (), opt: str = "-Os") -> dict | None:
    """Compile each source for a Cortex-M4 (``-Os -ffunction-sections``) and return section sizes
    ``{source: {"text", "data", "bss"}, "total": {...}, "undefined": [...], "flags": [...]}``, or
    None when arm-none-eabi-gcc is not installed. ``undefined`` lists the external symbols the
    objects need (a float helper such as ``__aeabi_dmul`` there would betray float arithmetic).
    ``sources`` are names in firmware/ or absolute paths (e.g. an exported ``ser_model.c``)."""
    tc = arm_toolchain()
    if tc is None:
        return None
    cc, size = tc
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="ser_m4_"))
    out.mkdir(parents=True, exist_ok=True)
    flags = [*(opt if f == "-Os" else f for f in M4_FLAGS), *_define_flags(defines or {})]
    res: dict = {"flags": flags, "undefined": []}
    tot = {"text": 0, "data": 0, "bss": 0}
    nm = shutil.which("arm-none-eabi-nm")
    incs = [f"-I{d}" for d in (*include_dirs, FIRMWARE_DIR)]
    for src in sources:
        path = Path(src) if Path(src).is_absolute() else FIRMWARE_DIR / src
        src = path.name
        obj = out / (path.stem + ".m4.o")
        cmd = [cc, *flags, *incs, "-c", "-o", str(obj), str(path)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise CBuildError(f"cross-compiling {src} failed:\n{' '.join(cmd)}\n{r.stderr}")
        line = subprocess.run([size, str(obj)], capture_output=True, text=True, check=True).stdout.splitlines()[1]
        text, data, bss = (int(v) for v in line.split()[:3])
        res[src] = {"text": text, "data": data, "bss": bss}
        for k, v in res[src].items():
            tot[k] += v
        if nm:
            und = subprocess.run([nm, "-u", str(obj)], capture_output=True, text=True, check=True).stdout
            res["undefined"] += sorted({ln.split()[-1] for ln in und.splitlines() if ln.strip()})
    res["total"] = tot
    res["undefined"] = sorted(set(res["undefined"]))
    return res
