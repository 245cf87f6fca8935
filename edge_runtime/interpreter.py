"""Run an int8 ser-edge model on whichever TFLite interpreter is installed.

Backends, tried in this order when none is requested:

=================  ===========================================  =====================================
name               package (import)                             notes
=================  ===========================================  =====================================
``litert``         ai-edge-litert (``ai_edge_litert``)          CPython 3.11-3.13, x86_64 + aarch64
``tflite_runtime`` tflite-runtime (``tflite_runtime``)          CPython <= 3.11, needs numpy<2;
                                                                no 32-bit ARM wheel past 2.14
``tensorflow``     tensorflow (``tensorflow.lite``)              big; host machines
``tflm``           tflite-micro (``tflite_micro``)              only when asked: the micro-controller
                                                                kernels, to check firmware parity
``c``              firmware_bridge + a C compiler (plugin)     the model compiled ahead of time to C
                                                                (ser_nn kernels, bit-exact with tflm),
                                                                built with gcc, loaded with ctypes:
                                                                the fallback when no TFLite is installed
=================  ===========================================  =====================================

Plugin backends (``c``) are found through the ``ser_edge.backends`` entry points (or, in a source
checkout, by module name) and imported only when used: this module never imports them itself.

Choose with ``backend=...`` or the ``SER_EDGE_BACKEND`` environment variable. Nothing heavy is
imported until a backend is created. (Creating a ``tflite_runtime`` interpreter after
``import tensorflow`` in the same process fails with "vector::reserve"; use one or the other.)

:class:`IntModel` loads a model, checks its metadata and tensors, and classifies one window:

* the model's front-end hash must equal the hash of ``FrontendConfig.from_dict(meta["frontend"])``
  computed by *this* runtime (same parameters AND same front-end algorithm version), and the
  caller's expected config if one is given; otherwise it refuses, naming the differing parameters;
* input must be int8 ``(1, window_frames, n_features)`` and output int8 ``(1, len(labels))``;
* the fused LSTM keeps its state in variable tensors between ``invoke()`` calls, so every window
  starts from reset state (``reset_all_variables()`` / TFLM ``reset()``): windows are independent
  and overlapping windows are classified exactly as the batch evaluation did.

Quantising front-end features to the model input is integer-only (see :class:`FeatureQuantizer`).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .model_metadata import ModelFileError, ModelMetadata, _load_bytes, model_hash, read_metadata
from .native_log import quiet_native_stderr

BACKENDS = ("litert", "tflite_runtime", "tensorflow", "tflm", "c")
AUTO_ORDER = ("litert", "tflite_runtime", "tensorflow", "c")
# Plugin backends: name -> "module:factory" (entry point group ser_edge.backends; this fallback
# covers a source checkout whose installed metadata predates the entry point).
PLUGIN_GROUP = "ser_edge.backends"
_PLUGIN_FALLBACK = {"c": "firmware_bridge.nn_host:make_interpreter_backend"}
ENV_VAR = "SER_EDGE_BACKEND"

_MODULES = {
    "litert": "ai_edge_litert",
    "tflite_runtime": "tflite_runtime",
    "tensorflow": "tensorflow",
    "tflm": "tflite_micro",
    "c": "firmware_bridge.nn_host",
}
_INSTALL_HINT = (
    "no TFLite interpreter is installed. Install one:\n"
    "  pip install ai-edge-litert            # CPython 3.11-3.13 on x86_64 / aarch64 (Pi 4/5 64-bit OS)\n"
    "  pip install tflite-runtime 'numpy<2'  # CPython <= 3.11 (the only option on 32-bit Raspberry Pi OS, <= 2.14)\n"
    "  pip install tensorflow                # host machines (large)\n"
    "or install ser-edge's firmware_bridge package and gcc for the C backend (--backend c),\n"
    "or pick an installed one with --backend / SER_EDGE_BACKEND"
)
_PIP = {
    "litert": "pip install ai-edge-litert",
    "tflite_runtime": "pip install tflite-runtime 'numpy<2'",
    "tensorflow": "pip install tensorflow",
    "tflm": "pip install tflite-micro",
    "c": "install ser-edge with its firmware_bridge package and a C compiler (apt-get install gcc)",
}


class BackendUnavailableError(ImportError):
    """The requested (or any) interpreter package is not installed; the message says what to pip install."""


class ModelMismatchError(ModelFileError):
    """The model does not fit this runtime (front end, tensor shape or type)."""


def _plugin_factories() -> dict[str, str]:
    found = dict(_PLUGIN_FALLBACK)
    try:
        from importlib import metadata

        for ep in metadata.entry_points(group=PLUGIN_GROUP):
            found[ep.name] = ep.value
    except Exception:  # pragma: no cover - very old importlib.metadata
        pass
    return found


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(_MODULES[name]) is not None
    except ImportError:  # a plugin's parent package is missing
        return False


def available_backends() -> list[str]:
    """Installed backends, in :data:`BACKENDS` order (found without importing them)."""
    return [b for b in BACKENDS if _installed(b)]


def resolve_backend(backend: str | None = None) -> str:
    """The backend to use: ``backend``, else ``$SER_EDGE_BACKEND``, else the first installed of
    :data:`AUTO_ORDER`. Raises :class:`BackendUnavailableError` naming the ``pip install`` to run."""
    name = backend or os.environ.get(ENV_VAR) or None
    if name is not None:
        name = name.strip().lower().replace("-", "_")
        name = {"ai_edge_litert": "litert", "tflite": "tflite_runtime", "tf": "tensorflow",
                "tflite_micro": "tflm", "micro": "tflm"}.get(name, name)
        if name not in BACKENDS:
            raise ValueError(f"unknown interpreter backend {name!r}; choose from {', '.join(BACKENDS)}")
        if not _installed(name):
            raise BackendUnavailableError(f"interpreter backend {name!r} is not installed: {_PIP[name]}")
        return name
    for b in AUTO_ORDER:
        if _installed(b):
            return b
    raise BackendUnavailableError(_INSTALL_HINT)


@dataclass(frozen=True)
class TensorInfo:
    """Shape, dtype and per-tensor quantisation of one model input/output."""

    shape: tuple[int, ...]
    dtype: Any
    scale: float
    zero_point: int


def _tensor_info(d: dict) -> TensorInfo:
    q = d.get("quantization_parameters") or {}
    scales = list(np.atleast_1d(q.get("scales", [])))
    zps = list(np.atleast_1d(q.get("zero_points", [])))
    if not scales and "quantization" in d:
        scales, zps = [d["quantization"][0]], [d["quantization"][1]]
    return TensorInfo(tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"]),
                      float(scales[0]) if scales else 0.0, int(zps[0]) if zps else 0)


class _TfliteBackend:
    """LiteRT / tflite-runtime / tf.lite: the same Python Interpreter API."""

    def __init__(self, name: str, model_bytes: bytes, num_threads: int | None, kernels: str = "default") -> None:
        extra = {}
        if name == "litert":
            from ai_edge_litert.interpreter import Interpreter, OpResolverType

            extra["experimental_op_resolver_type"] = _litert_resolver(OpResolverType, kernels)
        elif name == "tflite_runtime":
            from tflite_runtime.interpreter import Interpreter
        else:
            import warnings

            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        self.name = name
        self._it = Interpreter(model_content=model_bytes, num_threads=num_threads)
        with quiet_native_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate" on every start
            self._it.allocate_tensors()
        self.input = _tensor_info(self._it.get_input_details()[0])
        self.output = _tensor_info(self._it.get_output_details()[0])
        self.n_inputs = len(self._it.get_input_details())
        self.n_outputs = len(self._it.get_output_details())
        self._in = self._it.get_input_details()[0]["index"]
        self._out = self._it.get_output_details()[0]["index"]

    def run(self, x: np.ndarray, reset: bool = True) -> np.ndarray:
        if reset:
            self._it.reset_all_variables()  # fused LSTM state lives in variable tensors
        self._it.set_tensor(self._in, x)
        self._it.invoke()
        return self._it.get_tensor(self._out)


class _TflmBackend:
    """TensorFlow Lite Micro's Python interpreter (the firmware's kernels)."""

    def __init__(self, model_bytes: bytes, num_threads: int | None, arena_size: int | None = None) -> None:
        from tflite_micro.python.tflite_micro import runtime

        self.name = "tflm"
        # arena: model size x 10 is the package default; small LSTM models need a floor.
        self._it = runtime.Interpreter.from_bytes(bytes(model_bytes),
                                                  arena_size=arena_size or max(len(model_bytes) * 10, 256 * 1024))
        self.input = _tensor_info(self._it.get_input_details(0))
        self.output = _tensor_info(self._it.get_output_details(0))
        self.n_inputs = self.n_outputs = 1

    def run(self, x: np.ndarray, reset: bool = True) -> np.ndarray:
        if reset:
            self._it.reset()
        self._it.set_input(x, 0)
        self._it.invoke()
        return self._it.get_output(0)


def _litert_resolver(OpResolverType, kernels: str):
    try:
        return {"default": OpResolverType.AUTO,
                "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                "reference": OpResolverType.BUILTIN_REF}[kernels]
    except KeyError:
        raise ValueError(f"kernels must be 'default', 'builtin' or 'reference', got {kernels!r}") from None


def make_backend(model_bytes: bytes, backend: str | None = None, num_threads: int | None = 1,
                 kernels: str = "default", arena_size: int | None = None):
    """A raw interpreter for ``model_bytes`` with ``.input``/``.output`` (:class:`TensorInfo`),
    ``.name`` and ``.run(x, reset=True) -> y`` (variable tensors reset before every run).

    ``kernels`` (LiteRT only): ``"default"`` (what a Pi runs: XNNPACK delegate for conv/fully-connected,
    optimised builtins for the rest), ``"builtin"`` (no XNNPACK) or ``"reference"``.
    ``arena_size`` (TFLM only): tensor arena bytes.
    """
    name = resolve_backend(backend)
    if name == "tflm":
        return _TflmBackend(model_bytes, num_threads, arena_size)
    if name in _PLUGIN_FALLBACK:
        mod, _, attr = _plugin_factories()[name].partition(":")
        return getattr(importlib.import_module(mod), attr)(model_bytes, num_threads)
    return _TfliteBackend(name, model_bytes, num_threads, kernels)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: ``real ~= m0 * 2**(shift - 31)`` with ``m0`` in ``[2**30, 2**31)``.

    The one implementation (the feature quantiser, the C front-end export and the AOT int8 kernels'
    requantisation all use it). As TFLite: ``std::round`` (half away from zero) of the Q31
    mantissa, ``0 -> (0, 0)``, and a multiplier below ``2**-32`` flushes to ``(0, 0)``.
    """
    import math

    if real < 0 or math.isnan(real):
        raise ValueError(f"multiplier must be >= 0, got {real}")
    if real == 0.0:
        return 0, 0
    mant, exp = math.frexp(real)  # real = mant * 2**exp, mant in [0.5, 1)
    m0 = int(math.floor(mant * (1 << 31) + 0.5))  # std::round for a positive value
    if m0 == 1 << 31:
        m0 //= 2
        exp += 1
    if exp < -31:
        return 0, 0
    return m0, int(exp)


