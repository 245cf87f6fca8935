"""The ``ser_edge`` model metadata: the one schema, its reader and the dict writer (numpy-free).

This module owns the contract: the keys (:data:`REQUIRED_KEYS`, :data:`WRITTEN_KEYS`), the
validation (:meth:`ModelMetadata.from_dict`), the dict a build writes (:func:`make_metadata`) and
the reader. ``model_build/embed_metadata.py`` only packs that dict into the flatbuffer (it needs
TensorFlow's schema) after validating it here.

Format: a ``Model.metadata`` entry named ``"ser_edge"`` whose buffer holds UTF-8 JSON::

    {"format": "ser-edge-model/1", "labels": [...], "frontend": FrontendConfig.to_dict(),
     "frontend_hash": "...", "window_frames": int, "hop_frames": int, "n_features": int,
     "input_scale": float, "input_zero_point": int, "output_scale": float, "output_zero_point": int,
     "model_name": str, "arch": str, "params": int, "trained_on": str, "created": str,
     "frontend_tables_checksum": "8 hex digits", "feature_norm": {...}, ...}

The device must not need TensorFlow or the ``flatbuffers`` package to read it, so this module has a
minimal flatbuffer reader: root table offset, vtable lookup, strings, vectors, and just the
``Model`` / ``Metadata`` / ``Buffer`` fields of the TFLite schema it needs. Every read is bounds
checked, so a corrupt or foreign file gives :class:`ModelFileError` naming the file, never an
``IndexError`` or a garbage result.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METADATA_NAME = "ser_edge"
FORMAT = "ser-edge-model/1"
SUPPORTED_FORMATS = (FORMAT,)
REQUIRED_KEYS = ("format", "labels", "frontend", "frontend_hash", "window_frames", "hop_frames",
                 "n_features", "input_scale", "input_zero_point", "output_scale", "output_zero_point")
_KNOWN_KEYS = REQUIRED_KEYS + ("model_name", "arch", "params", "trained_on", "created")
#: what :func:`make_metadata` always writes (a build); readers require only REQUIRED_KEYS
WRITTEN_KEYS = _KNOWN_KEYS + ("frontend_tables_checksum", "feature_norm")

# TFLite schema field ids (tensorflow/compiler/mlir/lite/schema/schema.fbs).
_MODEL_VERSION, _MODEL_DESCRIPTION, _MODEL_BUFFERS, _MODEL_METADATA = 0, 3, 4, 6
_METADATA_NAME, _METADATA_BUFFER = 0, 1
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2
_FILE_IDENTIFIER = b"TFL3"


class ModelFileError(ValueError):
    """The model file is unusable (not a TFLite flatbuffer, no/invalid metadata, wrong shape...)."""


class _FlatBuffer:
    """Bounds-checked access to the parts of a flatbuffer we need."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.name = name

    def _fail(self, what: str) -> ModelFileError:
        return ModelFileError(f"{self.name}: corrupt TFLite flatbuffer ({what})")

    def _check(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or pos + size > len(self.data):
            raise self._fail(f"{what} at byte {pos} is outside the {len(self.data)}-byte file")

    def u16(self, pos: int) -> int:
        self._check(pos, 2, "uint16")
        return struct.unpack_from("<H", self.data, pos)[0]

    def u32(self, pos: int) -> int:
        self._check(pos, 4, "uint32")
        return struct.unpack_from("<I", self.data, pos)[0]

    def i32(self, pos: int) -> int:
        self._check(pos, 4, "int32")
        return struct.unpack_from("<i", self.data, pos)[0]

    def u64(self, pos: int) -> int:
        self._check(pos, 8, "uint64")
        return struct.unpack_from("<Q", self.data, pos)[0]

    def root(self) -> int:
        return self.u32(0)

    def field_pos(self, table: int, field_id: int) -> int | None:
        """Absolute position of a table field, or None when the field is absent (default value)."""
        vtable = table - self.i32(table)
        vt_size = self.u16(vtable)
        if vt_size < 4 or vt_size % 2:
            raise self._fail(f"vtable size {vt_size} at byte {vtable}")
        slot = 4 + 2 * field_id
        if slot >= vt_size:
            return None
        off = self.u16(vtable + slot)
        return table + off if off else None

    def deref(self, pos: int) -> int:
        """Follow a uoffset_t (strings, vectors, sub-tables are stored by forward offset)."""
        target = pos + self.u32(pos)
        self._check(target, 4, "offset target")
        return target

    def scalar(self, table: int, field_id: int, fmt: str, default: int = 0) -> int:
        pos = self.field_pos(table, field_id)
        if pos is None:
            return default
        self._check(pos, struct.calcsize(fmt), "scalar field")
        return struct.unpack_from("<" + fmt, self.data, pos)[0]

    def vector(self, table: int, field_id: int) -> tuple[int, int] | None:
        """(start of elements, length) of a vector field, or None."""
        pos = self.field_pos(table, field_id)
        if pos is None:
            return None
        vec = self.deref(pos)
        return vec + 4, self.u32(vec)

    def bytes_field(self, table: int, field_id: int) -> bytes | None:
        v = self.vector(table, field_id)
        if v is None:
            return None
        start, n = v
        self._check(start, n, "byte vector")
        return self.data[start:start + n]

    def table_vector(self, table: int, field_id: int) -> list[int]:
        v = self.vector(table, field_id)
        if v is None:
            return []
        start, n = v
        self._check(start, 4 * n, "table vector")
        return [self.deref(start + 4 * i) for i in range(n)]


def _load_bytes(model: bytes | bytearray | memoryview | str | os.PathLike) -> tuple[bytes, str]:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), "<model bytes>"
    p = Path(model)
    try:
        return p.read_bytes(), str(p)
    except FileNotFoundError:
        raise ModelFileError(f"{p}: model file not found") from None
    except IsADirectoryError:
        raise ModelFileError(f"{p}: is a directory, expected a .tflite file") from None


