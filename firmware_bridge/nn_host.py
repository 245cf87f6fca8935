"""The ahead-of-time C model on the host: compile ``ser_nn.c`` + the generated ``<prefix>_net.c``
of one .tflite with the system gcc into a shared library (cached by model hash, sources and flags)
and run it through ctypes. Needs numpy and a C compiler, no TFLite package.

    m = CModel.from_file("edge_runtime/models/default.tflite")
    scores = m.invoke(window_int8)          # int8 [n_labels], == tflite-micro, bit for bit
    scores = m.invoke_many(windows_int8)    # [n, n_labels]

It is also the ``c`` backend of ``edge_runtime.interpreter`` (:func:`make_interpreter_backend`,
entry point ``ser_edge.backends``): ``ser-edge run --backend c`` needs no TFLite package at all.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .cbuild import WARN_FLAGS, CBuildError, _compiler_id, cache_dir
from .export import FIRMWARE_DIR
from .nn_export import Net, lower, render
from .tflite_graph import read_graph

NN_SOURCES = ("ser_nn.c", "ser_nn.h")
HOST_FLAGS = ("-O3", *WARN_FLAGS, "-fPIC", "-shared")  # -O3: the portable loops vectorise (1.6x vs -O2)


def build_model_library(data: bytes, name: str = "<model>", cc: str = "gcc",
                        extra_flags: tuple[str, ...] = ()) -> tuple[Path, Net]:
    """Compile the model's C (cached); returns the shared library path and the lowered net."""
    net = lower(read_graph(data, name), name)
    htxt, ctxt = render(net, "ser")
    flags = [*HOST_FLAGS, *extra_flags]
    h = hashlib.sha256()
    for nm in NN_SOURCES:
        h.update((FIRMWARE_DIR / nm).read_bytes())
    h.update(htxt.encode() + ctxt.encode() + "\0".join(flags).encode() + _compiler_id(cc).encode())
    out = cache_dir() / "nnbuild" / h.hexdigest()[:16]
    lib = out / "libsernet.so"
    if lib.exists():
        return lib, net
    out.mkdir(parents=True, exist_ok=True)
    (out / "ser_net.h").write_text(htxt)
    (out / "ser_net.c").write_text(ctxt)
    tmp = out / f".libsernet.{os.getpid()}.so"
    cmd = [cc, *flags, "-I", str(FIRMWARE_DIR), "-I", str(out), "-o", str(tmp),
           str(FIRMWARE_DIR / "ser_nn.c"), str(out / "ser_net.c")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise CBuildError(f"compiling the exported model failed:\n{' '.join(cmd)}\n{r.stderr}")
    os.replace(tmp, lib)
    return lib, net


class CModel:
    """One .tflite compiled to C and loaded with ctypes (one static arena: not thread-safe)."""

    def __init__(self, data: bytes, name: str = "<model>", cc: str = "gcc") -> None:
        self.path, self.net = build_model_library(bytes(data), name, cc)
        # RTLD_LOCAL + a private copy: two models in one process must not share the static arena.
        tmpdir = Path(tempfile.mkdtemp(prefix="ser_net_"))
        private = tmpdir / "libsernet.so"
        private.write_bytes(self.path.read_bytes())
        self.lib = ctypes.CDLL(str(private), mode=getattr(os, "RTLD_LOCAL", 0))
        self.lib.ser_model_invoke.restype = None
        self.lib.ser_model_invoke.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.input_shape = tuple(self.net.input.shape)
        self.input_size = self.net.input.size
        self.output_size = self.net.output.size
        self.arena_bytes = self.net.arena_bytes

    @classmethod
    def from_file(cls, path: str | Path, cc: str = "gcc") -> "CModel":
        return cls(Path(path).read_bytes(), str(path), cc)

    def invoke(self, window: np.ndarray) -> np.ndarray:
        """int8 scores of one int8 window (any shape with the input's element count)."""
        x = np.ascontiguousarray(window, dtype=np.int8).reshape(-1)
        if x.size != self.input_size:
            raise ValueError(f"window has {x.size} values, the model input {list(self.input_shape)} needs {self.input_size}")
        out = np.empty(self.output_size, np.int8)
        self.lib.ser_model_invoke(x.ctypes.data, out.ctypes.data)
        return out

    def invoke_many(self, windows: np.ndarray) -> np.ndarray:
        w = np.asarray(windows, np.int8)
        return np.stack([self.invoke(x) for x in w]) if len(w) else np.zeros((0, self.output_size), np.int8)


class _CInterpreterBackend:
    """The ``edge_runtime.interpreter`` backend protocol (``.name``, ``.input``, ``.output``,
    ``.n_inputs``, ``.n_outputs``, ``.run(x)``) over :class:`CModel`."""

    def __init__(self, model_bytes: bytes) -> None:
        from edge_runtime.interpreter import TensorInfo

        self.name = "c"
        self._m = CModel(model_bytes, "<model>")
        t_in, t_out = self._m.net.input, self._m.net.output
        self.input = TensorInfo(tuple(t_in.shape), np.dtype(np.int8), t_in.scale, t_in.zero_point)
        self.output = TensorInfo(tuple(t_out.shape), np.dtype(np.int8), t_out.scale, t_out.zero_point)
        self.n_inputs = self.n_outputs = 1

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._m.invoke(x).reshape(self.output.shape)  # state starts from zero on every call


def make_interpreter_backend(model_bytes: bytes, num_threads: int | None = None) -> _CInterpreterBackend:
    """Factory for ``edge_runtime.interpreter.make_backend(..., backend="c")`` (``num_threads`` is
    ignored: one core)."""
    return _CInterpreterBackend(model_bytes)