class FeatureQuantizer:
    """Integer front-end features (int16 or int32, ``frac_bits`` fractional bits) -> int8 model input.

    A feature's real value is ``q * feature_scale`` (``feature_scale = 2**-frac_bits``) and the
    model wants ``round(real / input_scale) + zero_point``. At load time the float ratio
    ``feature_scale / input_scale`` becomes a Q31 fixed-point multiplier ``m0`` and a shift, as
    TFLite does for its requantisation; then, in int64,
    ``q8 = clamp(round_half_away(q * m0 / 2**(31 - shift)) + zero_point, -128, 127)``, exactly what
    the C firmware computes (``|q| < 2**31`` and ``m0 < 2**31`` keep the product inside int64).
    """

    def __init__(self, feature_scale: float, input_scale: float, zero_point: int) -> None:
        self.m0, self.shift = quantize_multiplier(feature_scale / input_scale)
        self.zero_point = int(zero_point)
        self.right_shift = 31 - self.shift
        self._round = (1 << (self.right_shift - 1)) if self.right_shift > 0 else 0

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        """Quantise integer features of any shape to int8."""
        f = np.asarray(feats)
        if f.dtype not in (np.int16, np.int32):
            raise TypeError(f"features must be int16 or int32 fixed point, got {f.dtype}")
        p = f.astype(np.int64) * self.m0
        s = self.right_shift
        if s > 0:
            mag = (np.abs(p) + self._round) >> s  # round half away from zero
            r = np.where(p < 0, -mag, mag)
        else:
            r = p << -s
        return np.clip(r + self.zero_point, -128, 127).astype(np.int8)


