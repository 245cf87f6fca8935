"""Full-integer int8 conversion of a batch-1 tf-keras model, and a strict graph checker.

The checker is the point: a model that silently contains a WHILE loop (Keras 3 LSTM), a Flex /
custom op, or float32 tensors will not run on the micro-controller (or runs in float on the Pi), so
:func:`check_int8_graph` raises :class:`GraphCheckError` naming every offending op / tensor.
The fused LSTM's internal int16 / int32 tensors (cell state, gate intermediates, biases) are fine.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

FORBIDDEN_OPS = ("WHILE", "CUSTOM", "CALL_ONCE", "IF", "CALL", "FLEX")


class GraphCheckError(ValueError):
    """The converted graph is not a pure int8 TFLite-builtin graph; ``problems`` lists why."""

    def __init__(self, problems: list[str], ops: list[str]):
        self.problems = problems
        self.ops = ops
        super().__init__("int8 graph check failed:\n  - " + "\n  - ".join(problems)
                         + f"\n  ops: {', '.join(ops)}")


@dataclass
class GraphReport:
    """What :func:`check_int8_graph` found in a .tflite flatbuffer."""

    ops: list[str]
    op_counts: dict[str, int]
    tensor_types: dict[str, int]
    input_dtype: str
    output_dtype: str
    input_shape: list[int]
    output_shape: list[int]
    n_bytes: int
    problems: list[str] = field(default_factory=list)

    @property
    def fused_lstm(self) -> bool:
        return "UNIDIRECTIONAL_SEQUENCE_LSTM" in self.op_counts

    def to_dict(self) -> dict:
        return {"ops": self.ops, "op_counts": self.op_counts, "tensor_types": self.tensor_types,
                "input_dtype": self.input_dtype, "output_dtype": self.output_dtype,
                "input_shape": self.input_shape, "output_shape": self.output_shape,
                "n_bytes": self.n_bytes, "fused_lstm": self.fused_lstm}


def tflite_schema():
    """The generated TFLite flatbuffer schema module: LiteRT's copy (imports in ~0.2 s), else
    TensorFlow's (~10 s: it imports all of TensorFlow)."""
    try:
        from ai_edge_litert import schema_py_generated as S
    except ImportError:
        from tensorflow.lite.python import schema_py_generated as S
    return S


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def inspect_graph(model_bytes: bytes) -> GraphReport:
    """Parse a .tflite flatbuffer: op list, tensor dtypes, I/O types (no interpreter needed)."""
    S = tflite_schema()

    m = S.Model.GetRootAsModel(model_bytes, 0)
    op_names = _enum_names(S.BuiltinOperator)
    type_names = _enum_names(S.TensorType)
    codes = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = op_names.get(code, f"OP_{code}")
        if name == "CUSTOM":
            cc = oc.CustomCode()
            cc = cc.decode() if cc else "?"
            name = f"FLEX:{cc}" if cc.startswith("Flex") else f"CUSTOM:{cc}"
        codes.append(name)
    ops: list[str] = []
    counts: dict[str, int] = {}
    ttypes: dict[str, int] = {}
    problems: list[str] = []
    sg0 = m.Subgraphs(0)
    for s in range(m.SubgraphsLength()):
        sg = m.Subgraphs(s)
        for i in range(sg.OperatorsLength()):
            name = codes[sg.Operators(i).OpcodeIndex()]
            ops.append(name)
            counts[name] = counts.get(name, 0) + 1
        # The fused int8 LSTM lists 'intermediate' tensors that only carry quantisation
        # parameters for its gate matmuls; they are typed FLOAT32 but never hold data.
        intermediates = set()
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            if op.IntermediatesLength():
                intermediates.update(int(v) for v in op.IntermediatesAsNumpy())
        for t in range(sg.TensorsLength()):
            if t in intermediates:
                continue
            tensor = sg.Tensors(t)
            tn = type_names.get(tensor.Type(), str(tensor.Type()))
            ttypes[tn] = ttypes.get(tn, 0) + 1
            if tn in ("FLOAT32", "FLOAT16", "FLOAT64"):
                problems.append(f"tensor {tensor.Name().decode()!r} (subgraph {s}) is {tn}")
    if m.SubgraphsLength() > 1:
        problems.append(f"{m.SubgraphsLength()} subgraphs (control flow); expected 1")
    for name in counts:
        if name.split(":")[0] in FORBIDDEN_OPS:
            problems.append(f"forbidden op {name} x{counts[name]} (not runnable on TFLite Micro in int8)")

    def _io(idx):
        tensor = sg0.Tensors(idx)
        return type_names.get(tensor.Type(), "?"), [int(v) for v in tensor.ShapeAsNumpy()]

    in_t, in_s = _io(sg0.Inputs(0))
    out_t, out_s = _io(sg0.Outputs(0))
    return GraphReport(ops=ops, op_counts=counts, tensor_types=ttypes, input_dtype=in_t,
                       output_dtype=out_t, input_shape=in_s, output_shape=out_s,
                       n_bytes=len(model_bytes), problems=problems)