def check_tflite(data: bytes, name: str = "<model bytes>") -> None:
    """Raise :class:`ModelFileError` unless ``data`` looks like a TFLite flatbuffer."""
    if len(data) < 16:
        raise ModelFileError(f"{name}: not a TFLite model ({len(data)} bytes is too small)")
    ident = data[4:8]
    if ident != _FILE_IDENTIFIER:
        raise ModelFileError(
            f"{name}: not a TFLite model (file identifier {ident!r} at bytes 4..8, expected b'TFL3')"
        )
    root = struct.unpack_from("<I", data, 0)[0]
    if root < 8 or root + 4 > len(data):
        raise ModelFileError(f"{name}: corrupt TFLite flatbuffer (root table offset {root} "
                             f"outside the {len(data)}-byte file)")


def read_metadata_entries(model: bytes | str | os.PathLike) -> dict[str, bytes]:
    """All ``Model.metadata`` entries of a .tflite as ``{name: buffer bytes}``.

    Handles both buffer layouts: data inline in the flatbuffer (``Buffer.data``) and, for models
    larger than 2 GB, data stored after the flatbuffer (``Buffer.offset`` / ``Buffer.size``,
    offset counted from the start of the file).
    """
    data, name = _load_bytes(model)
    return _entries(data, name)


def _entries(data: bytes, name: str) -> dict[str, bytes]:
    check_tflite(data, name)
    fb = _FlatBuffer(data, name)
    root = fb.root()
    buffers = fb.table_vector(root, _MODEL_BUFFERS)
    out: dict[str, bytes] = {}
    for entry in fb.table_vector(root, _MODEL_METADATA):
        raw_name = fb.bytes_field(entry, _METADATA_NAME)
        entry_name = raw_name.decode("utf-8", "replace") if raw_name is not None else ""
        idx = fb.scalar(entry, _METADATA_BUFFER, "I")
        if idx >= len(buffers):
            raise ModelFileError(f"{name}: metadata {entry_name!r} points at buffer {idx}, "
                                 f"but the model has {len(buffers)} buffers")
        buf = buffers[idx]
        offset = fb.scalar(buf, _BUFFER_OFFSET, "Q")
        size = fb.scalar(buf, _BUFFER_SIZE, "Q")
        if offset > 1:  # 0 and 1 are "not used" sentinels in the schema
            if offset + size > len(data):
                raise ModelFileError(f"{name}: metadata {entry_name!r} buffer [{offset}, "
                                     f"{offset + size}) is past the end of the {len(data)}-byte file "
                                     "(truncated model?)")
            payload = data[offset:offset + size]
        else:
            payload = fb.bytes_field(buf, _BUFFER_DATA) or b""
        out[entry_name] = payload
    return out