def check_frontend(meta: ModelMetadata, expected=None, name: str = "<model>"):
    """The model's :class:`FrontendConfig`, after checking it matches this runtime (and ``expected``).

    Refuses with :class:`ModelMismatchError` naming the differing parameters.
    """
    from .frontend import FrontendConfig

    try:
        cfg = FrontendConfig.from_dict(meta.frontend)
    except (TypeError, ValueError) as e:
        raise ModelMismatchError(f"{name}: the model's front-end parameters are not usable by this runtime: {e}") from None
    if cfg.hash != meta.frontend_hash:
        here = cfg.to_dict()
        diff = {k: (meta.frontend.get(k, "<absent>"), here.get(k, "<absent>"))
                for k in sorted(set(here) | set(meta.frontend)) if meta.frontend.get(k, "<absent>") != here.get(k, "<absent>")}
        detail = (", ".join(f"{k}: model {a!r} vs runtime {b!r}" for k, (a, b) in diff.items())
                  or f"same parameters, different hash function/algorithm (algorithm_version "
                     f"{meta.frontend.get('algorithm_version')!r})")
        raise ModelMismatchError(
            f"{name}: front-end hash mismatch: the model records {meta.frontend_hash}, this runtime "
            f"computes {cfg.hash} for its front-end parameters ({detail}). The features would not be "
            "what the model was trained on; rebuild the model with this ser-edge version"
        )
    recorded = (meta.extra or {}).get("frontend_tables_checksum")
    if recorded is not None:
        from .frontend.tables import tables_checksum

        here = tables_checksum(cfg)
        if str(recorded).lower() != here:
            raise ModelMismatchError(
                f"{name}: front-end table checksum mismatch: the model was built with tables "
                f"{recorded}, this runtime generates {here} for the same parameters. The features "
                "would differ from training; use the ser-edge (and numpy) version the model was built with")
    if expected is not None and expected.hash != cfg.hash:
        diff = cfg.diff(expected)
        detail = ", ".join(f"{k}: model {a!r} vs expected {b!r}" for k, (a, b) in diff.items())
        raise ModelMismatchError(
            f"{name}: front end differs from the expected configuration "
            f"({detail or 'different hash'}); the model was trained with frontend_hash {cfg.hash}, "
            f"expected {expected.hash}"
        )
    return cfg