def check_int8_graph(model_bytes: bytes, require_fused_lstm: bool = False) -> GraphReport:
    """Raise :class:`GraphCheckError` unless the graph is pure int8 builtins; return its report."""
    rep = inspect_graph(model_bytes)
    problems = list(rep.problems)
    if rep.input_dtype != "INT8":
        problems.append(f"model input is {rep.input_dtype}, expected INT8")
    if rep.output_dtype != "INT8":
        problems.append(f"model output is {rep.output_dtype}, expected INT8")
    if require_fused_lstm and not rep.fused_lstm:
        problems.append("no fused UNIDIRECTIONAL_SEQUENCE_LSTM op (was the model built with a "
                        "batch-1 tf-keras Input?)")
    if problems:
        raise GraphCheckError(problems, rep.ops)
    return rep


def calibration_windows(windows: np.ndarray, n: int = 300, seed: int = 0) -> np.ndarray:
    """The ``n`` calibration windows (float32) drawn from ``windows``: a seeded random subset.

    Calibration sets the int8 input range and every activation range, so it must cover loud,
    quiet and padded windows; we take a seeded random subset of the training windows.
    """
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(windows))[: min(n, len(windows))]
    return np.asarray(windows, np.float32)[idx]


def representative_dataset(windows: np.ndarray, n: int = 300, seed: int = 0) -> Callable[[], Iterable]:
    """Calibration generator over :func:`calibration_windows` (batch 1), as the converter wants it."""
    return _batch1(calibration_windows(windows, n, seed))


def _batch1(sel: np.ndarray) -> Callable[[], Iterable]:
    """A converter's ``representative_dataset``: each of the windows ``sel`` in order, batch 1."""

    def gen():
        for w in sel:
            yield [w[None]]

    return gen


