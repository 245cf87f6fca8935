"""Read the computation graph of a .tflite file (numpy only): tensors, constant data, operators.

Only what the ahead-of-time C export needs (:mod:`firmware_bridge.nn_export`): the first subgraph,
tensor shapes / types / quantisation / constant buffers, and each operator's builtin code, inputs,
outputs and the builtin-options fields our kernels use. The flatbuffer access is
:class:`edge_runtime.model_metadata._FlatBuffer` (bounds-checked), the field numbers are those of the
TFLite schema (``tensorflow/compiler/mlir/lite/schema/schema.fbs``).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from edge_runtime.model_metadata import ModelFileError, _FlatBuffer, check_tflite

# Model / SubGraph / Tensor / QuantizationParameters / Operator / OperatorCode / Buffer fields.
_M_OPCODES, _M_SUBGRAPHS, _M_BUFFERS = 1, 2, 4
_SG_TENSORS, _SG_INPUTS, _SG_OUTPUTS, _SG_OPERATORS = 0, 1, 2, 3
_T_SHAPE, _T_TYPE, _T_BUFFER, _T_NAME, _T_QUANT, _T_IS_VARIABLE = 0, 1, 2, 3, 4, 5
_Q_SCALE, _Q_ZERO_POINT, _Q_DIM = 2, 3, 6
_OP_OPCODE, _OP_INPUTS, _OP_OUTPUTS, _OP_OPTIONS = 0, 1, 2, 4
_OC_DEPRECATED_CODE, _OC_CODE = 0, 3
_B_DATA, _B_OFFSET, _B_SIZE = 0, 1, 2

# TensorType enum -> numpy dtype (None: a type we never read as data).
TENSOR_TYPES = {0: ("float32", np.float32), 1: ("float16", np.float16), 2: ("int32", np.int32),
                3: ("uint8", np.uint8), 4: ("int64", np.int64), 5: ("string", None), 6: ("bool", np.bool_),
                7: ("int16", np.int16), 8: ("complex64", None), 9: ("int8", np.int8),
                10: ("float64", np.float64), 17: ("int4", None)}

# BuiltinOperator codes (schema.fbs) we know by name; any other code is reported as BUILTIN_<n>.
BUILTIN_NAMES = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
    6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC", 16: "LSTM", 17: "MAX_POOL_2D", 18: "MUL",
    19: "RELU", 21: "RELU6", 22: "RESHAPE", 25: "SOFTMAX", 28: "TANH", 32: "CUSTOM", 34: "PAD",
    39: "TRANSPOSE", 40: "MEAN", 41: "SUB", 42: "DIV", 43: "SQUEEZE", 44: "UNIDIRECTIONAL_SEQUENCE_LSTM",
    45: "STRIDED_SLICE", 47: "EXP", 49: "SPLIT", 50: "LOG_SOFTMAX", 51: "DELEGATE", 53: "CAST",
    70: "EXPAND_DIMS", 74: "SUM", 75: "SQRT", 76: "RSQRT", 83: "PACK", 88: "UNPACK", 97: "QUANTIZE", 114: "QUANTIZE",
}

# Builtin options: field name -> (field id, struct format, default), per operator.
_OPTIONS = {
    "CONV_2D": {"padding": (0, "b", 0), "stride_w": (1, "i", 0), "stride_h": (2, "i", 0),
                "activation": (3, "b", 0), "dilation_w": (4, "i", 1), "dilation_h": (5, "i", 1)},
    "DEPTHWISE_CONV_2D": {"padding": (0, "b", 0), "stride_w": (1, "i", 0), "stride_h": (2, "i", 0),
                          "depth_multiplier": (3, "i", 0), "activation": (4, "b", 0),
                          "dilation_w": (5, "i", 1), "dilation_h": (6, "i", 1)},
    "MAX_POOL_2D": {"padding": (0, "b", 0), "stride_w": (1, "i", 0), "stride_h": (2, "i", 0),
                    "filter_w": (3, "i", 0), "filter_h": (4, "i", 0), "activation": (5, "b", 0)},
    "AVERAGE_POOL_2D": {"padding": (0, "b", 0), "stride_w": (1, "i", 0), "stride_h": (2, "i", 0),
                        "filter_w": (3, "i", 0), "filter_h": (4, "i", 0), "activation": (5, "b", 0)},
    "FULLY_CONNECTED": {"activation": (0, "b", 0), "weights_format": (1, "b", 0), "keep_num_dims": (2, "b", 0)},
    "STRIDED_SLICE": {"begin_mask": (0, "i", 0), "end_mask": (1, "i", 0), "ellipsis_mask": (2, "i", 0),
                      "new_axis_mask": (3, "i", 0), "shrink_axis_mask": (4, "i", 0), "offset": (5, "b", 0)},
    "UNIDIRECTIONAL_SEQUENCE_LSTM": {"activation": (0, "b", 0), "cell_clip": (1, "f", 0.0),
                                     "proj_clip": (2, "f", 0.0), "time_major": (3, "b", 0),
                                     "asymmetric_quantize_inputs": (4, "b", 0),
                                     "diagonal_recurrent_tensors": (5, "b", 0)},
    "ADD": {"activation": (0, "b", 0)},
    "SUB": {"activation": (0, "b", 0)},
    "MUL": {"activation": (0, "b", 0)},
    "MEAN": {"keep_dims": (0, "b", 0)},
    "SOFTMAX": {"beta": (0, "f", 0.0)},
    "CONCATENATION": {"axis": (0, "i", 0), "activation": (1, "b", 0)},
}


@dataclass
class Tensor:
    """One tensor of the subgraph. ``data`` is set for constant tensors (a buffer with bytes)."""

    index: int
    name: str
    shape: tuple[int, ...]
    type: str
    scales: tuple[float, ...] = ()  # float32 values as stored, widened to Python floats
    zero_points: tuple[int, ...] = ()
    quantized_dimension: int = 0
    data: np.ndarray | None = None
    is_variable: bool = False

    @property
    def scale(self) -> float:
        return self.scales[0] if self.scales else 0.0

    @property
    def zero_point(self) -> int:
        return self.zero_points[0] if self.zero_points else 0

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def describe(self) -> str:
        return f"tensor {self.index} {self.name!r} {self.type}{list(self.shape)}"


@dataclass
class Operator:
    """One operator: builtin name, tensor indices (-1 = absent optional input), options dict."""

    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict = field(default_factory=dict)


@dataclass
class Graph:
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def _int_vector(fb: _FlatBuffer, table: int, fid: int, fmt: str = "i") -> tuple[int, ...]:
    v = fb.vector(table, fid)
    if v is None:
        return ()
    start, n = v
    size = struct.calcsize(fmt)
    fb._check(start, n * size, "vector")
    return tuple(struct.unpack_from(f"<{n}{fmt}", fb.data, start))


def _string(fb: _FlatBuffer, table: int, fid: int) -> str:
    b = fb.bytes_field(table, fid)
    return b.decode("utf-8", "replace") if b is not None else ""


def read_graph(data: bytes, name: str = "<model>") -> Graph:
    """Parse the first subgraph of a .tflite flatbuffer (raises ModelFileError on a corrupt file)."""
    check_tflite(data, name)
    fb = _FlatBuffer(data, name)
    root = fb.root()
    subgraphs = fb.table_vector(root, _M_SUBGRAPHS)
    if not subgraphs:
        raise ModelFileError(f"{name}: the model has no subgraph")
    buffers = fb.table_vector(root, _M_BUFFERS)
    codes = []
    for oc in fb.table_vector(root, _M_OPCODES):
        code = max(fb.scalar(oc, _OC_CODE, "i", 0), fb.scalar(oc, _OC_DEPRECATED_CODE, "b", 0))
        codes.append(code)
    sg = subgraphs[0]
    tensors: list[Tensor] = []
    for i, t in enumerate(fb.table_vector(sg, _SG_TENSORS)):
        ttype, np_type = TENSOR_TYPES.get(fb.scalar(t, _T_TYPE, "b", 0), (f"type{fb.scalar(t, _T_TYPE, 'b', 0)}", None))
        shape = _int_vector(fb, t, _T_SHAPE)
        scales: tuple[float, ...] = ()
        zps: tuple[int, ...] = ()
        qdim = 0
        qpos = fb.field_pos(t, _T_QUANT)
        if qpos is not None:
            q = fb.deref(qpos)
            scales = tuple(float(s) for s in _int_vector(fb, q, _Q_SCALE, "f"))
            zps = _int_vector(fb, q, _Q_ZERO_POINT, "q")
            qdim = fb.scalar(q, _Q_DIM, "i", 0)
        arr = None
        bidx = fb.scalar(t, _T_BUFFER, "I", 0)
        if 0 < bidx < len(buffers):
            buf = buffers[bidx]
            off, size = fb.scalar(buf, _B_OFFSET, "Q"), fb.scalar(buf, _B_SIZE, "Q")
            raw = data[off:off + size] if off > 1 else fb.bytes_field(buf, _B_DATA)
            if raw and np_type is not None:
                arr = np.frombuffer(raw, dtype=np.dtype(np_type).newbyteorder("<")).astype(np_type)
                if arr.size == int(np.prod(shape)) and shape:
                    arr = arr.reshape(shape)
        tensors.append(Tensor(i, _string(fb, t, _T_NAME), shape, ttype, scales, zps, qdim, arr,
                              bool(fb.scalar(t, _T_IS_VARIABLE, "b", 0))))
    ops: list[Operator] = []
    for j, op in enumerate(fb.table_vector(sg, _SG_OPERATORS)):
        ci = fb.scalar(op, _OP_OPCODE, "I", 0)
        code = codes[ci] if ci < len(codes) else -1
        oname = BUILTIN_NAMES.get(code, f"BUILTIN_{code}")
        opts: dict = {}
        spec = _OPTIONS.get(oname)
        opos = fb.field_pos(op, _OP_OPTIONS)
        if spec is not None:
            otab = fb.deref(opos) if opos is not None else None
            for k, (fid, fmt, default) in spec.items():
                opts[k] = fb.scalar(otab, fid, fmt, default) if otab is not None else default
        ops.append(Operator(j, oname, _int_vector(fb, op, _OP_INPUTS), _int_vector(fb, op, _OP_OUTPUTS), opts))
    return Graph(tensors, ops, _int_vector(fb, sg, _SG_INPUTS), _int_vector(fb, sg, _SG_OUTPUTS))