class IntModel:
    """An int8 ser-edge model ready to classify windows of int8 feature frames.

    ``model``: path or bytes of a .tflite with ``ser_edge`` metadata. ``expected_frontend``: a
    :class:`FrontendConfig` the caller computes features with (refused if it differs).
    """

    def __init__(self, model: bytes | str | os.PathLike, backend: str | None = None,
                 expected_frontend=None, num_threads: int | None = 1) -> None:
        data, name = _load_bytes(model)
        self.path = None if isinstance(model, (bytes, bytearray, memoryview)) else Path(model)
        self.name = name
        self.model_bytes = data
        self.model_hash = model_hash(data)
        self.meta: ModelMetadata = read_metadata(data, name)
        self.frontend_config = check_frontend(self.meta, expected_frontend, name)
        m = self.meta
        if m.n_features != self.frontend_config.n_features:
            raise ModelMismatchError(f"{name}: metadata n_features {m.n_features} != front end's "
                                     f"{self.frontend_config.n_features}")
        backend_name = resolve_backend(backend)  # BackendUnavailableError says what to install
        try:
            self._backend = make_backend(data, backend_name, num_threads)
        except (ValueError, RuntimeError) as e:
            raise ModelFileError(f"{name}: the {backend_name} interpreter could not load the model: {e}") from None
        self.backend = self._backend.name
        self._check_tensors()
        self.quantizer = FeatureQuantizer(2.0 ** -self.frontend_config.frac_bits, m.input_scale, m.input_zero_point)
        self._x = np.zeros(self.input_shape, np.int8)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, self.meta.window_frames, self.meta.n_features)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.meta.labels

    def _check_tensors(self) -> None:
        m, b, name = self.meta, self._backend, self.name
        problems = []
        if b.input.dtype != np.int8:
            problems.append(f"input dtype is {b.input.dtype}, expected int8 (convert with full-integer quantisation)")
        if b.input.shape != self.input_shape:
            problems.append(f"input shape is {b.input.shape}, metadata says (1, window_frames={m.window_frames}, "
                            f"n_features={m.n_features}) = {self.input_shape}")
        if b.output.dtype != np.int8:
            problems.append(f"output dtype is {b.output.dtype}, expected int8")
        if b.output.shape != (1, len(m.labels)):
            problems.append(f"output shape is {b.output.shape}, expected (1, {len(m.labels)}) for labels {list(m.labels)}")
        if b.input.dtype == np.int8 and (abs(b.input.scale - m.input_scale) > 1e-6 * m.input_scale
                                         or b.input.zero_point != m.input_zero_point):
            problems.append(f"input quantisation ({b.input.scale}, {b.input.zero_point}) differs from "
                            f"metadata ({m.input_scale}, {m.input_zero_point})")
        if b.output.dtype == np.int8 and (abs(b.output.scale - m.output_scale) > 1e-6 * m.output_scale
                                          or b.output.zero_point != m.output_zero_point):
            problems.append(f"output quantisation ({b.output.scale}, {b.output.zero_point}) differs from "
                            f"metadata ({m.output_scale}, {m.output_zero_point})")
        if problems:
            raise ModelMismatchError(f"{name}: model tensors do not match its metadata: " + "; ".join(problems))

    def quantize(self, feats: np.ndarray) -> np.ndarray:
        """Integer front-end features -> int8 model input (integer arithmetic, :class:`FeatureQuantizer`)."""
        return self.quantizer(feats)

    def predict_window(self, window_int8: np.ndarray) -> np.ndarray:
        """int8 scores ``(n_labels,)`` for one window ``(window_frames, n_features)`` of int8 frames.

        The interpreter's variable tensors (LSTM state) are reset first, so the result depends only
        on this window.
        """
        w = np.asarray(window_int8)
        if w.dtype != np.int8 or w.shape != self.input_shape[1:]:
            raise ValueError(f"window must be int8 of shape {self.input_shape[1:]}, got {w.dtype} {w.shape}")
        self._x[0] = w
        return np.array(self._backend.run(self._x), dtype=np.int8).reshape(-1)

    def dequantize(self, scores_int8: np.ndarray) -> np.ndarray:
        """Real-valued model outputs ``(q - zero_point) * scale``."""
        return (np.asarray(scores_int8, np.float64) - self.meta.output_zero_point) * self.meta.output_scale

    @property
    def outputs_probabilities(self) -> bool:
        """True when the model ends in softmax (metadata ``output_kind: "probs"``), else logits."""
        return self.meta.extra.get("output_kind") == "probs"

    def log_probabilities(self, scores_int8: np.ndarray) -> np.ndarray:
        """Class log-probabilities: log-softmax of the dequantised logits (for a softmax model, the
        log of its normalised outputs, floored at 1e-6)."""
        from .window_policy import score_log_probabilities

        return score_log_probabilities(scores_int8, self.meta.output_scale, self.meta.output_zero_point,
                                       self.outputs_probabilities)

    def probabilities(self, scores_int8: np.ndarray) -> np.ndarray:
        """Class probabilities: the dequantised outputs when the model ends in softmax (non-negative,
        sum ~1), else their softmax."""
        v = self.dequantize(scores_int8)
        s = v.sum()
        if v.min() >= 0 and abs(s - 1.0) < 0.1:
            return v / s
        e = np.exp(v - v.max())
        return e / e.sum()

    def __repr__(self) -> str:
        return (f"IntModel({self.name!r}, backend={self.backend!r}, labels={list(self.labels)}, "
                f"window={self.meta.window_frames}x{self.meta.n_features}, hop={self.meta.hop_frames})")