@dataclass(frozen=True)
class InputRange:
    """How the int8 *input* range is taken from the calibration windows' feature values.

    ``percentile == 0``: their min/max, the converter's own rule (every model before this option).
    ``percentile == p > 0``: the ``[p, 100 - p]`` percentiles of all their values; the calibration
    windows are clipped to that range before the converter sees them, so the converter sets the
    input scale/zero point from it (and the activation ranges from what the int8 input can carry).
    The log-mel's min/max is set by rare outliers (onsets after silence, the log floor): a
    percentile range gives a finer input step for the bulk of the values, and the runtime's
    :class:`edge_runtime.interpreter.FeatureQuantizer` (and the C firmware) saturate the rest to
    -128/127, so the device side is unchanged. :mod:`model_build.qat` fake-quantises the input with
    the same :meth:`bounds` (one owner of the range).
    """

    percentile: float = 0.0

    def __post_init__(self):
        p = self.percentile
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not np.isfinite(p) or not 0 <= p < 50:
            raise ValueError(f"input range percentile must be a number in [0, 50), got {p!r}")

    def bounds(self, calib: np.ndarray) -> tuple[float, float]:
        """``(lo, hi)`` of the int8 input for calibration windows ``calib`` (before TFLite's nudge of
        the range to hold 0)."""
        v = np.asarray(calib, np.float64).ravel()
        if not v.size:
            raise ValueError("no calibration values to take an input range from")
        if not self.percentile:
            return float(v.min()), float(v.max())
        lo, hi = np.percentile(v, [self.percentile, 100.0 - self.percentile])
        return float(lo), float(hi)

    def clip(self, calib: np.ndarray) -> np.ndarray:
        """``calib`` (float32) clipped to :meth:`bounds` (unchanged, not copied, for min/max)."""
        calib = np.asarray(calib, np.float32)
        if not self.percentile:
            return calib
        lo, hi = self.bounds(calib)
        return np.clip(calib, np.float32(lo), np.float32(hi))

    def record(self, calib: np.ndarray) -> dict:
        """The model metadata's ``input_range``: how its input range was set, and the range itself."""
        lo, hi = self.bounds(calib)
        how = ("min/max of the calibration windows' values" if not self.percentile else
               f"percentiles {self.percentile:g}/{100 - self.percentile:g} of the calibration windows' values "
               "(the windows clipped to them before conversion; the runtime saturates the rest)")
        return {"method": how, "percentile": float(self.percentile), "lo": round(lo, 5), "hi": round(hi, 5),
                "n_windows": int(len(calib))}

    @classmethod
    def from_metadata(cls, md: dict) -> "InputRange":
        """The rule a model's metadata records (``input_range``); min/max for a model without one."""
        return cls(float((md.get("input_range") or {}).get("percentile", 0.0)))


def convert_int8(batch1_model, calib_windows: np.ndarray, n_calib: int = 300,
                 check: bool = True, require_fused_lstm: bool | None = None,
                 input_range: InputRange | None = None) -> tuple[bytes, GraphReport | None]:
    """Convert a batch-1 tf-keras model to full-integer int8 (int8 in, int8 out) and check it.

    ``calib_windows``: (N, T, F) raw float features (the model's input units); ``n_calib`` of them
    calibrate (:func:`calibration_windows`). ``input_range``: how the input range is taken from those
    (:class:`InputRange`; default min/max, the converter's own). Returns the flatbuffer bytes and the
    :class:`GraphReport` (``None`` if ``check=False``).
    """
    import tensorflow as tf

    calib = (input_range or InputRange()).clip(calibration_windows(calib_windows, n_calib))
    conv = tf.lite.TFLiteConverter.from_keras_model(batch1_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _batch1(calib)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    from edge_runtime.native_log import quiet_native_stderr

    # "Statistics for quantized inputs were expected" is harmless here; the C++ converter's
    # "fully_quantize: 0, inference_type: 6 ..." line is noise (a failure raises ConverterError)
    with warnings.catch_warnings(), quiet_native_stderr():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        model_bytes = conv.convert()
    if not check:
        return model_bytes, None
    if require_fused_lstm is None:
        require_fused_lstm = any("lstm" in layer.name for layer in batch1_model.layers)
    return model_bytes, check_int8_graph(model_bytes, require_fused_lstm=require_fused_lstm)


def io_quant(model_bytes: bytes) -> dict:
    """Input/output int8 scale and zero point, read from the flatbuffer."""
    S = tflite_schema()

    m = S.Model.GetRootAsModel(model_bytes, 0)
    sg = m.Subgraphs(0)

    def q(idx):
        qp = sg.Tensors(idx).Quantization()
        return float(qp.ScaleAsNumpy()[0]), int(qp.ZeroPointAsNumpy()[0])

    in_s, in_z = q(sg.Inputs(0))
    out_s, out_z = q(sg.Outputs(0))
    return {"input_scale": in_s, "input_zero_point": in_z,
            "output_scale": out_s, "output_zero_point": out_z}
