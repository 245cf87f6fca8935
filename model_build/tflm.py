"""Run the int8 model in TensorFlow Lite Micro (the reference C++ kernels, via the Python wrapper)
and in LiteRT, and measure the TFLM tensor-arena size the model needs.

Both interpreters keep the fused LSTM's state between ``invoke()`` calls, so every window is run
after a reset (``reset()`` in TFLM, ``reset_all_variables()`` in LiteRT); without it consecutive
windows leak state into each other.

Why TFLM and LiteRT are not bit-exact (measured on the test fixture, 121 windows x 4 scores):
TFLM vs LiteRT *without* the XNNPACK delegate differ by at most 1 LSB (~11% of scores): both run
TFLite's integer kernels, but TFLM's integer LSTM (lstm_eval in tflite-micro) evaluates the gate
sigmoid/tanh and the int16 cell/hidden rescales with its own fixed-point routines, and those
round differently from LiteRT's LSTM kernel. LiteRT's default XNNPACK delegate adds its own
requantisation for conv / fully-connected (fp32-multiplier "fp32 requantization" rather than
TFLite's Q31 fixed-point multiplier), which moves a few more scores by 1 LSB and can stack to
2 LSB at the output (~0.2% of scores). Top-1 changes only when two logits are within an LSB.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

import numpy as np


def quantize_input(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Float features (model input units) -> int8 with the model's input quantisation."""
    q = np.round(np.asarray(x, np.float64) / scale) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (np.asarray(q, np.float64) - zero_point) * scale


def _tflm_interpreter(model_bytes: bytes, arena_size: int | None):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=arena_size)


def run_tflm(model_bytes: bytes, windows_int8: np.ndarray, arena_size: int | None = None,
             reset: bool = True) -> np.ndarray:
    """int8 output scores, one row per window, from the TFLM interpreter (reset per window)."""
    interp = _tflm_interpreter(model_bytes, arena_size)
    out = []
    for w in np.asarray(windows_int8, np.int8):
        if reset:
            interp.reset()
        interp.set_input(w[None], 0)
        interp.invoke()
        out.append(np.array(interp.get_output(0)).reshape(-1))
    return np.stack(out).astype(np.int8) if out else np.zeros((0, 0), np.int8)


def run_litert(model_bytes: bytes, windows_int8: np.ndarray, reset: bool = True,
               num_threads: int = 1, kernels: str = "default") -> np.ndarray:
    """int8 output scores, one row per window, from LiteRT (``ai_edge_litert``), reset per window.

    ``kernels``: ``"default"`` (what a Pi runs: XNNPACK delegate for conv/fully-connected, optimised
    builtins for the rest), ``"builtin"`` (optimised builtins, no XNNPACK) or ``"reference"``.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = {"default": OpResolverType.AUTO,
                "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                "reference": OpResolverType.BUILTIN_REF}[kernels]
    from edge_runtime.native_log import quiet_native_stderr

    interp = Interpreter(model_content=bytes(model_bytes), num_threads=num_threads,
                         experimental_op_resolver_type=resolver)
    with quiet_native_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        interp.allocate_tensors()
    i_idx = interp.get_input_details()[0]["index"]
    o_idx = interp.get_output_details()[0]["index"]
    out = []
    for w in np.asarray(windows_int8, np.int8):
        if reset:
            interp.reset_all_variables()
        interp.set_tensor(i_idx, w[None])
        interp.invoke()
        out.append(interp.get_tensor(o_idx).reshape(-1).copy())
    return np.stack(out).astype(np.int8) if out else np.zeros((0, 0), np.int8)


@contextlib.contextmanager
def _c_stderr_to_devnull():
    """Silence TFLM's C-level "Failed to allocate" lines while probing arena sizes."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _fits(model_bytes: bytes, arena: int, probe: np.ndarray) -> bool:
    try:
        interp = _tflm_interpreter(model_bytes, arena)
        interp.set_input(probe, 0)
        interp.invoke()
        return True
    except (RuntimeError, ValueError):
        return False


def _recorded_arena(model_bytes: bytes, probe: np.ndarray) -> int | None:
    """Total arena bytes reported by TFLM's RecordingMicroAllocator (printed to C stderr)."""
    interp = _tflm_interpreter(model_bytes, len(model_bytes) * 10 + 65536)
    interp.set_input(probe, 0)
    interp.invoke()
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            interp.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    m = re.search(r"Arena allocation total (\d+) bytes", text)
    return int(m.group(1)) if m else None


def min_arena_size(model_bytes: bytes, lo: int = 1024, hi: int | None = None,
                   granularity: int = 64) -> dict:
    """Smallest TFLM tensor arena (bytes, within ``granularity``) that allocates and invokes.

    Found by bisection over real interpreter constructions; also returns the allocator's own
    recorded total for comparison.
    """
    from tflite_micro.python.tflite_micro import runtime

    probe_interp = runtime.Interpreter.from_bytes(bytes(model_bytes))
    det = probe_interp.get_input_details(0)
    probe = np.zeros(det["shape"], det["dtype"])
    hi = hi or len(model_bytes) * 10 + 65536
    if not _fits(model_bytes, hi, probe):
        raise RuntimeError(f"model does not run in TFLM even with a {hi}-byte arena")
    with _c_stderr_to_devnull():
        while hi - lo > granularity:
            mid = (lo + hi) // 2
            if _fits(model_bytes, mid, probe):
                hi = mid
            else:
                lo = mid
    return {"arena_bytes": int(hi), "recorded_arena_bytes": _recorded_arena(model_bytes, probe)}


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