# ---------------------------------------------------------------------------------- batches of windows
# Why TFLM and LiteRT are not bit-exact (measured on the test fixture, 121 windows x 4 scores):
# TFLM vs LiteRT *without* the XNNPACK delegate differ by at most 1 LSB (~11% of scores): both run
# TFLite's integer kernels, but TFLM's integer LSTM evaluates the gate sigmoid/tanh and the int16
# cell/hidden rescales with its own fixed-point routines, which round differently from LiteRT's LSTM
# kernel. LiteRT's default XNNPACK delegate adds its own requantisation for conv / fully-connected
# (fp32 multiplier rather than TFLite's Q31 fixed-point multiplier), which moves a few more scores by
# 1 LSB and can stack to 2 LSB at the output (~0.2% of scores). Top-1 changes only when two logits
# are within an LSB.
def run_windows(model_bytes: bytes, windows_int8: np.ndarray, backend: str | None = None, *, reset: bool = True,
                num_threads: int = 1, kernels: str = "default", arena_size: int | None = None) -> np.ndarray:
    """int8 output scores, one row per int8 window ``(n, window_frames, n_features)``, from one
    interpreter (variable tensors reset before each window unless ``reset=False``)."""
    b = make_backend(bytes(model_bytes), backend, num_threads, kernels=kernels, arena_size=arena_size)
    out = [np.array(b.run(np.asarray(w, np.int8)[None], reset=reset)).reshape(-1)
           for w in np.asarray(windows_int8, np.int8)]
    return np.stack(out).astype(np.int8) if out else np.zeros((0, 0), np.int8)