def read_metadata_json(model: bytes | str | os.PathLike, name: str | None = None) -> dict[str, Any]:
    """The decoded ``ser_edge`` JSON dict of a model (path or bytes), unvalidated.

    ``name`` labels error messages when ``model`` is bytes (e.g. the file they came from).
    """
    data, default_name = _load_bytes(model)
    name = name or default_name
    entries = _entries(data, name)
    if METADATA_NAME not in entries:
        have = ", ".join(repr(k) for k in entries) or "none"
        raise ModelFileError(
            f"{name}: no {METADATA_NAME!r} metadata, so not a ser-edge model (entries: {have}); "
            "build one with `ser-edge build`, which records its labels, front end and window"
        )
    try:
        md = json.loads(entries[METADATA_NAME].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{name}: {METADATA_NAME!r} metadata is not valid UTF-8 JSON ({e})") from None
    if not isinstance(md, dict):
        raise ModelFileError(f"{name}: {METADATA_NAME!r} metadata is a JSON {type(md).__name__}, expected an object")
    return md


@dataclass(frozen=True)
class ModelMetadata:
    """Validated ``ser_edge`` metadata of one model.

    ``frontend`` is the front-end parameter dict the model was trained with, ``frontend_hash`` the
    hash recorded at build time; ``extra`` keeps every other key (e.g. ``feature_norm``).
    """

    format: str
    labels: tuple[str, ...]
    frontend: dict
    frontend_hash: str
    window_frames: int
    hop_frames: int
    n_features: int
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    model_name: str = ""
    arch: str = ""
    params: int = 0
    trained_on: str = ""
    created: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, md: dict[str, Any], name: str = "<model>") -> "ModelMetadata":
        """Validate a metadata dict; :class:`ModelFileError` names the file and each problem."""
        fmt = md.get("format")
        if fmt not in SUPPORTED_FORMATS:
            raise ModelFileError(
                f"{name}: unknown model metadata format {fmt!r}; this ser-edge reads "
                f"{', '.join(SUPPORTED_FORMATS)} (upgrade ser-edge or rebuild the model)"
            )
        missing = [k for k in REQUIRED_KEYS if k not in md]
        if missing:
            raise ModelFileError(f"{name}: model metadata is missing {missing}")
        problems = []
        labels = md["labels"]
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            problems.append(f"labels must be a non-empty list of strings, got {labels!r}")
        if not isinstance(md["frontend"], dict):
            problems.append("frontend must be an object of front-end parameters")
        for k in ("window_frames", "hop_frames", "n_features"):
            v = md[k]
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                problems.append(f"{k} must be a positive integer, got {v!r}")
        for k in ("input_scale", "output_scale"):
            v = md[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                problems.append(f"{k} must be a positive number, got {v!r}")
        for k in ("input_zero_point", "output_zero_point"):
            v = md[k]
            if isinstance(v, bool) or not isinstance(v, int) or not -128 <= v <= 127:
                problems.append(f"{k} must be an int8 zero point, got {v!r}")
        if not problems and md["hop_frames"] > md["window_frames"]:
            problems.append(f"hop_frames {md['hop_frames']} > window_frames {md['window_frames']}")
        if problems:
            raise ModelFileError(f"{name}: invalid model metadata: " + "; ".join(problems))
        return cls(
            format=fmt, labels=tuple(labels), frontend=dict(md["frontend"]),
            frontend_hash=str(md["frontend_hash"]), window_frames=int(md["window_frames"]),
            hop_frames=int(md["hop_frames"]), n_features=int(md["n_features"]),
            input_scale=float(md["input_scale"]), input_zero_point=int(md["input_zero_point"]),
            output_scale=float(md["output_scale"]), output_zero_point=int(md["output_zero_point"]),
            model_name=str(md.get("model_name", "")), arch=str(md.get("arch", "")),
            params=int(md.get("params", 0) or 0), trained_on=str(md.get("trained_on", "")),
            created=str(md.get("created", "")),
            extra={k: v for k, v in md.items() if k not in _KNOWN_KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON dict (inverse of :meth:`from_dict`)."""
        d = {k: getattr(self, k) for k in _KNOWN_KEYS}
        d["labels"] = list(self.labels)
        d.update(self.extra)
        return d

    def frontend_config(self):
        """The :class:`~edge_runtime.frontend.FrontendConfig` the model was trained with."""
        from .frontend import FrontendConfig

        return FrontendConfig.from_dict(self.frontend)


def read_metadata(model: bytes | str | os.PathLike, name: str | None = None) -> ModelMetadata:
    """Read and validate the ``ser_edge`` metadata of a .tflite (path or bytes)."""
    data, default_name = _load_bytes(model)
    name = name or default_name
    return ModelMetadata.from_dict(read_metadata_json(data, name), name)


def model_hash(data: bytes) -> str:
    """Identity of a model file: first 16 hex digits of the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


def make_metadata(*, labels, frontend_cfg, window_frames: int, hop_frames: int, quant: dict,
                  model_name: str, arch: str, params: int, trained_on: str, feature_norm: dict,
                  **extra) -> dict:
    """The metadata dict of a newly built model (``quant``: input/output scale and zero point).

    Records the front end's parameters, hash and table checksum
    (:func:`edge_runtime.frontend.tables.tables_checksum`), so the runtime can refuse a model whose
    front end it would compute differently. Validated with :meth:`ModelMetadata.from_dict`.
    """
    import datetime as _dt

    from .frontend.tables import tables_checksum

    md = {
        "format": FORMAT,
        "labels": list(labels),
        "frontend": frontend_cfg.to_dict(),
        "frontend_hash": frontend_cfg.hash,
        "frontend_tables_checksum": tables_checksum(frontend_cfg),
        "window_frames": int(window_frames),
        "hop_frames": int(hop_frames),
        "n_features": int(frontend_cfg.n_features),
        "input_scale": float(quant["input_scale"]),
        "input_zero_point": int(quant["input_zero_point"]),
        "output_scale": float(quant["output_scale"]),
        "output_zero_point": int(quant["output_zero_point"]),
        "model_name": model_name,
        "arch": arch,
        "params": int(params),
        "trained_on": trained_on,
        "created": _dt.date.today().isoformat(),
        "feature_norm": feature_norm,
    }
    md.update(extra)
    ModelMetadata.from_dict(md, f"<metadata of {model_name or 'a new model'}>")
    return md