def run_litert(model_bytes: bytes, windows_int8: np.ndarray, reset: bool = True, num_threads: int = 1,
               kernels: str = "default") -> np.ndarray:
    """:func:`run_windows` in LiteRT (``kernels``: see :func:`make_backend`)."""
    return run_windows(model_bytes, windows_int8, "litert", reset=reset, num_threads=num_threads, kernels=kernels)


def run_tflm(model_bytes: bytes, windows_int8: np.ndarray, arena_size: int | None = None,
             reset: bool = True) -> np.ndarray:
    """:func:`run_windows` in TensorFlow Lite Micro (the micro-controller's reference kernels)."""
    return run_windows(model_bytes, windows_int8, "tflm", reset=reset, arena_size=arena_size)


def compare_int8(a: np.ndarray, b: np.ndarray) -> dict:
    """Agreement between two interpreters' int8 score matrices (same windows)."""
    a = np.asarray(a, np.int16)
    b = np.asarray(b, np.int16)
    d = np.abs(a - b)
    return {
        "n_windows": int(len(a)),
        "bit_exact_fraction": float(np.mean(np.all(d == 0, axis=1))) if len(a) else 1.0,
        "max_abs_lsb": int(d.max()) if d.size else 0,
        "fraction_windows_differing": float(np.mean(np.any(d > 0, axis=1))) if len(a) else 0.0,
        "fraction_scores_differing": float(np.mean(d > 0)) if d.size else 0.0,
        "top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1))) if len(a) else 1.0,
    }


# ---------------------------------------------------------------------------------- TFLM arena size
def _fits(model_bytes: bytes, arena: int, probe: np.ndarray) -> bool:
    try:
        b = _TflmBackend(model_bytes, None, arena)
        b.run(probe)
        return True
    except (RuntimeError, ValueError):
        return False


def _bisect_arena_isolated(model_bytes: bytes, lo: int, hi: int, granularity: int) -> tuple[int, int]:
    """Bisect ``(lo, hi]`` for the smallest fitting arena in child processes (see min_arena_size)."""
    import subprocess
    import sys
    import tempfile

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1])] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(model_bytes)
        for _ in range(64):  # each crash narrows the range, so this bound is never reached in practice
            if hi - lo <= granularity:
                break
            cmd = [sys.executable, "-c", "from edge_runtime.interpreter import _bisect_child; _bisect_child()",
                   str(path), str(lo), str(hi), str(granularity)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            trying = None
            for line in proc.stdout.splitlines():
                word, _, rest = line.partition(" ")
                if word == "try":
                    trying = int(rest)
                elif word in ("fits", "fails"):
                    size = int(rest)
                    hi, lo = (size, lo) if word == "fits" else (hi, size)
                    trying = None
            if proc.returncode != 0:
                if trying is None:
                    raise RuntimeError(f"TFLM arena probe failed before probing: {proc.stderr.strip()[-500:]}")
                lo = max(lo, trying)  # the probe that killed the child: too small to be safe
    return lo, hi


def _bisect_child() -> None:
    """Child side of :func:`_bisect_arena_isolated`: announce each probe, then report it; exit after
    the first probe that does not fit."""
    import sys

    path, lo, hi, granularity = sys.argv[1], *map(int, sys.argv[2:5])
    data = Path(path).read_bytes()
    det = _TflmBackend(data, None).input
    probe = np.zeros(det.shape, det.dtype)
    with quiet_native_stderr():  # TFLM's C-level "Failed to allocate" lines while probing
        while hi - lo > granularity:
            mid = (lo + hi) // 2
            print(f"try {mid}", flush=True)
            ok = _fits(data, mid, probe)
            print(f"{'fits' if ok else 'fails'} {mid}", flush=True)
            if not ok:  # a failed allocation may leave tflite-micro's state damaged: next probe, new child
                return
            hi = mid


def _recorded_arena(model_bytes: bytes, probe: np.ndarray) -> int | None:
    """Total arena bytes reported by TFLM's RecordingMicroAllocator (printed to C stderr)."""
    import re
    import tempfile

    b = _TflmBackend(model_bytes, None, len(model_bytes) * 10 + 65536)
    b.run(probe)
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            b._it.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    m = re.search(r"Arena allocation total (\d+) bytes", text)
    return int(m.group(1)) if m else None


def min_arena_size(model_bytes: bytes, lo: int = 1024, hi: int | None = None, granularity: int = 64) -> dict:
    """Smallest TFLM tensor arena (bytes, within ``granularity``) that allocates and invokes.

    Found by bisection over real interpreter constructions, run in a child process: tflite-micro
    is not safe below its minimum (some too-small arenas corrupt its allocator, raise from the
    flatbuffer reader or segfault), so a probe that kills the child counts as "does not fit" and
    the bisection continues in a fresh child. Also returns the allocator's own recorded total
    (from a comfortably large arena, in this process) for comparison.
    """
    model_bytes = bytes(model_bytes)
    det = _TflmBackend(model_bytes, None).input
    probe = np.zeros(det.shape, det.dtype)
    hi = hi or len(model_bytes) * 10 + 65536
    if not _fits(model_bytes, hi, probe):
        raise RuntimeError(f"model does not run in TFLM even with a {hi}-byte arena")
    lo, hi = _bisect_arena_isolated(model_bytes, lo, hi, granularity)
    return {"arena_bytes": int(hi), "recorded_arena_bytes": _recorded_arena(model_bytes, probe)}
